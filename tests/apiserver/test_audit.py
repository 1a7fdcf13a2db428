from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import string
import subprocess
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hatchway.apiserver.audit import (
    DEFAULT_MAX_LINE,
    MAX_ARG_CHARS,
    MAX_ARGS,
    REDACTED,
    AuditLogger,
    bound_command,
    command_sha256,
    redact_command,
    redact_text,
)
from hatchway.apiserver.authn import AUTHENTICATED_GROUP, UserInfo
from hatchway.apiserver.request_info import parse_request_info

ALICE = UserInfo("alice", ("dev", AUTHENTICATED_GROUP))
EXEC = parse_request_info("GET", "/api/v1/namespaces/default/pods/web/exec", "command=sh")


def lines_of(buf: io.StringIO) -> list[dict]:
    text = buf.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_request_record_fields() -> None:
    buf = io.StringIO()
    audit = AuditLogger(buf, clock=lambda: 1_700_000_000.25)
    audit.log_request(
        user=ALICE,
        info=EXEC,
        decision="deny",
        code=403,
        reason='pods "web" is forbidden',
        source="127.0.0.1:5000",
        user_agent="kubectl/v1.32.4",
        request_id="r1",
    )
    (rec,) = lines_of(buf)
    assert rec == {
        "type": "request",
        "timestamp": "2023-11-14T22:13:20.250000Z",
        "request_id": "r1",
        "user": "alice",
        "groups": ["dev", AUTHENTICATED_GROUP],
        "verb": "create",
        "resource": "pods/exec",
        "namespace": "default",
        "name": "web",
        "path": "/api/v1/namespaces/default/pods/web/exec",
        "decision": "deny",
        "reason": 'pods "web" is forbidden',
        "source": "127.0.0.1:5000",
        "code": 403,
        "user_agent": "kubectl/v1.32.4",
    }


def test_unauthenticated_and_non_resource() -> None:
    buf = io.StringIO()
    audit = AuditLogger(buf)
    audit.log_request(
        user=None, info=parse_request_info("GET", "/version", ""), decision="deny", code=401
    )
    audit.log_request(user=None, info=None, decision="error", code=400, reason="bad request")
    first, second = lines_of(buf)
    assert (first["user"], first["groups"], first["verb"], first["path"]) == (
        "",
        [],
        "get",
        "/version",
    )
    assert first["resource"] == "" and second["verb"] == "" and second["decision"] == "error"
    with pytest.raises(ValueError):
        audit.log_request(user=None, info=None, decision="maybe", code=200)


