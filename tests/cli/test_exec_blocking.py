"""The blocking exec client (client/blocking.py, cli/exec_blocking.py): its frame reader
on a socket pair (frames split at every byte, large and fragmented messages, hostile
frames bounded), and ``hatchway exec`` against an in-process API server that serves
WebSocket, or refuses it and serves SPDY only (the asyncio path takes over)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import pathlib
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from tests.session.fakes import FakeRunner, bulk_bytes

from hatchway import pki
from hatchway.client import blocking, blocking_tls
from hatchway.errors import LimitExceededError, ProtocolError
from hatchway.protocol import channel, exec_options
from hatchway.protocol.websocket_mask import apply_mask, mask_python
from hatchway.session import upgrade
from hatchway.session.server import ServerSession
from hatchway.transport import tls, tls_core
from hatchway.transport.http import HttpServer
from hatchway.transport.httpmessage import Request, Response

SCALE = float(os.environ.get("HATCHWAY_TEST_TIMEOUT_SCALE", "1"))


def _frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = False) -> bytes:
    """A server frame, built independently of the code under test."""
    first = (0x80 if fin else 0) | opcode
    n = len(payload)
    if n < 126:
        head = bytes((first, n))
    elif n < 65536:
        head = bytes((first, 126)) + struct.pack("!H", n)
    else:
        head = bytes((first, 127)) + struct.pack("!Q", n)
    if mask:
        key = b"\x01\x02\x03\x04"
        head = bytes((head[0], head[1] | 0x80)) + head[2:] + key
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + payload


def _status(code: int) -> bytes:
    body = channel.status_exit_code(code, f"exit {code}") if code else channel.status_success()
    return _frame(2, bytes((channel.ERROR,)) + body)


class Peer:
    """A session over a socket pair: the test writes server bytes, the reader runs in a
    thread and collects per-channel output."""

    def __init__(self, protocol: str = channel.V5) -> None:
        self.ours, self.theirs = socket.socketpair()
        self.session = blocking.WebSocketSession(self.ours, protocol)
        self.out: dict[int, bytearray] = {1: bytearray(), 2: bytearray()}
        self.writes = 0
        self.result: bytes | BaseException | None = None

    def _write(self, number: int, views: list[memoryview]) -> None:
        self.writes += 1
        for view in views:
            self.out[number] += view

    def run(self, data: bytes, pieces: list[int] | None = None) -> bytes | BaseException:
        """Feed ``data`` (cut at ``pieces`` offsets), close, and read the session out."""

        def read() -> None:
            try:
                self.result = self.session.receive(self._write)
            except BaseException as exc:  # the test looks at it
                self.result = exc

        thread = threading.Thread(target=read)
        thread.start()
        cuts = [0, *(pieces or []), len(data)]
        for a, b in itertools.pairwise(cuts):
            self.theirs.sendall(data[a:b])
        with contextlib.suppress(OSError):
            self.theirs.shutdown(socket.SHUT_WR)
        thread.join(30 * SCALE)
        assert not thread.is_alive()
        assert self.result is not None
        return self.result

    def sent(self) -> bytes:
        """What the client wrote (after the session closed its end)."""
        self.theirs.settimeout(5 * SCALE)
        chunks = []
        with contextlib.suppress(OSError):
            while chunk := self.theirs.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks)

    def close(self) -> None:
        self.ours.close()
        self.theirs.close()


@pytest.fixture
def peer() -> Iterator[Peer]:
    p = Peer()
    yield p
    p.close()


def test_masking_matches_the_pure_python_xor() -> None:
    for n in (0, 1, 3, 4, 5, 1000, 65536 + 3):
        data = os.urandom(n)
        for key in (b"\x00\x00\x00\x00", os.urandom(4)):
            assert apply_mask(data, key) == mask_python(data, key)
            assert mask_python(mask_python(data, key), key) == data


def test_limits_agree_with_the_asyncio_client() -> None:
    from hatchway.session import client
    from hatchway.transport import websocket

    assert blocking.MAX_MESSAGE == websocket.DEFAULT_MAX_MESSAGE
    assert blocking.MAX_FRAGMENTS == websocket.DEFAULT_MAX_FRAGMENTS
    assert blocking.MAX_STATUS == client.MAX_STATUS
    assert blocking.SESSION_CUT == client.SESSION_CUT


def _stream() -> bytes:
    return b"".join(
        [
            _frame(2, b"\x01hello "),
            _frame(9, b"ping!"),
            _frame(2, b"\x02err"),
            _frame(2, b"\x01wor", fin=False),
            _frame(0, b"", fin=False),
            _frame(0, b"ld"),
            _frame(2, b"\x07ignored"),
            _frame(2, b"\x01"),  # an empty message on stdout
            _status(0),
            _frame(8, struct.pack("!H", 1000)),
        ]
    )


def test_frames_split_at_every_byte_boundary() -> None:
    data = _stream()
    for cut in range(1, len(data)):
        p = Peer()
        try:
            raw = p.run(data, [cut])
            assert raw == channel.status_success(), (cut, raw)
            assert bytes(p.out[1]) == b"hello world" and bytes(p.out[2]) == b"err", cut
            assert p.session.close_code == 1000
        finally:
            p.close()


def test_one_byte_at_a_time_and_the_pong(peer: Peer) -> None:
    data = _stream()
    raw = peer.run(data, list(range(1, len(data))))
    assert raw == channel.status_success()
    assert bytes(peer.out[1]) == b"hello world"
    peer.session.close()
    sent = peer.sent()
    # The pong: masked, opcode 10, the ping's payload; then our close frame (1000).
    assert sent[0] == 0x8A and sent[1] == 0x80 | 5
    assert apply_mask(sent[6:11], sent[2:6]) == b"ping!"
    assert sent[11] == 0x88
    assert apply_mask(sent[17:19], sent[13:17]) == struct.pack("!H", 1000)


def test_large_frames_stream_through_a_bounded_buffer(peer: Peer) -> None:
    big = bulk_bytes(5 * blocking.READ_BUFFER + 12345)
    data = _frame(2, b"\x01" + big) + _frame(2, b"\x02" + big[:70000]) + _status(3)
    raw = peer.run(data, [1, 7, 100000])
    assert isinstance(raw, bytes)
    assert bytes(peer.out[1]) == big
    assert bytes(peer.out[2]) == big[:70000]
    assert blocking.outcome(peer.session, raw) == 3


def test_an_oversized_frame_is_refused_on_its_header(peer: Peer) -> None:
    head = bytes((0x82, 127)) + struct.pack("!Q", blocking.MAX_MESSAGE + 1)
    result = peer.run(head + b"\x01" + b"x" * 1000)
    assert isinstance(result, LimitExceededError) and result.code == 1009
    assert not peer.out[1]  # nothing of it was passed on
    sent = peer.sent()
    assert sent[0] == 0x88
    assert apply_mask(sent[6:8], sent[2:6]) == struct.pack("!H", 1009)


def test_too_many_fragments_and_an_oversized_status(peer: Peer) -> None:
    frames = [_frame(2, b"\x01", fin=False)]
    frames += [_frame(0, b"", fin=False)] * (blocking.MAX_FRAGMENTS + 1)
    result = peer.run(b"".join(frames))
    assert isinstance(result, LimitExceededError) and "fragments" in str(result)
    other = Peer()
    try:
        result = other.run(_frame(2, b"\x03" + b"{" * (blocking.MAX_STATUS + 1)))
        assert isinstance(result, LimitExceededError) and "error stream" in str(result)
    finally:
        other.close()


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (_frame(2, b"\x01masked", mask=True), "masking"),
        (bytes((0xC2, 1, 1)), "reserved"),
        (_frame(9, b"x" * 126), "control frame"),
        (_frame(0, b"x"), "continuation"),
        (_frame(2, b""), "no channel byte"),
        (_frame(2, b"\xff\x00\x00"), "close signal"),
        (_frame(2, b"\xff\x09"), "unknown channel"),
        (_frame(3, b"x"), "opcode"),
    ],
)
def test_protocol_faults_close_with_1002(peer: Peer, data: bytes, text: str) -> None:
    result = peer.run(data)
    assert isinstance(result, ProtocolError) and text in str(result), result
    sent = peer.sent()
    assert sent[0] == 0x88 and apply_mask(sent[6:8], sent[2:6]) == struct.pack("!H", 1002)


def test_a_cut_session_is_not_a_success(peer: Peer) -> None:
    raw = peer.run(_frame(2, b"\x01partial"))
    assert raw == b"" and bytes(peer.out[1]) == b"partial"
    with pytest.raises(blocking.ConnectionClosedError, match="before the server sent"):
        blocking.outcome(peer.session, raw)


@pytest.mark.parametrize("protocol", [channel.V5, channel.V1])
def test_a_reset_is_reported_as_one(protocol: str) -> None:
    """A read that fails (here a reset) is the error the user sees, not a clean end; on
    v1, where an empty status means exit 0, it must not read as a success either."""
    peer = Peer(protocol)
    try:
        peer.ours.sendall(b"unread")  # a unix socket closed with input unread resets
        peer.theirs.sendall(_frame(2, b"\x01partial"))
        peer.theirs.close()
        raw = peer.session.receive(peer._write)
        assert raw == b"" and bytes(peer.out[1]) == b"partial"
        with pytest.raises(blocking.ConnectionClosedError, match=r"lost .* reset by peer"):
            blocking.outcome(peer.session, raw)
    finally:
        peer.ours.close()


def test_stdin_frames_and_the_close_signal(peer: Peer) -> None:
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(peer.sent()))
    reader.start()  # a socket pair holds less than these frames
    peer.session.send(0, b"abc")
    peer.session.send(0, b"z" * 70000)
    peer.session.close_stdin()
    peer.session.resize(80, 24)
    peer.session.close()
    reader.join(30 * SCALE)
    sent = received[0]
    messages = []
    pos = 0
    while pos < len(sent):
        b1, b2 = sent[pos], sent[pos + 1]
        assert b2 & 0x80  # every client frame is masked
        n, pos = b2 & 0x7F, pos + 2
        if n == 126:
            n, pos = struct.unpack_from("!H", sent, pos)[0], pos + 2
        elif n == 127:
            n, pos = struct.unpack_from("!Q", sent, pos)[0], pos + 8
        key, pos = sent[pos : pos + 4], pos + 4
        messages.append((b1, apply_mask(sent[pos : pos + n], key)))
        pos += n
    assert messages[0] == (0x82, b"\x00abc")
    assert messages[1] == (0x82, b"\x00" + b"z" * 70000)
    assert messages[2] == (0x82, b"\xff\x00")
    assert messages[3][0] == 0x82 and messages[3][1][0] == channel.RESIZE
    assert json.loads(messages[3][1][1:]) == {"Width": 80, "Height": 24}
    assert messages[4][0] == 0x88


# -- hatchway exec against an in-process API server ------------------------------------


POD = {
    "kind": "Pod",
    "apiVersion": "v1",
    "metadata": {"name": "fake", "namespace": "default"},
    "spec": {"containers": [{"name": "main"}, {"name": "side"}]},
    "status": {"phase": "Running"},
}


class FakeApiServer:
    """Pods and exec over plain HTTP; ``websocket=False`` answers a WebSocket upgrade
    with x/net's bare 403 (a SPDY-only server) and serves SPDY."""

    def __init__(self, websocket: bool, tls: ssl.SSLContext | None = None) -> None:
        self.websocket = websocket
        self.tls = tls
        self.requests: list[tuple[str, str]] = []
        self.connections = 0
        self.runner: FakeRunner | None = None
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = self._call(self._start())

    def _call(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30 * SCALE)

    async def _start(self) -> HttpServer:
        self.runner = FakeRunner()
        server = HttpServer(self._app)
        await server.start("127.0.0.1", 0, ssl=self.tls)
        return server

    async def _app(self, request: Request) -> Response:
        self.requests.append((request.method, request.path))
        if request.path.endswith("/pods/fake"):
            body = json.dumps(POD).encode()
            return Response(200, [("Content-Type", "application/json")], body)
        if not request.path.endswith("/pods/fake/exec"):
            status = {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404}
            status["message"] = 'pods "x" not found'
            return Response(
                404, [("Content-Type", "application/json")], json.dumps(status).encode()
            )
        options = exec_options.decode(request.query, "exec", container="main").normalised()
        assert self.runner is not None
        runner = self.runner

        async def serve(conn):  # type: ignore[no-untyped-def]
            await ServerSession(conn, options, runner).run()

        offered = request.header_values("x-stream-protocol-version")
        ws = channel.WEBSOCKET_SERVER_PROTOCOLS if self.websocket else ()
        return upgrade._accept(request, serve, ws, channel.spdy_server_supported(offered))

    def kubeconfig(self, path: pathlib.Path) -> pathlib.Path:
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {"name": "c", "cluster": {"server": f"http://127.0.0.1:{self.server.port}"}}
            ],
            "users": [{"name": "u", "user": {"token": "t"}}],
            "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
            "current-context": "x",
        }
        path.write_text(json.dumps(doc))
        return path

    def close(self) -> None:
        self._call(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(params=[True, False], ids=["websocket", "spdy-only"])
def api(request: pytest.FixtureRequest) -> Iterator[FakeApiServer]:
    server = FakeApiServer(websocket=request.param)
    yield server
    server.close()


def _exec(
    api: FakeApiServer, tmp_path: pathlib.Path, *args: str, input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "KUBECONFIG": str(api.kubeconfig(tmp_path / "kubeconfig"))}
    env.pop("HATCHWAY_EXEC_ASYNCIO", None)
    code = (
        "import atexit, sys\n"
        "atexit.register(lambda: sys.stderr.write("
        "'\\nLOADED ' + ' '.join(m for m in ('asyncio', 'websockets', 'h11')"
        " if m in sys.modules)))\n"
        "from hatchway.cli.main import main\n"
        "main(sys.argv[1:])\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code, "exec", *args],
        input=input,
        capture_output=True,
        env=env,
        timeout=60 * SCALE,
    )


def _loaded(result: subprocess.CompletedProcess[bytes]) -> tuple[str, list[str]]:
    err, _, loaded = result.stderr.decode().rpartition("\nLOADED")
    return err, loaded.split()


def test_masking_keys_are_fresh_across_refills(peer: Peer) -> None:
    # The keys come from os.urandom KEY_MATERIAL bytes at a time (one getrandom per
    # 256 frames, not per keystroke): three refills' worth of frames, every key read
    # back from the wire, each payload unmasked to what was sent.
    frames = 3 * blocking.KEY_MATERIAL // 4 + 5
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(peer.sent()))
    reader.start()
    for i in range(frames):
        peer.session.send(0, b"k%d" % i)
    peer.session.close()
    reader.join(30 * SCALE)
    sent, pos, keys = received[0], 0, []
    for i in range(frames):
        n = sent[pos + 1] & 0x7F
        key = sent[pos + 2 : pos + 6]
        assert apply_mask(sent[pos + 6 : pos + 6 + n], key) == b"\x00k%d" % i
        keys.append(key)
        pos += 6 + n
    assert sent[pos] == 0x88  # then the close frame
    # 4-byte random keys: a repeat among ~770 has odds of ~7e-5; a pool reused from its
    # start on refill would repeat every key.
    assert len(set(keys)) >= frames - 1


