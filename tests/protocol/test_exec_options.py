"""The exec options query codec, both spellings (protocol.md 2.1, 2.2).

Byte-exact vectors of what goes on the wire: kubectl's queries to the API server (seen
on the wire from kubectl 1.32, and the same in 1.27-1.33, whose query building did not
change: ``tests/interop/test_kubectl.py::test_exec_query_on_the_wire`` checks it against
each installed kubectl), the Python client's, and what the API server forwards to the
node. Then every reader's rules, hostile input included.
"""

from __future__ import annotations

import urllib.parse

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.protocol import exec_options as eo
from hatchway.types import ExecOptions


def _query(raw: str) -> dict[str, list[str]]:
    """As the HTTP layer parses a request's query (transport.httpmessage)."""
    return urllib.parse.parse_qs(raw, keep_blank_values=True)


def _exec(*command: str, **flags: bool) -> ExecOptions:
    base = {"stdin": False, "stdout": False, "stderr": False, "tty": False}
    return ExecOptions(tuple(command), "main", **{**base, **flags})


# --- encoding: the API server spelling, as kubectl sends it --------------------------

KUBECTL = [
    pytest.param(
        _exec("echo", "hello", stdout=True, stderr=True),
        "command=echo&command=hello&container=main&stderr=true&stdout=true",
        id="exec",
    ),
    pytest.param(
        _exec("cat", stdin=True, stdout=True, stderr=True),
        "command=cat&container=main&stderr=true&stdin=true&stdout=true",
        id="exec-i",
    ),
    pytest.param(
        _exec("sh", stdin=True, stdout=True, tty=True),
        "command=sh&container=main&stdin=true&stdout=true&tty=true",
        id="exec-it",
    ),
    pytest.param(
        _exec("sh", "-c", "tar cf - /tmp/foo | tail -c+0", stdout=True, stderr=True),
        "command=sh&command=-c&command=tar+cf+-+%2Ftmp%2Ffoo+%7C+tail+-c%2B0"
        "&container=main&stderr=true&stdout=true",
        id="cp-from",
    ),
    pytest.param(
        _exec("tar", "-xmf", "-", "-C", "/tmp", stdin=True, stdout=True, stderr=True),
        "command=tar&command=-xmf&command=-&command=-C&command=%2Ftmp"
        "&container=main&stderr=true&stdin=true&stdout=true",
        id="cp-to",
    ),
    pytest.param(
        ExecOptions((), "main", True, True, True, False, "attach"),
        "container=main&stderr=true&stdin=true&stdout=true",
        id="attach",
    ),
]


@pytest.mark.parametrize(("options", "wire"), KUBECTL)
def test_apiserver_spelling_is_kubectls(options: ExecOptions, wire: str) -> None:
    assert eo.encode(options, eo.APISERVER) == wire
    # and what the API server reads from it is what was sent
    assert eo.decode(_query(wire), options.action, spelling=eo.APISERVER) == options


def test_apiserver_spelling_details() -> None:
    # no container when none is known (the API server defaults it); attach sends no
    # command even when the options carry one; pairs come in wire order
    options = ExecOptions(("ls",), "", stdout=True, stderr=False)
    assert eo.query_pairs(options, eo.APISERVER) == [("command", "ls"), ("stdout", "true")]
    attach = ExecOptions(("ignored",), "c", False, True, False, True, "attach")
    assert eo.encode(attach, eo.APISERVER) == "container=c&stdout=true&tty=true"
    assert eo.encode(ExecOptions(stdout=False, stderr=False), eo.APISERVER) == ""


# --- encoding: the kubelet spelling, as the API server forwards it ---------------------

KUBELET = [
    pytest.param(
        _exec("echo", "hi", stdout=True, stderr=True),
        "command=echo&command=hi&error=1&output=1",
        id="exec",
    ),
    pytest.param(_exec("sh", stdin=True, stdout=True), "command=sh&input=1&output=1", id="exec-i"),
    pytest.param(
        # the API server forwards what it was given: stderr and tty both (the node folds)
        _exec("sh", stdin=True, stdout=True, stderr=True, tty=True),
        "command=sh&error=1&input=1&output=1&tty=1",
        id="exec-it-stderr",
    ),
    pytest.param(
        _exec("sh", "-c", "a b&c=d/e+f%", stdout=True),
        "command=sh&command=-c&command=a+b%26c%3Dd%2Fe%2Bf%25&output=1",
        id="escaping",
    ),
    pytest.param(
        ExecOptions((), "main", False, True, False, True, "attach"), "output=1&tty=1", id="attach"
    ),
]