def test_session_end_record() -> None:
    buf = io.StringIO()
    audit = AuditLogger(buf)
    audit.log_session_end(
        user=ALICE,
        info=EXEC,
        container="main",
        command=["mysql", "-u", "root", "--password", "hunter2", "-e", "1"],
        tty=True,
        stdin=True,
        duration=1.5,
        bytes_in=12,
        bytes_out=3400,
        exit_code=7,
        source="127.0.0.1:1",
    )
    audit.log_session_end(
        user=ALICE,
        info=EXEC,
        container="main",
        command=[],
        tty=False,
        stdin=False,
        duration=0.1,
        bytes_in=0,
        bytes_out=0,
        error="node went away",
    )
    rec, failed = lines_of(buf)
    assert rec["type"] == "session_end" and rec["resource"] == "pods/exec"
    assert rec["command"] == ["mysql", "-u", "root", "--password", REDACTED, "-e", "1"]
    assert (
        rec["tty"],
        rec["stdin"],
        rec["duration"],
        rec["bytes_in"],
        rec["bytes_out"],
        rec["exit_code"],
        rec["container"],
    ) == (True, True, 1.5, 12, 3400, 7, "main")
    assert failed["exit_code"] is None and failed["error"] == "node went away"
    assert "hunter2" not in buf.getvalue()


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["app", "--password", "pw1"], ["app", "--password", REDACTED]),
        (["app", "--db-password=pw1"], ["app", f"--db-password={REDACTED}"]),
        (["app", "--token", "t"], ["app", "--token", REDACTED]),
        (["app", "--client-secret", "s", "x"], ["app", "--client-secret", REDACTED, "x"]),
        (["mysql", "-p", "pw"], ["mysql", "-p", REDACTED]),
        (
            ["env", "AWS_SECRET_ACCESS_KEY=abc", "ls"],
            ["env", f"AWS_SECRET_ACCESS_KEY={REDACTED}", "ls"],
        ),
        (["env", "GITHUB_TOKEN=x y", "ls"], ["env", f"GITHUB_TOKEN={REDACTED}", "ls"]),
        (["app", "API-KEY=k"], ["app", f"API-KEY={REDACTED}"]),
        (["app", "apikey=k"], ["app", f"apikey={REDACTED}"]),
        (["curl", "-u", "bob:pw"], ["curl", "-u", f"bob:{REDACTED}"]),
        (
            ["curl", "-H", "Authorization: Bearer abc.def"],
            ["curl", "-H", f"Authorization: {REDACTED} {REDACTED}"],
        ),
        (["curl", "-H", "X: Bearer abc.def"], ["curl", "-H", f"X: Bearer {REDACTED}"]),
        (
            ["git", "clone", "https://me:pw@example.com/r.git"],
            ["git", "clone", f"https://me:{REDACTED}@example.com/r.git"],
        ),
        (
            ["sh", "-c", "PGPASSWORD=pw psql -c 'select 1'"],
            ["sh", "-c", f"PGPASSWORD={REDACTED} psql -c 'select 1'"],
        ),
        (
            ["sh", "-c", "mysql --password 'a b' -e x"],
            ["sh", "-c", f"mysql --password {REDACTED} -e x"],
        ),
        (["ls", "-la", "/tmp"], ["ls", "-la", "/tmp"]),
        (["echo", "hello=world"], ["echo", "hello=world"]),
        (["--password", "--token", "x"], ["--password", REDACTED, REDACTED]),
    ],
)
def test_redact_command_table(argv, expected) -> None:
    assert redact_command(argv) == expected


def test_redact_text_headers() -> None:
    assert REDACTED in redact_text("Basic Ym9iOnB3")
    assert "Ym9iOnB3" not in redact_text("Authorization: Basic Ym9iOnB3")
    assert redact_text('{"password": "x y"}') == '{"password": ' + REDACTED + "}"


SECRET = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=24
).map(lambda s: "Qz" + s)
NOSPACE = st.text(
    alphabet=string.ascii_letters + string.digits + "!#$%^&*()_+-=[]{}|;:,.<>?/~`'\"\\",
    min_size=1,
    max_size=24,
).map(lambda s: "Qz" + s)
URLSAFE = st.text(
    alphabet=string.ascii_letters + string.digits + "-._~!$&'()*+,;=%:/", min_size=1, max_size=24
).map(lambda s: "Qz" + s)
WORDS = st.lists(st.sampled_from(["ls", "-l", "/tmp", "x=1", "--verbose", "a b"]), max_size=3)

CONTEXTS = {
    "flag": (SECRET, lambda s: ["--password", s]),
    "flag-token": (SECRET, lambda s: ["--token", s]),
    "flag-p": (SECRET, lambda s: ["mysql", "-p", s]),
    "flag-eq": (SECRET, lambda s: [f"--password={s}"]),
    "env": (SECRET, lambda s: [f"DB_PASSWORD={s}"]),
    "env-key": (SECRET, lambda s: [f"OPENAI_API_KEY={s}"]),
    "user": (SECRET, lambda s: ["-u", f"bob:{s}"]),
    "bearer": (NOSPACE, lambda s: ["-H", f"Authorization: Bearer {s}"]),
    "shell-flag": (NOSPACE, lambda s: ["sh", "-c", f"mysql --password {s} -e 'select 1'"]),
    "shell-env": (NOSPACE, lambda s: ["sh", "-c", f"export API_KEY={s}; run"]),
    "url": (URLSAFE, lambda s: ["git", "clone", f"https://me:{s}@example.com/x.git"]),
}


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)