def test_exit_code_and_the_container_notice_said_once(
    api: FakeApiServer, tmp_path: pathlib.Path
) -> None:
    result = _exec(api, tmp_path, "fake", "--", "exit", "3")
    err, loaded = _loaded(result)
    assert result.returncode == 3, err
    assert result.stdout == b"out\n"
    assert err.count('Defaulted container "main" out of: main, side') == 1, err
    assert err.endswith("err\ncommand terminated with exit code 3\n"), err
    if api.websocket:
        assert loaded == []  # the blocking path all through
        # One connection: the pod GET and the upgrade on it.
        assert api.requests == [
            ("GET", "/api/v1/namespaces/default/pods/fake"),
            ("GET", "/api/v1/namespaces/default/pods/fake/exec"),
        ]
    else:
        assert "asyncio" in loaded  # handed over on the refusal
        assert [m for m, _ in api.requests][-1] == "POST"  # SPDY, as today


def test_stdin_to_eof_and_bulk_output(api: FakeApiServer, tmp_path: pathlib.Path) -> None:
    data = os.urandom(3 * 65536 + 17)
    result = _exec(api, tmp_path, "-i", "fake", "-c", "main", "--", "cat", input=data)
    assert result.returncode == 0, result.stderr
    assert result.stdout == data  # every byte, and the EOF reached the command
    n = 5 * 1024 * 1024 + 3
    result = _exec(api, tmp_path, "fake", "-c", "main", "--", "bulk", str(n))
    assert result.returncode == 0, result.stderr
    assert result.stdout == bulk_bytes(n)


