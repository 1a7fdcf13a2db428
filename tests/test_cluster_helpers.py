"""The test harness's own helpers that decide what a test sees."""

from __future__ import annotations

from cluster import without_initial_message_race

RACE = b"E1207 03:28:17.889570   21150 websocket.go:296] Unknown stream id 1, discarding message\n"


def test_only_the_initial_message_race_line_is_left_out_and_only_once() -> None:
    assert without_initial_message_race(RACE) == b""
    assert without_initial_message_race(b"Defaulted container\n" + RACE) == b"Defaulted container\n"
    # Twice means a second message reached a stream kubectl never made: kept.
    assert without_initial_message_race(RACE + RACE) == RACE
    # Another channel, another source file or another message is kept whole.
    for kept in (
        RACE.replace(b"stream id 1,", b"stream id 2,"),
        RACE.replace(b"websocket.go", b"spdy.go"),
        RACE.replace(b"discarding message", b"closing"),
        b"error: " + RACE,
    ):
        assert without_initial_message_race(kept) == kept
