"""The soak harness, short: ~200 sessions over every client and both transports, with
kills, a node agent and an API server restart, slow readers and idle sessions, on a
cluster of its own (bench/soak.py). Nothing may come back corrupted or truncated, end
with a wrong exit code, fail outside a restart, hang, or leave a process or an fd."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from cluster import SCALE, can_run_containers

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.soak_check import fd_leaks  # noqa: E402
from bench.soak_procs import fd_account  # noqa: E402
from bench.soak_session import Outcome, Pattern, Spec, Verifier, classify  # noqa: E402

#: A server that holds every connection it accepts (``accepted N`` on stdout); on stdin
#: ``close`` closes the oldest one, ``file`` opens /dev/null and holds it.
_SERVER = """
import socket, sys, threading
lsock = socket.create_server(("127.0.0.1", 0))
print(lsock.getsockname()[1], flush=True)
held = []
def accept():
    while True:
        held.append(lsock.accept()[0])
        print("accepted", len(held), flush=True)
threading.Thread(target=accept, daemon=True).start()
for line in sys.stdin:
    if line.strip() == "close":
        held.pop(0).close()
    else:
        held.append(open("/dev/null"))
    print("done", flush=True)
"""
#: A client that holds what it opens: ``connect PORT`` a connection, ``file`` /dev/null.
_CLIENT = """
import os, socket, sys
held = []
for line in sys.stdin:
    word, *arg = line.split()
    if word == "connect":
        held.append(socket.create_connection(("127.0.0.1", int(arg[0]))))
    else:
        held.append(os.open("/dev/null", os.O_RDONLY))
    print("ok", flush=True)
"""


@pytest.mark.parametrize(
    ("damage", "code", "status"),
    [
        ("none", 0, "ok"),
        ("none", 3, "wrong_exit"),
        ("tail", 0, "truncated"),
        ("empty", 0, "truncated"),
        ("flip", 0, "corrupted"),
        ("extra", 0, "corrupted"),
        ("repeat", 0, "corrupted"),
    ],
)
def test_the_soak_tells_lost_and_changed_bytes_apart(damage: str, code: int, status: str) -> None:
    """What the soak's verdicts rest on: a stream that comes back short is truncated,
    one that differs anywhere (or is longer, or repeats a block) is corrupted."""
    pattern = Pattern(5)
    spec = Spec(7, "lib-ws", "pod", "data", size=300_000, code=0)
    sent = b"".join(bytes(b) for b in pattern.stream(7, spec.size))
    back = {
        "none": sent,
        "tail": sent[:-1],
        "empty": b"",
        "flip": sent[:1000] + bytes([sent[1000] ^ 1]) + sent[1001:],
        "extra": sent + b"x",
        "repeat": sent[:65536] + sent[:65536] + sent[131072:],
    }[damage]
    verifier = Verifier(pattern.stream(7, spec.size))
    for i in range(0, len(back), 4093):  # odd chunks: block edges fall anywhere
        verifier.feed(back[i : i + 4093])
    out = Outcome(spec, exit_code=code)
    classify(out, verifier)
    assert out.status == status
    assert out.verified == (spec.size if status in {"ok", "wrong_exit"} else 0)


@pytest.mark.runc
@pytest.mark.slow
@pytest.mark.timeout(900 * SCALE)
def test_short_soak_loses_nothing_and_leaks_nothing(tmp_path: pathlib.Path) -> None:
    reason = can_run_containers()
    if reason:
        pytest.skip(f"the soak {reason}")
    out = tmp_path / "soak.json"
    argv = [sys.executable, str(ROOT / "bench" / "soak.py"), "--sessions", "200"]
    argv += ["--concurrency", "50", "--seed", "10", "--idle-seconds", "5"]
    argv += ["--time-limit", str(300 * SCALE), "--timeout-scale", str(SCALE), "--out", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = subprocess.run(argv, capture_output=True, timeout=800 * SCALE, env=env)
    report = run.stdout.decode(errors="replace") + run.stderr.decode(errors="replace")[-3000:]
    assert out.exists(), report
    result = json.loads(out.read_text())
    total = result["total"]
    assert result["not_started"] == 0, report
    assert [r["component"] for r in result["restarts"]] == ["node", "apiserver"], report
    assert total["killed"] > 0 and total["bytes_verified"] > 0, report
    for key in ("corrupted", "truncated", "wrong_exit", "error", "hung", "left"):
        assert total[key] == 0, f"{key}: {total[key]}\n{report}"
    assert result["leaked_procs"] == {"container": [], "host": []}, report
    assert {role: v["leaked"] for role, v in result["fds"].items()} == {
        "apiserver": 0,
        "node": 0,
    }, report
    assert run.returncode == 0, report


def _ask(proc: subprocess.Popen[str], line: str, answer: str) -> None:
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()
    while not proc.stdout.readline().startswith(answer):
        assert proc.poll() is None


def test_the_soak_counts_a_leaked_fd_and_not_a_pooled_connection() -> None:
    """The soak's fd check (bench/soak_procs.fd_account, soak_check.fd_leaks) on two real
    processes: connections between them, open at both ends, are not counted; an fd more
    is, in either process, and so is a connection beyond the pool's bound or one the
    other end closed."""
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "text": True}
    server = subprocess.Popen([sys.executable, "-c", _SERVER], **pipes)  # type: ignore[call-overload]
    client = subprocess.Popen([sys.executable, "-c", _CLIENT], **pipes)  # type: ignore[call-overload]
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())

        def account() -> tuple[dict[str, int], int]:
            now = fd_account(client.pid, server.pid, port)
            return fd_leaks(base, now, 3), len(now.pairs)

        base = fd_account(client.pid, server.pid, port).counted
        for n in range(1, 4):  # a pool of three, filled
            _ask(client, f"connect {port}", "ok")
            assert server.stdout.readline().split() == ["accepted", str(n)]
        assert account() == ({"client": 0, "server": 0}, 3)
        _ask(client, f"connect {port}", "ok")  # one more than the bound
        assert server.stdout.readline().split() == ["accepted", "4"]
        assert account() == ({"client": 1, "server": 0}, 4)
        _ask(server, "close", "done")  # the server closed one: the client's end is left
        assert account() == ({"client": 1, "server": 0}, 3)
        _ask(client, "file", "ok")  # a leaked file at either end
        _ask(server, "file", "done")
        assert account() == ({"client": 2, "server": 1}, 3)
    finally:
        for proc in (client, server):
            proc.kill()
            proc.wait()