def test_server_errors_read_as_today(api: FakeApiServer, tmp_path: pathlib.Path) -> None:
    result = _exec(api, tmp_path, "ghost", "--", "true")
    err, _ = _loaded(result)
    assert result.returncode == 1
    assert err.strip() == 'Error from server (NotFound): pods "x" not found'
    result = _exec(api, tmp_path, "fake", "-c", "main", "--", "missing")
    err, _ = _loaded(result)
    assert result.returncode == 1 and "executable file not found" in err, err
    assert "Traceback" not in err


def test_the_pod_get_and_the_upgrade_share_one_connection() -> None:
    api = FakeApiServer(websocket=True)
    try:
        conn = blocking.HttpConnection(f"http://127.0.0.1:{api.server.port}", None)
        pod = blocking.get_pod(conn, "t", "default", "fake")
        assert pod["metadata"]["name"] == "fake"
        options = blocking.ExecOptions(("exit", "5"), "main")
        session = blocking.upgrade(conn, "t", "default", "fake", options)
        assert conn.connections == 1  # one handshake for both requests
        assert session.protocol == channel.V5
        out: list[bytes] = []
        raw = session.receive(lambda number, views: out.extend(bytes(v) for v in views))
        assert blocking.outcome(session, raw) == 5 and b"".join(out) == b"out\nerr\n"
        session.close()
    finally:
        api.close()