@pytest.mark.parametrize(("options", "wire"), KUBELET)
def test_kubelet_spelling(options: ExecOptions, wire: str) -> None:
    assert eo.encode(options, eo.KUBELET) == wire  # never a container: it is in the path
    decoded = eo.decode(_query(wire), options.action, spelling=eo.KUBELET, container="main")
    assert decoded == options


# --- decoding: other clients --------------------------------------------------------------


def test_python_client_queries() -> None:
    # kubernetes 37.0.2 sends false values explicitly and no container
    wire = "command=echo&command=hi&stderr=true&stdin=false&stdout=true&tty=false"
    options = eo.decode(_query(wire), "exec", spelling=eo.APISERVER)
    assert options == ExecOptions(("echo", "hi"), "", False, True, True, False)
    # versions up to 36 send Python's True/False
    wire = "command=ls&stderr=True&stdin=False&stdout=True&tty=False"
    options = eo.decode(_query(wire), "exec", spelling=eo.APISERVER)
    assert (options.stdin, options.stdout, options.stderr, options.tty) == (
        False,
        True,
        True,
        False,
    )


# --- the boolean rules --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "apiserver", "kubelet"),
    [
        (None, False, False),
        ([], False, False),
        ([""], True, False),  # present and empty: on for the API server, off for the kubelet
        (["1"], True, True),
        (["0"], False, False),
        (["true"], True, False),
        (["True"], True, False),
        (["false"], False, False),
        (["FALSE"], False, False),
        (["no"], True, False),
        (["01"], True, False),
        ([" 1"], True, False),
        (["1", "0"], True, True),  # repeated: the first value counts
        (["0", "1"], False, False),
        (["false", "true"], False, False),
    ],
)
def test_boolean_rules(values, apiserver: bool, kubelet: bool) -> None:
    assert eo.apiserver_bool(values) is apiserver
    assert eo.kubelet_bool(values) is kubelet


# --- decoding: what each reader did, and hostile input ---------------------------------------


def test_apiserver_decoding_rules() -> None:
    query = _query("command=sh&stdin=&stdout=True&stderr=False&tty=0&container=a&container=b")
    options = eo.decode(query, "exec", spelling=eo.APISERVER)
    assert options == ExecOptions(("sh",), "a", True, True, False, False)
    # tty with stderr is kept as sent: the API server forwards it, the node folds it
    options = eo.decode(_query("command=sh&stderr=1&tty=1"), "exec", spelling=eo.APISERVER)
    assert (options.stderr, options.tty) == (True, True)
    # attach ignores any command; the path's container wins over the query's
    query = _query("command=rm&container=x&stdout=1")
    options = eo.decode(query, "attach", spelling=eo.APISERVER, container="main")
    assert (options.command, options.container, options.action) == ((), "main", "attach")


def test_hostile_queries_are_read_by_the_rules() -> None:
    # unknown keys, the other spelling's keys, upper-case names: ignored
    query = _query("command=id&STDIN=true&input=1&stdout=true&evil=%00&command")
    options = eo.decode(query, "exec", spelling=eo.APISERVER)
    assert options == ExecOptions(("id", ""), "", False, True, False, False)
    # empty and odd command values are argv elements as sent, in order
    query = _query("command=&command=a%20b&command=%E2%9C%93&command=-")
    assert eo.decode(query, "exec", spelling=eo.APISERVER).command == ("", "a b", "✓", "-")
    # the kubelet spelling takes nothing from API server names
    query = _query("input=1&stdout=true&stderr=true&tty=true")
    options = eo.decode(query, "exec", spelling=eo.KUBELET, container="c")
    assert (options.stdin, options.stdout, options.stderr, options.tty) == (
        True,
        False,
        False,
        False,
    )


def test_many_commands_are_kept_whole() -> None:
    # The codec does not cut argv; what bounds it is the HTTP head limit (64 KiB, 431
    # above it): about 6,500 one-letter arguments fit, and all of them arrive.
    argv = tuple(str(i % 10) for i in range(6000))
    wire = eo.encode(ExecOptions(argv, "c"), eo.APISERVER)
    assert len(wire) < 64 * 1024
    assert eo.decode(_query(wire), "exec", spelling=eo.APISERVER).command == argv