@pytest.mark.parametrize("context", list(CONTEXTS))
def test_secrets_never_reach_the_log(context) -> None:
    strategy, build = CONTEXTS[context]

    @settings(
        max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
    )
    @given(secret=strategy, before=WORDS, after=WORDS)
    def check(secret, before, after) -> None:
        buf = io.StringIO()
        argv = ["cmd", *before, *build(secret), *after]
        AuditLogger(buf).log_session_end(
            user=ALICE,
            info=EXEC,
            container="c",
            command=argv,
            tty=False,
            stdin=False,
            duration=0,
            bytes_in=0,
            bytes_out=0,
            exit_code=0,
        )
        (rec,) = lines_of(buf)
        for text in _strings(rec):
            assert secret not in text
        assert any(REDACTED in a for a in rec["command"])

    check()


def test_line_size_is_bounded() -> None:
    buf = io.StringIO()
    audit = AuditLogger(buf, max_line_bytes=2048)
    audit.log_session_end(
        user=ALICE,
        info=EXEC,
        container="c",
        command=["echo", *["x" * 5000] * 100],
        tty=False,
        stdin=False,
        duration=0,
        bytes_in=0,
        bytes_out=0,
        exit_code=0,
    )
    audit.log_request(user=ALICE, info=EXEC, decision="allow", code=101, user_agent="u" * 100_000)
    for line in buf.getvalue().splitlines(keepends=True):
        assert len(line.encode()) <= 2048
        rec = json.loads(line)
        assert rec["truncated"] is True
    with pytest.raises(ValueError):
        AuditLogger(buf, max_line_bytes=10)


def test_file_sink_mode_append_and_close(tmp_path) -> None:
    path = tmp_path / "audit.log"
    for n in range(2):
        audit = AuditLogger(path)
        audit.log_request(user=ALICE, info=EXEC, decision="allow", code=101, request_id=str(n))
        # line-buffered: visible before close
        assert path.read_text().count("\n") == n + 1
        audit.close()
        audit.close()
        with pytest.raises(ValueError):
            audit.log_request(user=ALICE, info=EXEC, decision="allow", code=101)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [json.loads(x)["request_id"] for x in path.read_text().splitlines()] == ["0", "1"]


def test_binary_stream_sink() -> None:
    buf = io.BytesIO()
    AuditLogger(buf).log_request(user=ALICE, info=EXEC, decision="allow", code=101)
    assert json.loads(buf.getvalue())["verb"] == "create"


def test_threads_never_interleave_lines(tmp_path) -> None:
    path = tmp_path / "audit.log"
    audit = AuditLogger(path)

    def worker(n: int) -> None:
        for i in range(200):
            audit.log_session_end(
                user=ALICE,
                info=EXEC,
                container=f"c{n}",
                command=["echo", "y" * (i * 7 % 900)],
                tty=False,
                stdin=False,
                duration=i,
                bytes_in=i,
                bytes_out=i,
            )

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    audit.close()
    records = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(records) == 1600
    assert sorted({r["container"] for r in records}) == [f"c{n}" for n in range(8)]


async def test_usable_from_the_event_loop() -> None:
    buf = io.StringIO()
    audit = AuditLogger(buf)
    audit.log_request(user=ALICE, info=EXEC, decision="allow", code=101)
    assert lines_of(buf)[0]["decision"] == "allow"


ADVERSARIAL = [
    "a" * 100_000,
    "token" * 20_000,
    "-" * 100_000,
    "-token" * 20_000 + "!",
    "http" + "a" * 100_000,
    "a:" * 50_000,
    "https://" + "a" * 100_000 + ":" + "b" * 100_000,
    'password="' * 10_000,
    "password " * 10_000,
    "--password " * 10_000,
    "x=" * 50_000,
    "Bearer " * 20_000,
    "a.b-c_d" * 20_000 + "=",
]


