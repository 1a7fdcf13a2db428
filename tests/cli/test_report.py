"""The server named in a refused connection's message: host and port, no userinfo."""

from __future__ import annotations

import pytest

from hatchway.cli import errors


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("https://127.0.0.1:6443", "127.0.0.1:6443"),
        ("https://admin:hunter2@h.example:6443/prefix", "h.example:6443"),
        ("https://[::1]:443", "[::1]:443"),
        ("https://h", "h"),
        ("not a url", ""),
    ],
)
def test_set_server_names_host_and_port_only(url: str, shown: str) -> None:
    errors.set_server(url)
    try:
        text = errors.describe(ConnectionRefusedError())
    finally:
        errors.set_server("")
    assert "hunter2" not in text and "admin" not in text
    assert text.startswith(f"The connection to the server {shown + ' ' if shown else ''}was")
