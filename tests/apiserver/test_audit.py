from __future__ import annotations

import io
import json
import os
import stat
import string
import threading
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hatchway.apiserver.audit import REDACTED, AuditLogger, redact_command, redact_text
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