@pytest.mark.parametrize("text", ADVERSARIAL, ids=lambda t: f"{t[:12]!r}x{len(t)}")
def test_redaction_is_linear_on_hostile_input(text) -> None:
    scale = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1"))
    start = time.perf_counter()
    redact_command(["sh", "-c", text])
    redact_command([text, text])
    assert time.perf_counter() - start < 2.0 * scale


# --- session start and end, bounded commands -----------------------------------------


def nul_terminated_sha256(argv: list[str]) -> str:
    return hashlib.sha256(b"".join(a.encode() + b"\0" for a in argv)).hexdigest()


def test_session_start_record_shape() -> None:
    buf = io.StringIO()
    audit = AuditLogger(buf, clock=lambda: 1_700_000_000.25)
    argv = ["mysql", "-uroot", "-phunter2", "-e", "select 1"]
    audit.log_session_start(
        user=ALICE,
        info=EXEC,
        pod_uid="0b7c-uid",
        container="main",
        command=argv,
        tty=False,
        stdin=True,
        code=101,
        source="127.0.0.1:5000",
        request_id="r1",
    )
    (rec,) = lines_of(buf)
    assert rec == {
        "type": "session_start",
        "timestamp": "2023-11-14T22:13:20.250000Z",
        "request_id": "r1",
        "user": "alice",
        "groups": ["dev", AUTHENTICATED_GROUP],
        "verb": "create",
        "resource": "pods/exec",
        "namespace": "default",
        "name": "web",
        "path": "/api/v1/namespaces/default/pods/web/exec",
        "pod_uid": "0b7c-uid",
        "container": "main",
        "command": ["mysql", "-uroot", f"-p{REDACTED}", "-e", "select 1"],
        "command_args": 5,
        "command_sha256": nul_terminated_sha256(argv),
        "tty": False,
        "stdin": True,
        "source": "127.0.0.1:5000",
        "code": 101,
    }
    audit.log_session_start(
        user=ALICE,
        info=EXEC,
        container="main",
        command=[],
        tty=True,
        stdin=True,
        code=500,
        error="error dialing backend: connection refused",
    )
    failed = lines_of(buf)[1]
    assert (failed["code"], failed["error"]) == (500, "error dialing backend: connection refused")
    assert failed["command_args"] == 0 and failed["command_sha256"] == hashlib.sha256().hexdigest()


def test_session_end_carries_exit_code_or_why_not() -> None:
    buf = io.StringIO()
    audit = AuditLogger(buf)
    common = dict(
        user=ALICE,
        info=EXEC,
        pod_uid="u1",
        container="c",
        command=["sh", "-c", "exit 42"],
        tty=False,
        stdin=False,
        duration=0.5,
        bytes_in=0,
        bytes_out=0,
        request_id="r9",
    )
    audit.log_session_end(**common, exit_code=42)
    audit.log_session_end(**common, exit_code_error="the node did not answer in time")
    audit.log_session_end(**common)
    known, unknown, unsaid = lines_of(buf)
    assert known["exit_code"] == 42 and "exit_code_error" not in known
    assert (known["request_id"], known["pod_uid"], known["command_args"]) == ("r9", "u1", 3)
    assert known["command_sha256"] == nul_terminated_sha256(["sh", "-c", "exit 42"])
    assert unknown["exit_code"] is None
    assert unknown["exit_code_error"] == "the node did not answer in time"
    assert unsaid["exit_code"] is None and unsaid["exit_code_error"]


def test_the_digest_is_what_printf_nul_gives() -> None:
    """The documented recipe, ``printf '%s\\0' ARGS | sha256sum``, gives the same hash."""
    argv = ["sh", "-c", "echo 'a b'; exit 3", "", "é ☃"]
    printed = subprocess.run(["printf", "%s\\0", *argv], capture_output=True, check=True).stdout
    assert command_sha256(argv) == hashlib.sha256(printed).hexdigest()
    assert command_sha256([]) != command_sha256([""]) != command_sha256(["", ""])


