"""Audit that cannot be dodged, against the real cluster with the real kubectl: the
attacker's exec is recorded when it starts (the command's digest matching the argv the
container really got, nothing silently cut, no secret), its end carries the exit code the
node reported, and an exec refused by admission is a denial with its reason."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any

import pytest

from cluster import SCALE, Cluster
from interop.support import kubectl_binary

from .conftest import Attacker, pod_manifest

PRIVILEGED = "cannot exec into or attach to a privileged container"


def audit_lines(cluster: Cluster) -> list[dict[str, Any]]:
    """The API server's audit log (``hatchway up`` leaves it at DATA_DIR/audit.log)."""
    text = (cluster.data_dir / "audit.log").read_text()
    return [json.loads(line) for line in text.splitlines()]


def session_lines(cluster: Cluster, marker: str) -> tuple[dict[str, Any], dict[str, Any], int]:
    """The start and end lines of the one session whose command holds ``marker``, and
    where the start line is in the log relative to the end line (start index - end)."""
    deadline = time.monotonic() + 20 * SCALE
    while True:
        lines = audit_lines(cluster)
        starts = [
            (i, x)
            for i, x in enumerate(lines)
            if x["type"] == "session_start" and marker in x["command"]
        ]
        if len(starts) == 1:
            at, start = starts[0]
            ends = [
                (i, x)
                for i, x in enumerate(lines)
                if x["type"] == "session_end" and x["request_id"] == start["request_id"]
            ]
            if ends:
                (end_at, end), *more = ends
                assert not more, ends
                return start, end, at - end_at
        assert time.monotonic() < deadline, [x for x in lines if x["type"] != "request"]
        time.sleep(0.1)


def nul_sha256(argv: list[str]) -> str:
    return hashlib.sha256(b"".join(a.encode() + b"\0" for a in argv)).hexdigest()


@pytest.fixture(scope="module")
def pod(attacker: Attacker) -> str:
    name = f"audited-{uuid.uuid4().hex[:6]}"
    result = attacker.create(pod_manifest(name, attacker.namespace))
    assert result.returncode == 0, result.stderr.decode()
    attacker.cluster.wait_phase(name, namespace=attacker.namespace)
    return name


@pytest.mark.parametrize("version", ["", "1.27"])  # the default kubectl: WebSocket; 1.27: SPDY
def test_exit_code_reaches_the_end_line(attacker: Attacker, pod: str, version: str) -> None:
    binary = str(kubectl_binary(version) or "") if version else "kubectl"
    if not binary:
        pytest.skip(f"kubectl.{version} is not installed")
    marker = f"m-{uuid.uuid4().hex[:8]}"
    argv = ["sh", "-c", "exit 42", marker]
    result = attacker.kubectl("exec", pod, "--", *argv, binary=binary)
    assert result.returncode == 42, result.stderr.decode()
    start, end, order = session_lines(attacker.cluster, marker)
    assert order < 0, "the start line must come before the end line"
    assert (start["user"], start["namespace"], start["name"]) == (
        attacker.name,
        attacker.namespace,
        pod,
    )
    assert start["code"] == 101 and start["command"] == argv
    assert start["command_sha256"] == end["command_sha256"] == nul_sha256(argv)
    uid = attacker.get("pod", pod)["metadata"]["uid"]
    assert start["pod_uid"] == end["pod_uid"] == uid
    assert end["exit_code"] == 42, end


#: What the HTTP layers take in a request head (64 KiB) bounds a command in the URL.
BIG = 40 * 1024


def test_a_huge_argument_and_a_secret(attacker: Attacker, pod: str) -> None:
    """The digest is that of the argv the container's process really has (its
    /proc/PID/cmdline, hashed inside the container), the long argument is cut with a
    mark that says how much, and the password is nowhere in the log."""
    marker = f"m-{uuid.uuid4().hex[:8]}"
    big = "A" * BIG
    argv = ["sh", "-c", "sha256sum /proc/$$/cmdline", marker, big, "--password", "hunter2"]
    result = attacker.kubectl("exec", pod, "--", *argv)
    assert result.returncode == 0, result.stderr.decode()
    inside = result.stdout.decode().split()[0]
    start, end, _ = session_lines(attacker.cluster, marker)
    assert start["command_sha256"] == inside == nul_sha256(argv)
    assert start["command_args"] == end["command_args"] == len(argv)
    shown = start["command"]
    assert shown[:4] == argv[:4] and shown[5:] == ["--password", "[REDACTED]"]
    prefix, _, mark = shown[4].partition("\u2026")
    assert big.startswith(prefix) and mark == f"[+{len(big) - len(prefix)} chars]"
    assert "hunter2" not in (attacker.cluster.data_dir / "audit.log").read_text()
    assert end["exit_code"] == 0


def test_a_refused_exec_is_a_denial(attacker: Attacker) -> None:
    cluster = attacker.cluster
    name = f"priv-{uuid.uuid4().hex[:6]}"
    cluster.apply_pod(pod_manifest(name, attacker.namespace, securityContext={"privileged": True}))
    cluster.wait_phase(name, namespace=attacker.namespace)
    result = attacker.kubectl("exec", name, "--", "true")
    assert result.returncode != 0
    assert PRIVILEGED in result.stderr.decode()
    denials = [
        x
        for x in audit_lines(cluster)
        if x["type"] == "request" and x["resource"] == "pods/exec" and x["name"] == name
    ]
    assert denials, "the refusal is not in the audit log"
    assert all(x["decision"] == "deny" and x["code"] == 403 for x in denials), denials
    assert denials[-1]["reason"] == f'pods "{name}" is forbidden: {PRIVILEGED}'
    assert not [
        x for x in audit_lines(cluster) if x["type"] == "session_start" and x["name"] == name
    ]
