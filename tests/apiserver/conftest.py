"""Fixtures shared by the API server tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from apiserver.support import TokenServer
from hatchway.apiserver.server import ApiServer, ApiServerConfig


@pytest.fixture
async def token_server(tmp_path: Path) -> AsyncIterator[TokenServer]:
    """Start an API server in ``tmp_path`` whose static token file holds ``tokens_csv``
    (``token,user,uid[,"groups"]`` lines); every server started is closed at the end."""
    started: list[ApiServer] = []

    async def start(tokens_csv: str) -> ApiServer:
        tokens = tmp_path / "tokens.csv"
        tokens.write_text(tokens_csv)
        srv = ApiServer(ApiServerConfig(data_dir=tmp_path / "data", port=0, token_file=tokens))
        await srv.start()
        started.append(srv)
        return srv

    yield start
    for srv in started:
        await srv.close()