def test_long_commands_are_cut_with_marks_never_silently() -> None:
    buf = io.StringIO()
    audit = AuditLogger(buf)
    big = "x" * (100 * 1024)
    argv = ["echo", big, *[f"a{i}" for i in range(98)]]
    audit.log_session_start(
        user=ALICE, info=EXEC, container="c", command=argv, tty=False, stdin=False, code=101
    )
    (rec,) = lines_of(buf)
    assert len(buf.getvalue().encode()) <= DEFAULT_MAX_LINE
    assert rec["command_args"] == 100
    assert rec["command_sha256"] == nul_terminated_sha256(argv)
    command = rec["command"]
    assert command[0] == "echo"
    # Whichever bound applied, every cut says how much it cut, counted from the argv.
    prefix, _, mark = command[1].partition("\u2026")
    assert set(prefix) == {"x"} and mark == f"[+{len(big) - len(prefix)} chars]"
    shown = command[:-1]
    assert command[-1] == f"\u2026[+{100 - len(shown)} args]"
    assert shown[2:] == [f"a{i}" for i in range(len(shown) - 2)]


def test_bound_command_marks() -> None:
    assert bound_command(["a" * 300, "b"]) == ["a" * MAX_ARG_CHARS + "\u2026[+44 chars]", "b"]
    many = [str(i) for i in range(MAX_ARGS + 5)]
    assert bound_command(many) == [*many[:MAX_ARGS], "\u2026[+5 args]"]
    assert bound_command(["short"]) == ["short"]


@pytest.mark.parametrize("max_line", [512, 2048, 8192])
def test_a_tight_line_keeps_the_digest_and_count(max_line: int) -> None:
    buf = io.StringIO()
    argv = ["echo", *["\u2603" * 3000] * 80]  # escapes to 6 bytes a character
    AuditLogger(buf, max_line_bytes=max_line).log_session_end(
        user=ALICE,
        info=EXEC,
        container="c",
        command=argv,
        tty=False,
        stdin=False,
        duration=1,
        bytes_in=1,
        bytes_out=1,
        exit_code=0,
        request_id="r1",
    )
    (rec,) = lines_of(buf)
    assert len(buf.getvalue().encode()) <= max_line and rec["truncated"] is True
    assert rec["command_sha256"] == nul_terminated_sha256(argv)
    assert (rec["command_args"], rec["request_id"], rec["exit_code"]) == (81, "r1", 0)
    assert rec["command"][-1].startswith("\u2026[+")
    for arg in rec["command"][1:-1]:
        prefix, _, mark = arg.partition("\u2026")
        assert mark == f"[+{3000 - len(prefix)} chars]"