# --- the node: either spelling, detected ------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "spelling"),
    [
        ("command=ls&output=1", eo.KUBELET),
        ("command=ls&input=", eo.KUBELET),  # presence decides, not the value
        ("command=ls&error=0&stdout=true", eo.KUBELET),
        ("command=ls&stdout=true&tty=1", eo.APISERVER),  # tty is in both spellings
        ("command=ls", eo.APISERVER),
        ("", eo.APISERVER),
    ],
)
def test_spelling_detection(raw: str, spelling: str) -> None:
    assert eo.spelling_of(_query(raw)) == spelling


@pytest.mark.parametrize(
    ("query", "stdin", "stdout", "stderr", "tty"),
    [
        ({"input": ["1"], "output": ["1"], "error": ["1"]}, True, True, True, False),
        ({"input": ["true"], "output": ["1"]}, False, True, False, False),
        ({"output": ["1"], "error": ["1"], "tty": ["1"]}, False, True, False, True),
        ({"stdin": ["true"], "stdout": ["true"], "stderr": ["false"]}, True, True, False, False),
        ({"stdout": ["1"], "tty": ["true"], "stderr": ["true"]}, False, True, False, True),
    ],
)
def test_node_reading(query, stdin, stdout, stderr, tty):
    """What the node endpoint reads (moved from tests/node/test_server.py, unchanged):
    detected spelling, the path's container, stderr folded into a TTY."""
    options = eo.decode({"command": ["ls"], **query}, "exec", container="main").normalised()
    assert (options.stdin, options.stdout, options.stderr, options.tty) == (
        stdin,
        stdout,
        stderr,
        tty,
    )
    assert options.command == ("ls",)


# --- round trips --------------------------------------------------------------------------

_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)


@given(
    command=st.lists(_text, min_size=1, max_size=6).map(tuple),
    container=st.text("abcdef-0123456789", min_size=1, max_size=8),
    flags=st.tuples(st.booleans(), st.booleans(), st.booleans(), st.booleans()),
    action=st.sampled_from(["exec", "attach"]),
)
def test_round_trip_both_spellings(command, container, flags, action) -> None:
    options = ExecOptions(command if action == "exec" else (), container, *flags, action=action)
    for spelling in (eo.APISERVER, eo.KUBELET):
        wire = eo.encode(options, spelling)
        keys = [pair.split("=", 1)[0] for pair in wire.split("&") if pair]
        assert keys == sorted(keys)
        decoded = eo.decode(_query(wire), action, spelling=spelling, container=container)
        assert decoded == options
        if options.stdin or options.stdout or options.stderr:
            # what the node detects on its own is the spelling that was sent
            assert eo.decode(_query(wire), action, container=container) == options


@pytest.mark.parametrize(
    ("raw", "flags"),
    [
        ("command=id&output=1", (False, True, False, False)),  # the kubelet's spelling
        ("command=id&stdout=true", (False, True, False, False)),  # the seed user's
        ("command=sh&stdin=1&stdout=True&tty=true", (True, True, False, True)),
        ("command=sh&input=1&error=1&tty=1", (True, False, True, True)),
        ("command=id&input=true&stdout=false", (False, False, False, False)),
        ("command=id&stderr=yes&output=0", (False, False, False, False)),  # not Go's true
    ],
)
def test_the_legacy_path_reads_both_spellings(raw: str, flags: tuple[bool, ...]) -> None:
    query = urllib.parse.parse_qs(raw, keep_blank_values=True)
    options = eo.decode_legacy(query, "exec", "main")
    assert (options.stdin, options.stdout, options.stderr, options.tty) == flags
    assert (options.command, options.container) == ((raw.split("&")[0][8:],), "main")


@given(
    st.lists(
        st.tuples(
            st.text(st.characters(blacklist_categories=("Cs",)), max_size=6),
            st.text(st.characters(blacklist_categories=("Cs",)), max_size=10),
        ),
        max_size=5,
    )
)
def test_query_string_is_urlencode(pairs: list[tuple[str, str]]) -> None:
    # Go's url.Values.Encode and Python's quote_plus escape alike; ours must too.
    assert eo.query_string(pairs) == urllib.parse.urlencode(pairs)


def test_query_escape_bytes() -> None:
    assert eo.query_escape("a b&c=d/é~-_.") == "a+b%26c%3Dd%2F%C3%A9~-_."
