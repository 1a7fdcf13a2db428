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
from collections.abc import Callable

import pytest

from cluster import SCALE, can_run_containers

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench.soak_check import fd_leaks  # noqa: E402
from bench.soak_procs import fd_account  # noqa: E402
from bench.soak_session import Outcome, Pattern, Spec, Verifier, classify  # noqa: E402

#: A server as the soak's are, for its fd check: it listens (its port on stdout), holds
#: every connection it accepts (``accepted N``) and, a command a line on stdin, dials
#: another (``connect PORT``), closes the oldest it accepted (``close``) or opens a file
#: (``file``), then says ``done``.
_PEER = """
import os, socket, sys, threading
lock = threading.Lock()
def say(line):
    with lock:
        sys.stdout.write(line + "\\n")
        sys.stdout.flush()
lsock = socket.create_server(("127.0.0.1", 0))
say(str(lsock.getsockname()[1]))
accepted, held = [], []
def accept():
    while True:
        accepted.append(lsock.accept()[0])
        say(f"accepted {len(accepted)}")
threading.Thread(target=accept, daemon=True).start()
for line in sys.stdin:
    word, *arg = line.split()
    if word == "connect":
        held.append(socket.create_connection(("127.0.0.1", int(arg[0]))))
    elif word == "close":
        accepted.pop(0).close()
    else:
        held.append(os.open("/dev/null", os.O_RDONLY))
    say("done")
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


class _Peer:
    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _PEER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self.seen: list[str] = []
        self.port = int(self.expect(lambda line: line.isdigit()))

    def expect(self, wanted: Callable[[str], bool]) -> str:
        """The first line (read or yet to come) that is ``wanted``."""
        assert self.proc.stdout is not None
        while not any(wanted(line) for line in self.seen):
            line = self.proc.stdout.readline()
            assert line, "the peer ended"
            self.seen.append(line.strip())
        found = next(line for line in self.seen if wanted(line))
        self.seen.remove(found)
        return found

    def ask(self, command: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        self.expect(lambda line: line == "done")

    def accepted(self, n: int) -> None:
        self.expect(lambda line: line == f"accepted {n}")


def test_the_soak_counts_a_leaked_fd_and_not_a_kept_connection() -> None:
    """The soak's fd check (bench/soak_procs.fd_account, soak_check.fd_leaks) on two real
    processes: connections between them, either way, open at both ends, are not counted
    (up to each one's bound); an fd more is, in either process, and so is a connection
    beyond the bound or one the other end closed."""
    client, server = _Peer(), _Peer()
    ports = {"client": client.port, "server": server.port}
    bounds = {"client": 3, "server": 1}
    try:

        def account() -> tuple[dict[str, int], dict[str, int]]:
            now = fd_account(client.proc.pid, server.proc.pid, ports)
            return fd_leaks(base, now, bounds), {end: len(p) for end, p in now.pairs.items()}

        base = fd_account(client.proc.pid, server.proc.pid, ports).counted
        for n in range(1, 4):  # the client's pool, filled
            client.ask(f"connect {server.port}")
            server.accepted(n)
        server.ask(f"connect {client.port}")  # the server's watch
        client.accepted(1)
        assert account() == ({"client": 0, "server": 0}, {"client": 3, "server": 1})
        client.ask(f"connect {server.port}")  # one more than the bound, each way
        server.accepted(4)
        server.ask(f"connect {client.port}")
        client.accepted(2)
        assert account() == ({"client": 1, "server": 1}, {"client": 4, "server": 2})
        server.ask("close")  # the server closed one: the client's end is left
        client.ask("close")
        assert account() == ({"client": 1, "server": 1}, {"client": 3, "server": 1})
        client.ask("file")  # a leaked file at either end
        server.ask("file")
        assert account() == ({"client": 2, "server": 2}, {"client": 3, "server": 1})
    finally:
        for peer in (client, server):
            peer.proc.kill()
            peer.proc.wait()