# --- more secret shapes ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["mysql", "-uroot", "-phunter2"], ["mysql", "-uroot", f"-p{REDACTED}"]),
        (["/usr/bin/mysqldump", "-pX", "db"], ["/usr/bin/mysqldump", f"-p{REDACTED}", "db"]),
        (["env", "A=1", "mariadb", "-pX"], ["env", "A=1", "mariadb", f"-p{REDACTED}"]),
        (["sshpass", "-pX", "ssh", "h"], ["sshpass", f"-p{REDACTED}", "ssh", "h"]),
        (["7z", "x", "-pX", "a.7z"], ["7z", "x", f"-p{REDACTED}", "a.7z"]),
        (["unzip", "-P", "X", "a.zip"], ["unzip", "-P", REDACTED, "a.zip"]),
        (["redis-cli", "-a", "X", "ping"], ["redis-cli", "-a", REDACTED, "ping"]),
        (
            ["sh", "-c", "mysql -uroot -phunter2 -e 'select 1'"],
            ["sh", "-c", f"mysql -uroot -p{REDACTED} -e 'select 1'"],
        ),
        (["curl", "-ubob:pw", "x"], ["curl", f"-ubob:{REDACTED}", "x"]),
        (["curl", "--user=bob:pw"], ["curl", f"--user=bob:{REDACTED}"]),
        (["curl", "--proxy-user", "bob:pw"], ["curl", "--proxy-user", f"bob:{REDACTED}"]),
        (["sh", "-c", "curl -u bob:pw x"], ["sh", "-c", f"curl -u bob:{REDACTED} x"]),
        (
            ["git", "clone", "https://me:p@ss@example.com/r"],
            ["git", "clone", f"https://me:{REDACTED}@example.com/r"],
        ),
        (
            ["redis-cli", "-u", "redis://:pw@h:6379"],
            ["redis-cli", "-u", f"redis://:{REDACTED}@h:6379"],
        ),
        (["env", "STRIPE_KEY=sk", "ls"], ["env", f"STRIPE_KEY={REDACTED}", "ls"]),
        (["env", "ENCRYPTION_KEY=k"], ["env", f"ENCRYPTION_KEY={REDACTED}"]),
        (["env", "DB_PASS=p"], ["env", f"DB_PASS={REDACTED}"]),
        (["env", "VAULT_TOKEN=t"], ["env", f"VAULT_TOKEN={REDACTED}"]),
        (["env", "CLIENT_SECRET=s"], ["env", f"CLIENT_SECRET={REDACTED}"]),
        (["app", "--key", "v", "x"], ["app", "--key", REDACTED, "x"]),
        (["app", "--key=v"], ["app", f"--key={REDACTED}"]),
        (["app", "--ssh-key", "v"], ["app", "--ssh-key", REDACTED]),
        (["env", "SESSION=abc", "ls"], ["env", f"SESSION={REDACTED}", "ls"]),
        (["app", "--session", "abc"], ["app", "--session", REDACTED]),
        (["app", "--session-id=abc"], ["app", f"--session-id={REDACTED}"]),
        (["openssl", "enc", "-pass", "pass:x"], ["openssl", "enc", "-pass", REDACTED]),
        (
            ["curl", "-H", "Cookie: JSESSIONID=abc"],
            ["curl", "-H", f"Cookie: {REDACTED}"],
        ),
        (["sh", "-c", "export SESSION=abc; run"], ["sh", "-c", f"export SESSION={REDACTED} run"]),
    ],
)
def test_more_secret_shapes(argv, expected) -> None:
    assert redact_command(argv) == expected


BENIGN = [
    ["ls", "-la"],
    ["ls", "-p", "/tmp"],
    ["mkdir", "-p", "/x"],
    ["mkdir", "-p/x"],
    ["sh", "-c", "echo hi"],
    ["sh", "-c", "mkdir -p /x && ls -p"],
    ["cp", "-pr", "a", "b"],
    ["tar", "-pxf", "a.tar"],
    ["docker", "run", "-v", "/a:/b", "img"],
    ["echo", "host:8080", "monkey=1", "keyboard=us"],
    ["ps", "-u", "root"],
    ["mysql", "-uroot", "-e", "select 1"],
    ["curl", "https://example.com/a:b"],
    ["tmux", "new-session", "-s", "work"],
]


@pytest.mark.parametrize("argv", BENIGN, ids=" ".join)
def test_benign_commands_are_unchanged(argv) -> None:
    assert redact_command(argv) == argv


BENIGN_WORDS = st.sampled_from(
    ["ls", "-la", "-p", "mkdir", "/tmp/x", "a:b", "x=1", "--verbose", "echo", "hi", "-c", "-k"]
)


@given(argv=st.lists(BENIGN_WORDS, max_size=8))
def test_benign_words_are_never_touched(argv) -> None:
    assert redact_command(argv) == argv