def test_a_refused_upgrade_is_handed_back_untouched() -> None:
    api = FakeApiServer(websocket=False)
    try:
        conn = blocking.HttpConnection(f"http://127.0.0.1:{api.server.port}", None)
        options = blocking.ExecOptions(("true",), "main", stdin=True)
        with pytest.raises(blocking.UpgradeRefusedError) as info:
            blocking.upgrade(conn, "t", "default", "fake", options)
        assert "403" in str(info.value.error) or "Forbidden" in str(info.value.error)
        assert api.runner is not None and not api.runner.processes  # nothing started
    finally:
        api.close()


def test_a_ping_never_blocks_the_reader_behind_a_stuck_writer(peer: Peer) -> None:
    """A writer blocked in ``sendall`` holds the send lock; a ping must not stop the
    reader (the server may be waiting for its output to be read before taking input):
    the pong goes out with the writer's next frame."""
    assert peer.session._lock.acquire()  # the stuck writer
    try:
        data = _frame(9, b"p1") + _frame(2, b"\x01after the ping") + _status(0)
        raw = peer.run(data + _frame(8, struct.pack("!H", 1000)))
        assert raw == channel.status_success()
        assert bytes(peer.out[1]) == b"after the ping"
    finally:
        peer.session._lock.release()
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(peer.sent()))
    reader.start()
    peer.session.send(0, b"x")
    peer.session.close()
    reader.join(30 * SCALE)
    sent = received[0]
    assert sent[0] == 0x82  # the writer's frame, then the pong it carried
    pos = 2 + 4 + 2
    assert (
        sent[pos] == 0x8A and apply_mask(sent[pos + 6 : pos + 8], sent[pos + 2 : pos + 6]) == b"p1"
    )


