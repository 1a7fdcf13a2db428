"""CPU seconds per GiB of a TLS-terminating relay written in C: the floor of the part of
a stream that the API server carries, whatever language it is written in.

    .venv/bin/python bench/relay_floor.py                 # 1 GiB, 3 rounds
    .venv/bin/python bench/relay_floor.py --mib 512 --rounds 5 --install

A Hatchway stream crosses the same endpoints as an OpenSSH one (a process that reads the
command's pipe and encrypts, one that decrypts and writes the client's stdout) plus one
process in the middle that authenticates both sides: the API server, which decrypts what
the node sends and encrypts it again for the client over a second loopback TCP
connection. This measures that middle hop alone in C: ``socat`` with OpenSSL (the same
library and, by default, the same TLS 1.3 cipher as Hatchway's connections) relaying
``--mib`` MiB from a TLS client to a TLS sink, both in this process; the relay's CPU
(user + system, from ``wait4``) per GiB is the figure, its kernel share (loopback receive
and send) included. On a machine where every process of a stream is busy, a stream costs
the machine at least OpenSSH's endpoints plus this much per GiB (bench/README.md,
"Targets: where the last full run stands"). Needs ``socat`` (``--install``: apt-get it).
Not a timed test.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench import env as benv

CHUNK = 256 * 1024


def _certificate(directory: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    cert, key = directory / "relay.crt", directory / "relay.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=relay"],
        check=True, capture_output=True,
    )  # fmt: skip
    return cert, key


class _Sink:
    """A TLS server on loopback that reads one connection to its end and counts it."""

    def __init__(self, cert: pathlib.Path, key: pathlib.Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.received = 0
        self.cipher = ""
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.listener.accept()
            with self.context.wrap_socket(conn, server_side=True) as tls:
                self.cipher = str((tls.cipher() or ("",))[0])
                buf = bytearray(1 << 20)
                while n := tls.recv_into(buf):
                    self.received += n
        except (OSError, ssl.SSLError) as exc:
            self.error = exc
        finally:
            self.listener.close()


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"socat exited with {proc.returncode}")
        if f":{port:04X} " in pathlib.Path("/proc/net/tcp").read_text():
            return
        time.sleep(0.02)
    raise RuntimeError("socat did not listen within 10 s")


def one_round(mib: int, cert: pathlib.Path, key: pathlib.Path) -> tuple[float, str]:
    """One relayed stream: (the relay's CPU seconds per GiB, the cipher)."""
    sink = _Sink(cert, key)
    port = benv.free_port()
    listen = f"OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,cert={cert},key={key},verify=0"
    relay = subprocess.Popen(
        ["socat", "-b", str(CHUNK), listen, f"OPENSSL:127.0.0.1:{sink.port},verify=0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _wait_listening(port, relay)
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE
        total = mib << 20
        data = memoryview(bytes(CHUNK))
        with socket.create_connection(("127.0.0.1", port)) as raw:
            with client.wrap_socket(raw) as tls:
                sent = 0
                while sent < total:
                    n = min(CHUNK, total - sent)
                    tls.sendall(data[:n])
                    sent += n
                tls.unwrap()
        _, status, usage = os.wait4(relay.pid, 0)
        relay.returncode = os.waitstatus_to_exitcode(status)
    except BaseException:
        relay.kill()
        relay.wait()
        raise
    sink.thread.join(60)
    if sink.error is not None or sink.received != total:
        raise RuntimeError(f"the sink got {sink.received} of {total} bytes: {sink.error}")
    cpu = usage.ru_utime + usage.ru_stime
    return cpu / (total / (1 << 30)), sink.cipher


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=1024, help="MiB per round (default 1024)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--install", action="store_true", help="apt-get install socat if missing")
    args = parser.parse_args()
    if args.mib < 1 or args.rounds < 1:
        parser.error("--mib and --rounds must be at least 1")
    if shutil.which("socat") is None and args.install and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        cmd = ["apt-get", "install", "-y", "--no-install-recommends", "socat"]
        subprocess.run(cmd, capture_output=True, env=env, timeout=600)
    if shutil.which("socat") is None:
        print("socat is not installed: apt-get install -y socat (or --install)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="hatchway-relay-") as tmp:
        cert, key = _certificate(pathlib.Path(tmp))
        figures = []
        for i in range(args.rounds):
            per_gib, cipher = one_round(args.mib, cert, key)
            figures.append(per_gib)
            benv.log(f"round {i + 1}: relay {per_gib:.2f} CPU s/GiB ({cipher})")
    load = os.getloadavg()[0]
    print(
        f"TLS-terminating relay in C (socat -b {CHUNK}, OpenSSL, {cipher}): "
        f"{statistics.median(figures):.2f} CPU s/GiB median of {args.rounds} "
        f"({min(figures):.2f}-{max(figures):.2f}; {args.mib} MiB each, load {load:.1f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