MORE_CONTEXTS = {
    "glued-p": (SECRET, lambda s: ["mysql", "-uroot", f"-p{s}"]),
    "glued-p-path": (SECRET, lambda s: ["/usr/bin/mysqldump", f"-p{s}", "db"]),
    "sshpass": (SECRET, lambda s: ["sshpass", "-p", s, "ssh", "host"]),
    "shell-glued-p": (NOSPACE, lambda s: ["sh", "-c", f"mysql -uroot -p{s} -e 'select 1'"]),
    "user-glued": (SECRET, lambda s: ["curl", f"-ubob:{s}"]),
    "user-eq": (SECRET, lambda s: ["curl", f"--user=bob:{s}"]),
    "shell-user": (NOSPACE, lambda s: ["sh", "-c", f"curl -u bob:{s} https://x"]),
    "url-user": (URLSAFE, lambda s: ["redis-cli", "-u", f"redis://bob:{s}@h:6379/0"]),
    "env-suffix-key": (SECRET, lambda s: [f"STRIPE_KEY={s}"]),
    "env-token": (SECRET, lambda s: [f"VAULT_TOKEN={s}"]),
    "env-secret": (SECRET, lambda s: [f"CLIENT_SECRET={s}"]),
    "flag-key": (SECRET, lambda s: ["--key", s]),
    "flag-key-eq": (SECRET, lambda s: [f"--key={s}"]),
    "env-session": (SECRET, lambda s: [f"SESSION={s}"]),
    "flag-session": (SECRET, lambda s: ["--session", s]),
    "shell-key": (NOSPACE, lambda s: ["sh", "-c", f"run --key {s} && SESSION={s} next"]),
}


@pytest.mark.parametrize("context", list(MORE_CONTEXTS))
def test_more_secrets_never_reach_either_session_line(context) -> None:
    strategy, build = MORE_CONTEXTS[context]

    @settings(max_examples=100, deadline=None)
    @given(secret=strategy, before=WORDS, after=WORDS)
    def check(secret, before, after) -> None:
        buf = io.StringIO()
        audit = AuditLogger(buf)
        argv = ["cmd", *before, *build(secret), *after]
        fields = dict(user=ALICE, info=EXEC, container="c", command=argv, tty=False, stdin=False)
        audit.log_session_start(**fields, code=101)
        audit.log_session_end(**fields, duration=0, bytes_in=0, bytes_out=0, exit_code=0)
        for rec in lines_of(buf):
            for text in _strings(rec):
                assert secret not in text
            assert any(REDACTED in a for a in rec["command"])

    check()


def test_impersonation_names_both_users_on_every_line() -> None:
    """Kubernetes' ``user`` and ``impersonatedUser``: the caller, then who it acted as;
    extra values (the caller chose them) are redacted like any free text."""
    buf = io.StringIO()
    audit = AuditLogger(buf)
    bob = UserInfo("bob", ("g", AUTHENTICATED_GROUP), "42", {"note": ("password=hunter2",)})
    session = {"container": "main", "command": ["sh"], "tty": False, "stdin": False}
    audit.log_request(user=ALICE, impersonated_user=bob, info=EXEC, decision="allow", code=101)
    audit.log_session_start(user=ALICE, impersonated_user=bob, info=EXEC, code=101, **session)
    audit.log_session_end(
        user=ALICE,
        impersonated_user=bob,
        info=EXEC,
        duration=1,
        bytes_in=0,
        bytes_out=0,
        exit_code=0,
        **session,
    )
    audit.log_request(user=ALICE, info=EXEC, decision="allow", code=101)
    *impersonating, plain = lines_of(buf)
    for rec in impersonating:
        assert (rec["user"], rec["groups"]) == ("alice", ["dev", AUTHENTICATED_GROUP])
        assert rec["impersonated_user"] == {
            "username": "bob",
            "groups": ["g", AUTHENTICATED_GROUP],
            "uid": "42",
            "extra": {"note": [f"password={REDACTED}"]},
        }
    assert "hunter2" not in buf.getvalue()
    assert "impersonated_user" not in plain