# -- TLS on memory BIOs (client/blocking_tls.py) ---------------------------------------


class Pki:
    """A CA, a server certificate for 127.0.0.1 and one for another name only, and a
    second CA that signed neither."""

    def __init__(self, base: pathlib.Path) -> None:
        self.ca = pki.create_ca(base / "ca")
        self.good = pki.issue_certificate(
            self.ca, base / "good", common_name="api", ip_addresses=["127.0.0.1"], server=True
        )
        self.elsewhere = pki.issue_certificate(
            self.ca,
            base / "elsewhere",
            common_name="api",
            dns_names=["elsewhere.test"],
            server=True,
        )
        self.other_ca = pki.create_ca(base / "other-ca")

    def server(self, paths: pki.CertPaths) -> ssl.SSLContext:
        return tls.server_context(paths.cert, paths.key)

    def client(self, ca: pki.CertPaths | None = None) -> ssl.SSLContext:
        return tls.client_context(ca_file=(ca or self.ca).cert)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return Pki(tmp_path_factory.mktemp("pki"))


def _socket_refusal(ctx: ssl.SSLContext, port: int) -> ssl.SSLCertVerificationError:
    """What an SSLSocket (the client before memory BIOs) raises on the same server."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30 * SCALE)
    with pytest.raises(ssl.SSLCertVerificationError) as info:
        ctx.wrap_socket(sock, server_hostname="127.0.0.1")
    sock.close()
    return info.value


@pytest.mark.parametrize("context", ["ssl", "core"])
@pytest.mark.parametrize("case", ["wrong-ca", "wrong-hostname"])
def test_tls_verification_is_as_strict_as_an_ssl_socket(
    certs: Pki, case: str, context: str
) -> None:
    # "core": the context the CLI's blocking exec connects with (tls_config.core_context).
    cert = certs.elsewhere if case == "wrong-hostname" else certs.good
    ca = certs.other_ca if case == "wrong-ca" else certs.ca
    client = certs.client(ca)
    used = client if context == "ssl" else tls_core.client_context(ca_data=ca.cert.read_text())
    api = FakeApiServer(websocket=True, tls=certs.server(cert))
    try:
        conn = blocking.HttpConnection(f"https://127.0.0.1:{api.server.port}", used)
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            blocking.get_pod(conn, "t", "default", "fake")
        expected = _socket_refusal(client, api.server.port)
        assert info.value.verify_code == expected.verify_code != 0
        assert info.value.verify_message == expected.verify_message
        assert api.requests == []  # nothing was sent
        # The right CA, or the certificate's name: the same server is reached.
        sock = socket.create_connection(("127.0.0.1", api.server.port), timeout=30 * SCALE)
        name = "elsewhere.test" if case == "wrong-hostname" else "127.0.0.1"
        stream = blocking_tls.TlsStream(sock, certs.client(), name)
        stream.handshake()
        stream.sendall(b"GET /api/v1/namespaces/default/pods/fake HTTP/1.1\r\nHost: x\r\n\r\n")
        assert stream.recv(65536).startswith(b"HTTP/1.1 200 ")
        stream.close()
    finally:
        api.close()


class Exclusive:
    """Wraps the SSLObject and its BIOs: counts the calls, and those made while another
    call on any of them was running (the GIL is let go inside OpenSSL's read and write,
    so an overlap would be seen)."""

    def __init__(self) -> None:
        self.busy = threading.Lock()
        self.calls = 0
        self.overlaps = 0

    def wrap(self, inner: object) -> object:
        outer = self

        class Proxy:
            def __getattr__(self, name: str) -> object:
                attr = getattr(inner, name)
                if not callable(attr):
                    if not outer.busy.acquire(blocking=False):
                        outer.overlaps += 1
                        return attr
                    outer.busy.release()
                    return attr

                def call(*args: object, **kwargs: object) -> object:
                    if not outer.busy.acquire(blocking=False):
                        outer.overlaps += 1
                        return attr(*args, **kwargs)
                    try:
                        outer.calls += 1
                        return attr(*args, **kwargs)
                    finally:
                        outer.busy.release()

                return call

        return Proxy()


def test_both_ways_over_tls_never_share_the_sslobject(certs: Pki) -> None:
    """24 MiB to ``cat`` and back while pings go out as fast as they can: every byte
    back in order (ciphertext out of order fails the server's record check), and no
    use of the SSLObject or its BIOs overlaps another."""
    api = FakeApiServer(websocket=True, tls=certs.server(certs.good))
    try:
        conn = blocking.HttpConnection(f"https://127.0.0.1:{api.server.port}", certs.client())
        options = blocking.ExecOptions(("cat",), "main", stdin=True)
        session = blocking.upgrade(conn, "t", "default", "fake", options)
        stream = session.sock
        assert isinstance(stream, blocking_tls.TlsStream)
        check = Exclusive()
        stream._tls = check.wrap(stream._tls)  # type: ignore[assignment]
        stream._incoming = check.wrap(stream._incoming)  # type: ignore[assignment]
        stream._outgoing = check.wrap(stream._outgoing)  # type: ignore[assignment]
        data = os.urandom(24 * 1024 * 1024)
        pings = [0]
        out = bytearray()

        def pump() -> None:
            for pos in range(0, len(data), 65536):
                session.send(0, data[pos : pos + 65536])
            session.close_stdin()

        def ping() -> None:
            while not session.done.wait(0.002):
                with contextlib.suppress(OSError, blocking.ConnectionClosedError):
                    session.ping()
                    pings[0] += 1

        def write(number: int, views: list[memoryview]) -> None:
            for view in views:
                out.extend(view)

        threads = [threading.Thread(target=pump), threading.Thread(target=ping)]
        for thread in threads:
            thread.start()
        raw = session.receive(write)
        for thread in threads:
            thread.join(60 * SCALE)
            assert not thread.is_alive()
        assert blocking.outcome(session, raw) == 0
        assert len(out) == len(data) and out == data
        assert pings[0] > 0 and check.calls > 2 * len(data) // 65536
        assert check.overlaps == 0
        session.close()
    finally:
        api.close()


class TlsEchoPeer:
    """A TLS server on a thread, for client/blocking_tls.py alone: sends ``send``, reads
    ``expect`` bytes, then ``finish`` decides how the stream ends."""

    def __init__(
        self, certs: Pki, expect: int, finish: str = "close_notify", send: bytes = b""
    ) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.ctx = certs.server(certs.good)
        self.finish = finish
        self.send = send
        self.expect = expect
        self.received = bytearray()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve)
        self.thread.start()

    def _serve(self) -> None:
        raw, _ = self.listener.accept()
        conn: socket.socket = raw
        try:
            conn = self.ctx.wrap_socket(raw, server_side=True)  # one thread uses it
            conn.sendall(self.send)
            while len(self.received) < self.expect:
                chunk = conn.recv(65536)
                if not chunk:
                    raise AssertionError("the client's stream ended early")
                self.received += chunk
            if self.finish == "close_notify":
                with contextlib.suppress(OSError):
                    conn.unwrap()  # ours goes out; the client sends none
            elif self.finish == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            else:  # a cut: TCP's end without close_notify
                conn.shutdown(socket.SHUT_RDWR)
        except BaseException as exc:  # the test looks at it
            self.error = exc
        finally:
            conn.close()

    def connect(self, certs: Pki) -> blocking_tls.TlsStream:
        sock = socket.create_connection(self.listener.getsockname(), timeout=30 * SCALE)
        stream = blocking_tls.TlsStream(sock, certs.client(), "127.0.0.1")
        stream.handshake()
        return stream

    def close(self) -> None:
        self.thread.join(30 * SCALE)
        assert not self.thread.is_alive()
        self.listener.close()


def _read_all(stream: blocking_tls.TlsStream) -> bytes:
    buf = bytearray(1024 * 1024)
    out = bytearray()
    while n := stream.recv_into(buf):
        out += buf[:n]
    return bytes(out)


def test_ciphertext_order_with_several_senders_and_a_reader(certs: Pki) -> None:
    """Four threads send numbered messages (some of several records) while the reader
    takes 8 MiB: the server decrypts every one, each thread's in its order."""
    back = os.urandom(8 * 1024 * 1024)
    sizes = [5, 700, 16384, 40000, 70001]
    total = sum(9 + sizes[seq % len(sizes)] for seq in range(300)) * 4
    peer = TlsEchoPeer(certs, total, send=back)
    stream = peer.connect(certs)

    def sender(number: int) -> None:
        for seq in range(300):
            body = bytes((number,)) * sizes[seq % len(sizes)]
            stream.sendall(struct.pack("!BII", number, seq, len(body)) + body)

    threads = [threading.Thread(target=sender, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    got = bytearray()
    buf = bytearray(1024 * 1024)
    while len(got) < len(back):
        n = stream.recv_into(buf)
        assert n, "the stream ended early"
        got += buf[:n]
    for thread in threads:
        thread.join(60 * SCALE)
        assert not thread.is_alive()
    assert _read_all(stream) == b""  # close_notify
    stream.close()
    peer.close()
    assert peer.error is None and got == back
    seen = {i: 0 for i in range(4)}
    pos, data = 0, peer.received
    while pos < len(data):
        number, seq, n = struct.unpack_from("!BII", data, pos)
        pos += 9
        assert seq == seen[number] and data[pos : pos + n] == bytes((number,)) * n
        seen[number] += 1
        pos += n
    assert seen == {i: 300 for i in range(4)}


class CountingSocket:
    """The client's socket, its ``recv_into`` calls counted."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.reads = 0

    def recv_into(self, buffer: memoryview, nbytes: int = 0) -> int:
        self.reads += 1
        return self.sock.recv_into(buffer, nbytes)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sock, name)


class CountingTls:
    """The SSLObject, its reads and the ``SSLWantReadError``s they raise counted."""

    def __init__(self, inner: ssl.SSLObject) -> None:
        self.inner = inner
        self.reads = 0
        self.empty = 0

    def read(self, n: int, buffer: memoryview) -> int:
        self.reads += 1
        try:
            return self.inner.read(n, buffer)
        except ssl.SSLWantReadError:
            self.empty += 1
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def test_records_already_received_are_read_without_a_syscall_or_an_empty_read(
    certs: Pki,
) -> None:
    """200 records that arrived together, read 3 bytes at a time: every byte comes from
    what one ``recv_into`` brought (a record left unseen would block on the socket: the
    peer sends nothing more until it hears from us), and no read of the SSLObject comes
    back empty (each would be an ``SSLWantReadError``); then a keystroke's record costs
    one read of the socket and one of the SSLObject."""
    records = [b"%04d" % i * 3 for i in range(200)]
    listener = socket.create_server(("127.0.0.1", 0))
    errors: list[BaseException] = []

    def serve() -> None:
        raw, _ = listener.accept()
        raw.settimeout(10 * SCALE)  # a failed test must not leave this thread waiting
        try:
            with certs.server(certs.good).wrap_socket(raw, server_side=True) as conn:
                for record in records:
                    conn.sendall(record)  # one record each
                assert conn.recv(1) == b"x"
                conn.sendall(b"k")
                assert conn.recv(1) == b"y"
                with contextlib.suppress(OSError):
                    conn.unwrap()  # ours goes out; the client sends none
        except BaseException as exc:  # the test looks at it
            errors.append(exc)

    server = threading.Thread(target=serve)
    server.start()
    sock = socket.create_connection(listener.getsockname(), timeout=10 * SCALE)
    stream = blocking_tls.TlsStream(sock, certs.client(), "127.0.0.1")
    stream.handshake()
    want = b"".join(records)
    deadline = time.monotonic() + 10 * SCALE
    while len(sock.recv(65536, socket.MSG_PEEK)) < len(want) + 200 * 22:
        assert time.monotonic() < deadline, "the records never all came"
        time.sleep(0.01)
    counted = CountingSocket(sock)
    tls = CountingTls(stream._tls)  # type: ignore[arg-type]
    stream.sock, stream._tls = counted, tls  # type: ignore[assignment]
    buf = bytearray(3)
    got = bytearray()
    while len(got) < len(want):
        n = stream.recv_into(buf)
        assert n, "the stream ended early"
        got += buf[:n]
    assert got == want
    assert counted.reads == 1
    assert tls.empty <= 1  # the session tickets ahead of the data, at most
    stream.sendall(b"x")
    before = (counted.reads, tls.reads, tls.empty)
    assert stream.recv_into(buf) == 1 and buf[:1] == b"k"
    assert (counted.reads, tls.reads, tls.empty) == (before[0] + 1, before[1] + 1, before[2])
    stream.sendall(b"y")
    assert _read_all(stream) == b""  # close_notify
    stream.close()
    server.join(30 * SCALE)
    listener.close()
    assert not server.is_alive() and errors == []


def test_a_corrupted_record_is_refused_with_an_alert_after_the_bytes_before_it(
    certs: Pki,
) -> None:
    """The server's second record has a byte of its tag flipped: the client delivers the
    first record's bytes, then raises (an SSLError, every time it is asked again), and
    the server reads the client's alert, as from an SSLSocket."""
    listener = socket.create_server(("127.0.0.1", 0))
    seen: list[BaseException] = []

    def serve() -> None:
        raw, _ = listener.accept()
        raw.settimeout(10 * SCALE)  # a failed test must not leave this thread waiting
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls_ = certs.server(certs.good).wrap_bio(incoming, outgoing, server_side=True)

        def pump_in() -> bool:
            data = raw.recv(65536)
            if data:
                incoming.write(data)
            return bool(data)

        try:
            while True:
                try:
                    tls_.do_handshake()
                    break
                except ssl.SSLWantReadError:
                    raw.sendall(outgoing.read())
                    assert pump_in(), "the client left during the handshake"
            raw.sendall(outgoing.read())
            tls_.write(b"good bytes")
            raw.sendall(outgoing.read())
            tls_.write(b"tampered")
            record = bytearray(outgoing.read())
            record[-1] ^= 0x01  # the last byte of the AEAD tag
            raw.sendall(bytes(record))
            while pump_in():
                try:
                    tls_.read(65536)
                except ssl.SSLWantReadError:
                    continue
        except BaseException as exc:  # the client's alert (an SSLError), or a failure
            seen.append(exc)
        finally:
            raw.close()

    server = threading.Thread(target=serve)
    server.start()
    sock = socket.create_connection(listener.getsockname(), timeout=10 * SCALE)
    stream = blocking_tls.TlsStream(sock, certs.client(), "127.0.0.1")
    try:
        stream.handshake()
        got = bytearray()
        buf = bytearray(100)
        with pytest.raises(ssl.SSLError) as info:
            while len(got) <= 100:
                got += buf[: stream.recv_into(buf)]
        assert bytes(got) == b"good bytes"
        assert "BAD_RECORD_MAC" in str(info.value) or "DECRYPTION" in str(info.value).upper()
        with pytest.raises(ssl.SSLError):
            stream.recv_into(buf)  # and stays failed
    finally:
        stream.close()
        server.join(30 * SCALE)
        listener.close()
    assert not server.is_alive()
    assert len(seen) == 1 and isinstance(seen[0], ssl.SSLError), seen
    assert "ALERT_BAD_RECORD_MAC" in str(seen[0]), seen[0]


@pytest.mark.parametrize("finish", ["close_notify", "cut", "reset"])
def test_how_a_tls_stream_ends(certs: Pki, finish: str) -> None:
    """close_notify and a cut read as the end (an SSLSocket's suppress_ragged_eofs);
    a reset raises; the bytes before each are all delivered."""
    peer = TlsEchoPeer(certs, 1, finish=finish, send=b"before the end")
    stream = peer.connect(certs)
    stream.sendall(b"x")
    buf = bytearray(100)
    got = bytearray()
    if finish == "reset":
        with pytest.raises(ConnectionResetError):
            while n := stream.recv_into(buf):
                got += buf[:n]
        assert got in (b"", b"before the end")
    else:
        assert _read_all(stream) == b"before the end"
        assert stream.recv_into(buf) == 0  # and stays ended
    stream.close()
    peer.close()
    assert peer.error is None and peer.received == b"x"
