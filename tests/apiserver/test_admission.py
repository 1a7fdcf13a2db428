from __future__ import annotations

import copy

import pytest

from hatchway.apiserver.admission import (
    HOST_IPC,
    HOST_NETWORK,
    HOST_PID,
    PRIVILEGED,
    exec_admission,
    exec_forbidden_status,
    pod_escalation_reason,
)
from hatchway.apiserver.authn import AUTHENTICATED_GROUP, UserInfo
from hatchway.apiserver.rbac import RbacAuthorizer, RbacPolicy

ALICE = UserInfo("alice", ("dev", AUTHENTICATED_GROUP))
ROOT = UserInfo("root", ("system:masters", AUTHENTICATED_GROUP))

PLAIN = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "p", "namespace": "default"},
    "spec": {
        "containers": [
            {"name": "main", "image": "busybox", "securityContext": {"privileged": False}},
            {"name": "side", "image": "busybox"},
        ],
    },
}


def variant(mutate) -> dict:
    pod = copy.deepcopy(PLAIN)
    mutate(pod["spec"])
    return pod


def _priv(key: str):
    def mutate(spec):
        spec.setdefault(key, []).append(
            {"name": f"{key}-x", "image": "busybox", "securityContext": {"privileged": True}}
        )

    return mutate


CASES = {
    "hostNetwork": (variant(lambda s: s.update(hostNetwork=True)), HOST_NETWORK),
    "hostPID": (variant(lambda s: s.update(hostPID=True)), HOST_PID),
    "hostIPC": (variant(lambda s: s.update(hostIPC=True)), HOST_IPC),
    "privileged container": (
        variant(lambda s: s["containers"][1].update(securityContext={"privileged": True})),
        PRIVILEGED,
    ),
    "privileged initContainer": (variant(_priv("initContainers")), PRIVILEGED),
    "privileged ephemeralContainer": (variant(_priv("ephemeralContainers")), PRIVILEGED),
}


@pytest.mark.parametrize("case", list(CASES))
def test_escalating_pods_are_refused_for_non_admins(case) -> None:
    pod, reason = CASES[case]
    assert exec_admission(pod, ALICE, is_admin=False) == reason
    assert pod_escalation_reason(pod) == reason


@pytest.mark.parametrize("case", list(CASES))
def test_escalating_pods_are_admitted_for_admins(case) -> None:
    pod, _ = CASES[case]
    assert exec_admission(pod, ROOT, is_admin=True) is None


def test_plain_pod_admitted_for_everyone() -> None:
    assert exec_admission(PLAIN, ALICE, is_admin=False) is None
    assert exec_admission(PLAIN, ROOT, is_admin=True) is None
    assert exec_admission({"metadata": {"name": "bare"}}, ALICE, is_admin=False) is None


def test_false_or_odd_values_do_not_trip() -> None:
    pod = variant(
        lambda s: s.update(
            hostNetwork=False,
            hostPID=False,
            hostIPC=None,
            initContainers=[{"name": "i", "securityContext": None}],
        )
    )
    assert exec_admission(pod, ALICE, is_admin=False) is None


def test_order_of_checks_matches_upstream() -> None:
    pod = variant(lambda s: s.update(hostIPC=True, hostPID=True, hostNetwork=True))
    _priv("containers")(pod["spec"])
    assert pod_escalation_reason(pod) == HOST_NETWORK
    pod["spec"]["hostNetwork"] = False
    assert pod_escalation_reason(pod) == HOST_PID
    pod["spec"]["hostPID"] = False
    assert pod_escalation_reason(pod) == HOST_IPC
    pod["spec"]["hostIPC"] = False
    assert pod_escalation_reason(pod) == PRIVILEGED


def test_forbidden_status_text() -> None:
    pod, reason = CASES["privileged container"]
    status = exec_forbidden_status(pod, reason)
    assert status == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'pods "p" is forbidden: cannot exec into or attach to a privileged container',
        "reason": "Forbidden",
        "details": {"name": "p", "kind": "pods"},
        "code": 403,
    }
    assert list(status) == [
        "kind",
        "apiVersion",
        "metadata",
        "status",
        "message",
        "reason",
        "details",
        "code",
    ]
    host = exec_forbidden_status(CASES["hostPID"][0], HOST_PID)
    assert (
        host["message"] == 'pods "p" is forbidden: cannot exec into or attach to a '
        "container using host pid"
    )


async def test_with_rbac_cluster_admin_decision() -> None:
    """The intended wiring: is_admin comes from RbacAuthorizer.is_cluster_admin."""
    binding = {
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "ops"},
        "roleRef": {"kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [{"kind": "User", "name": "opsbob"}],
    }
    ns_binding = {
        "kind": "RoleBinding",
        "metadata": {"name": "a", "namespace": "default"},
        "roleRef": {"kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "User", "name": "alice"}],
    }
    authz = RbacAuthorizer(RbacPolicy.defaults(binding, ns_binding))
    pod, reason = CASES["privileged container"]
    opsbob = UserInfo("opsbob", (AUTHENTICATED_GROUP,))
    for who, expected in ((opsbob, None), (ROOT, None), (ALICE, reason)):
        assert exec_admission(pod, who, await authz.is_cluster_admin(who)) == expected
