"""``HATCHWAY_SERVER_TIMING``: one JSON line per request, with its phases, only when set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hatchway.transport import http, phases


async def _app(request: http.Request) -> http.Response:
    phases.of(request.context).mark("handler")
    return http.Response(200, [], b"ok")


async def _serve_two(server: http.HttpServer) -> None:
    await server.start("127.0.0.1", 0)
    try:
        async with http.HttpClient() as client:  # kept alive: the second reuses it
            for path in ("/one", "/two"):
                answer = await client.request("GET", f"http://127.0.0.1:{server.port}{path}")
                assert answer.status == 200 and answer.body == b"ok"
    finally:
        await server.close()


async def test_each_request_appends_its_phases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "timing.jsonl"
    monkeypatch.setenv(phases.ENV, str(out))
    await _serve_two(http.HttpServer(_app, name="test"))
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["path"] for line in lines] == ["/one", "/two"]
    assert [line["first"] for line in lines] == [True, False]
    for line in lines:
        assert line["server"] == "test"
        assert list(line["wall_us"]) == ["head", "authn", "body", "handler", "app", "respond"]
        assert all(v >= 0 for v in [*line["wall_us"].values(), *line["cpu_us"].values()])


async def test_nothing_is_timed_unless_asked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(phases.ENV, raising=False)
    server = http.HttpServer(_app, name="test")
    assert server.timing == ""
    monkeypatch.setenv(phases.ENV, str(tmp_path / "late.jsonl"))  # read at start only
    await _serve_two(server)
    assert not (tmp_path / "late.jsonl").exists()
