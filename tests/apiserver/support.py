"""Helpers shared by the API server tests."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from hatchway.apiserver.server import ApiServer

# The ``token_server`` fixture (conftest.py): start a server with these static tokens.
TokenServer = Callable[[str], Awaitable[ApiServer]]
