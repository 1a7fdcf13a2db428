"""Port-forward's command-line values as kubectl reads them, and a forwarder against a
real cluster from the Python API (protocol.md 6.4)."""

from __future__ import annotations

import asyncio

import pytest

from cluster import NC_LISTEN, SCALE, Cluster
from hatchway.client.api import Client
from hatchway.client.portforward import PortMapping, parse_addresses, parse_mapping
from hatchway.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "mapping"),
    [
        ("8080", PortMapping(8080, 8080)),
        (":8080", PortMapping(0, 8080)),
        ("0:80", PortMapping(0, 80)),
        ("5000:80", PortMapping(5000, 80)),
    ],
)
def test_mappings(text: str, mapping: PortMapping) -> None:
    assert parse_mapping(text) == mapping


@pytest.mark.parametrize("text", ["", "http", "80:", "0", "65536", "70000:80", "a:80", "1:2:3"])
def test_bad_mappings(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_mapping(text)


def test_addresses() -> None:
    assert parse_addresses("localhost") == ["127.0.0.1", "::1"]
    assert parse_addresses("0.0.0.0,::,0.0.0.0") == ["0.0.0.0", "::"]
    for bad in ("", "example.com", "1.2.3.4.5"):
        with pytest.raises(ConfigError):
            parse_addresses(bad)


async def test_a_forwarder_from_the_python_api(cluster: Cluster) -> None:
    name = cluster.pod(command=(*NC_LISTEN, "-p", "7000", "-e", "cat"))
    errors: list[tuple[int, int, str]] = []
    async with Client.from_kubeconfig(str(cluster.kubeconfig)) as client:
        forwarder = await client.port_forward(
            name, [":7000", ":7001"], on_error=lambda *e: errors.append(e)
        )
        async with forwarder:
            by_remote = {listener.remote: listener.local for listener in forwarder.listeners}
            assert sorted(by_remote) == [7000, 7001] and 0 not in by_remote.values()
            async with asyncio.timeout(30 * SCALE):
                for _ in range(50):  # the server may still be starting
                    reader, writer = await asyncio.open_connection("127.0.0.1", by_remote[7000])
                    writer.write(b"ping\n")
                    writer.write_eof()
                    answer = await reader.read()
                    writer.close()
                    if answer:
                        break
                    await asyncio.sleep(0.2)
                assert answer == b"ping\n"
                errors.clear()
                reader, writer = await asyncio.open_connection("127.0.0.1", by_remote[7001])
                assert await reader.read() == b""
                writer.close()
                while not errors:
                    await asyncio.sleep(0.05)
    ((local, remote, text),) = errors
    assert (local, remote) == (by_remote[7001], 7001)
    assert text.startswith("error forwarding port 7001: failed to connect to localhost:7001")
