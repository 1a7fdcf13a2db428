"""JSON from a peer: a nesting too deep for Python's decoder is bad JSON, not a crash."""

from __future__ import annotations

import json

import pytest

from hatchway.errors import ApiError, ProtocolError
from hatchway.protocol import channel, handshake, peer_json
from hatchway.rest import status_from_response

NESTED = b"[" * 100_000 + b"]" * 100_000


def test_nested_brackets_are_a_decode_error() -> None:
    with pytest.raises(json.JSONDecodeError) as caught:
        peer_json.loads(NESTED)
    assert peer_json.too_deep(caught.value)
    with pytest.raises(json.JSONDecodeError) as caught:
        peer_json.loads(NESTED.decode())
    assert peer_json.too_deep(caught.value)


def test_other_json_is_what_json_loads_makes_of_it() -> None:
    assert peer_json.loads(b'{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}
    assert peer_json.loads(b"[" * 50 + b"]" * 50) == json.loads(b"[" * 50 + b"]" * 50)
    with pytest.raises(json.JSONDecodeError) as caught:
        peer_json.loads(b'{"a":')
    assert not peer_json.too_deep(caught.value)


def test_a_client_reads_a_nested_error_body_as_text() -> None:
    status = status_from_response(500, "Internal Server Error", NESTED)
    assert status["code"] == 500 and status["message"].startswith("[[[")
    assert isinstance(ApiError(status), ApiError)


def test_a_nested_status_on_the_error_channel_is_a_protocol_error() -> None:
    for version in (channel.V4, channel.V5):
        with pytest.raises(ProtocolError, match="error stream protocol error"):
            channel.parse_status(version, NESTED)


def test_a_refused_upgrade_with_a_nested_body_is_unable_to_upgrade() -> None:
    with pytest.raises(handshake.UpgradeFailedError, match="unable to upgrade connection"):
        handshake.check_spdy_response(500, [], NESTED, "Internal Server Error")
