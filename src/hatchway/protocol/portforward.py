"""Port-forward's request values, sans-I/O (protocol.md 6.3): the ``port`` stream
header and the ``ports`` query of the WebSocket channel form, read as the kubelet reads
them, with the bounds a peer is held to."""

from __future__ import annotations

from collections.abc import Sequence

#: Longest ``requestid`` (and any other port-forward header value) accepted.
MAX_HEADER_VALUE = 64
#: Most ports one channel-form request may name (two channels each).
MAX_PORTS = 64


def parse_port(value: str) -> int | None:
    """A port header or ``ports`` item: a decimal 1-65535, else None."""
    if not value or len(value) > 5 or not value.isdigit():
        return None
    port = int(value)
    return port if 0 < port < 65536 else None


def parse_ports(values: Sequence[str]) -> list[int]:
    """The ``ports`` query (comma-separated, repeatable), as the kubelet's
    ``NewV4Options`` reads it; ValueError in its words."""
    items = [p.strip() for v in values for p in v.split(",")]
    if not items or items == [""]:
        raise ValueError('query parameter "port" is required')
    if len(items) > MAX_PORTS:
        raise ValueError(f"at most {MAX_PORTS} ports may be forwarded at once")
    ports = []
    for item in items:
        port = parse_port(item)
        if port is None:
            raise ValueError(f'unable to parse "{item[:MAX_HEADER_VALUE]}" as a port')
        ports.append(port)
    return ports
