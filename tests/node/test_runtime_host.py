"""Host-side helpers: Localhost seccomp profiles from the node's profile root, rlimits."""

from __future__ import annotations

import json
import os
import resource

import pytest

from hatchway.node import runtime_host
from hatchway.node.runtime_spec import SpecError

PROFILE = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}],
}


def asking(name, **sc):
    container = {"name": "c", "securityContext": {
        "seccompProfile": {"type": "Localhost", "localhostProfile": name}, **sc}}  # fmt: skip
    return {"spec": {"containers": [container]}}, container


@pytest.fixture
def root(tmp_path):
    d = tmp_path / "seccomp"
    (d / "team").mkdir(parents=True)
    (d / "team" / "deny-mkdir.json").write_text(json.dumps(PROFILE))
    (tmp_path / "outside.json").write_text(json.dumps(PROFILE))
    return d


def test_a_profile_under_the_root_is_loaded(root):
    load = runtime_host.load_localhost_profile
    assert load(str(root), *asking("team/deny-mkdir.json")) == PROFILE
    assert load(str(root), *asking("./team/deny-mkdir.json")) == PROFILE


def test_other_types_and_privileged_load_nothing(root):
    c = {"name": "c"}
    assert runtime_host.load_localhost_profile(str(root), {"spec": {}}, c) is None
    assert runtime_host.load_localhost_profile(str(root), *asking("nope", privileged=True)) is None


@pytest.mark.parametrize(
    ("name", "why"),
    [
        ("missing.json", "No such file"),
        ("../outside.json", "relative path"),
        ("/etc/hostname", "relative path"),
        ("link.json", "leaves"),
        ("team", "Is a directory"),
        ("bad.json", "Expecting property name"),
        ("big.json", "too large"),
    ],
)
def test_what_cannot_be_loaded_is_a_spec_error(root, name, why):
    os.symlink(root.parent / "outside.json", root / "link.json")
    (root / "bad.json").write_text("{nope")
    (root / "big.json").write_bytes(b" " * (runtime_host.MAX_PROFILE_BYTES + 1))
    with pytest.raises(SpecError, match=why) as info:
        runtime_host.load_localhost_profile(str(root), *asking(name))
    assert str(info.value).startswith("failed to generate seccomp security profile")


def test_nofile_limit_is_the_agents_own_hard_limit():
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    expected = 1048576 if hard == resource.RLIM_INFINITY else hard
    assert runtime_host.host_nofile_limit() == expected
