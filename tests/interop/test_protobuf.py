"""kubectl 1.32+ generators send protobuf bodies (issue 12): ``create namespace|role|
clusterrole|rolebinding|clusterrolebinding`` and ``debug --copy-to`` post
``application/vnd.kubernetes.protobuf`` from typed client-go clients. Each object made
is read back with ``kubectl get -o json`` and checked field by field. On a server that
answers such bodies 415 every test here fails."""

from __future__ import annotations

import json
import pathlib
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from cluster import Cluster
from interop.support import Kubectl, Pods, kubectl_binary, write_user_kubeconfig

pytestmark = pytest.mark.runc

#: The bundled kubectl versions whose generators use protobuf.
PROTOBUF_VERSIONS = ("1.32", "1.33")
RBAC = "rbac.authorization.k8s.io"


@pytest.fixture(params=PROTOBUF_VERSIONS)
def kubectl_pb(
    request: pytest.FixtureRequest, cluster: Cluster, kubectl_homes: dict[str, pathlib.Path]
) -> Kubectl:
    binary = kubectl_binary(request.param)
    if binary is None:
        pytest.skip(f"kubectl.{request.param} is not installed")
    return Kubectl(request.param, "ws", binary, cluster, kubectl_homes[request.param])


def _name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def _ok(result: Any) -> str:
    assert result.returncode == 0, result.stderr.decode()
    return str(result.stdout.decode())


def _get(kubectl: Kubectl, *what: str) -> dict[str, Any]:
    return json.loads(_ok(kubectl("get", *what, "-o", "json")))  # type: ignore[no-any-return]


@pytest.fixture
def cleanup(cluster: Cluster) -> Iterator[list[tuple[str, ...]]]:
    made: list[tuple[str, ...]] = []
    yield made
    for what in made:
        cluster.kubectl("delete", *what, "--wait=false", "--ignore-not-found")


def test_create_namespace(kubectl_pb: Kubectl, cleanup: list[tuple[str, ...]]) -> None:
    name = _name("pb-ns")
    cleanup.append(("namespace", name))
    assert _ok(kubectl_pb("create", "namespace", name)).strip() == f"namespace/{name} created"
    ns = _get(kubectl_pb, "namespace", name)
    assert ns["apiVersion"] == "v1" and ns["kind"] == "Namespace"
    assert ns["metadata"]["name"] == name and ns["metadata"]["uid"]
    assert ns["metadata"]["creationTimestamp"].endswith("Z")
    assert ns["status"] == {"phase": "Active"}
    # The namespace is usable: a service account is made in it (also protobuf).
    sa = _ok(kubectl_pb("create", "serviceaccount", "robot", "-n", name)).strip()
    assert sa == "serviceaccount/robot created"
    assert _get(kubectl_pb, "serviceaccount", "robot", "-n", name)["metadata"]["namespace"] == name


def test_create_role_and_rolebinding(
    kubectl_pb: Kubectl, cleanup: list[tuple[str, ...]], tmp_path: pathlib.Path
) -> None:
    role, binding = _name("pb-role"), _name("pb-rb")
    cleanup += [("role", role), ("rolebinding", binding)]
    made = kubectl_pb(
        "create", "role", role, "--verb=get,list", "--resource=pods,pods/log",
        "--resource-name=a", "--resource-name=b",
    )  # fmt: skip
    assert _ok(made).strip() == f"role.{RBAC}/{role} created"
    stored = _get(kubectl_pb, "role", role)
    assert stored["apiVersion"] == f"{RBAC}/v1" and stored["kind"] == "Role"
    assert stored["metadata"]["namespace"] == "default"
    assert stored["rules"] == [
        {
            "apiGroups": [""],
            "resources": ["pods", "pods/log"],
            "resourceNames": ["a", "b"],
            "verbs": ["get", "list"],
        }
    ]
    made = kubectl_pb(
        "create", "rolebinding", binding, f"--role={role}", "--user=bob", "--user=eve",
        "--group=devs", "--serviceaccount=default:robot",
    )  # fmt: skip
    assert _ok(made).strip() == f"rolebinding.{RBAC}/{binding} created"
    stored = _get(kubectl_pb, "rolebinding", binding)
    assert stored["roleRef"] == {"apiGroup": RBAC, "kind": "Role", "name": role}
    assert stored["subjects"] == [
        {"apiGroup": RBAC, "kind": "User", "name": "bob"},
        {"apiGroup": RBAC, "kind": "User", "name": "eve"},
        {"apiGroup": RBAC, "kind": "Group", "name": "devs"},
        {"kind": "ServiceAccount", "name": "robot", "namespace": "default"},
    ]
    # The binding is in force, as decoded: bob may get pods a and b, and nothing else.
    bob = write_user_kubeconfig(kubectl_pb.cluster, "bob", tmp_path / "bob.kubeconfig")
    named = kubectl_pb("get", "pod", "a", kubeconfig=bob)
    assert b"NotFound" in named.stderr, named.stderr
    other = kubectl_pb("get", "pod", "c", kubeconfig=bob)
    assert b"forbidden" in other.stderr, other.stderr


def test_create_clusterrole_and_binding(
    kubectl_pb: Kubectl, cleanup: list[tuple[str, ...]]
) -> None:
    role, aggregate, binding = _name("pb-cr"), _name("pb-agg"), _name("pb-crb")
    cleanup += [("clusterrole", role), ("clusterrole", aggregate), ("clusterrolebinding", binding)]
    made = kubectl_pb(
        "create", "clusterrole", role, "--verb=get", "--resource=nodes",
        "--non-resource-url=/logs/*",
    )  # fmt: skip
    assert _ok(made).strip() == f"clusterrole.{RBAC}/{role} created"
    stored = _get(kubectl_pb, "clusterrole", role)
    assert stored["kind"] == "ClusterRole" and "namespace" not in stored["metadata"]
    assert stored["rules"] == [
        {"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]},
        {"nonResourceURLs": ["/logs/*"], "verbs": ["get"]},
    ]
    made = kubectl_pb("create", "clusterrole", aggregate, "--aggregation-rule=example.com/agg=true")
    assert _ok(made).strip() == f"clusterrole.{RBAC}/{aggregate} created"
    stored = _get(kubectl_pb, "clusterrole", aggregate)
    assert stored["aggregationRule"] == {
        "clusterRoleSelectors": [{"matchLabels": {"example.com/agg": "true"}}]
    }
    made = kubectl_pb(
        "create", "clusterrolebinding", binding, f"--clusterrole={role}", "--group=ops"
    )
    assert _ok(made).strip() == f"clusterrolebinding.{RBAC}/{binding} created"
    stored = _get(kubectl_pb, "clusterrolebinding", binding)
    assert stored["roleRef"] == {"apiGroup": RBAC, "kind": "ClusterRole", "name": role}
    assert stored["subjects"] == [{"apiGroup": RBAC, "kind": "Group", "name": "ops"}]


def test_debug_copy_to(
    cluster: Cluster, kubectl_pb: Kubectl, pods: Pods, cleanup: list[tuple[str, ...]]
) -> None:
    copy = _name("pb-copy")
    cleanup.append(("pod", copy))
    made = kubectl_pb(
        "debug", pods.simple, f"--copy-to={copy}", "--image=busybox", "--container=dbg",
        "--", "sleep", "3600",
    )  # fmt: skip
    _ok(made)
    original = _get(kubectl_pb, "pod", pods.simple)
    stored = cluster.wait_phase(copy)
    containers = {c["name"]: c for c in stored["spec"]["containers"]}
    assert set(containers) == {"main", "dbg"}
    assert containers["dbg"]["image"] == "busybox"
    assert containers["dbg"]["command"] == ["sleep", "3600"]
    # The copy keeps the original container as it was, env and all.
    main = original["spec"]["containers"][0]
    for key in ("image", "command", "env", "imagePullPolicy", "terminationMessagePath"):
        assert containers["main"][key] == main[key], key
    assert stored["spec"]["terminationGracePeriodSeconds"] == 1
    # And runs: the debug container is a real process in it.
    ran = kubectl_pb("exec", copy, "-c", "dbg", "--", "echo", "copied")
    assert _ok(ran) == "copied\n"


#: Generators and their arguments; each is run by a JSON-sending kubectl (1.31) and the
#: protobuf-sending ones with --dry-run=server, and the answers compared.
GENERATORS = [
    ("namespace", "NAME"),
    ("serviceaccount", "NAME"),
    ("role", "NAME", "--verb=get,watch", "--resource=pods,nodes", "--resource-name=x"),
    ("clusterrole", "NAME", "--verb=*", "--non-resource-url=/healthz", "--resource=pods"),
    ("clusterrole", "NAME", "--aggregation-rule=a=b,c=d"),
    ("rolebinding", "NAME", "--clusterrole=view", "--user=u", "--serviceaccount=default:s"),
    ("clusterrolebinding", "NAME", "--clusterrole=edit", "--group=g1", "--group=g2"),
]
#: What the server fills in differently each time.
VOLATILE = ("uid", "creationTimestamp", "managedFields", "resourceVersion")


def _dry_run(kubectl: Kubectl, name: str, generator: tuple[str, ...]) -> dict[str, Any]:
    args = [a.replace("NAME", name) for a in generator]
    answer = json.loads(_ok(kubectl("create", *args, "--dry-run=server", "-o", "json")))
    for key in VOLATILE:
        answer["metadata"].pop(key, None)
    return answer  # type: ignore[no-any-return]


@pytest.mark.parametrize("generator", GENERATORS, ids=lambda g: "-".join(g[:2]))
def test_protobuf_and_json_bodies_make_the_same_object(
    cluster: Cluster, kubectl_homes: dict[str, pathlib.Path], generator: tuple[str, ...]
) -> None:
    """The decoded protobuf is the JSON the same request carries: the would-be objects of
    a server dry run are equal whichever encoding kubectl used."""
    binary = kubectl_binary("1.31")
    if binary is None:
        pytest.skip("kubectl.1.31 is not installed")
    json_kubectl = Kubectl("1.31", "ws", binary, cluster, kubectl_homes["1.31"])
    name = _name("pb-eq")
    expected = _dry_run(json_kubectl, name, generator)
    for version in PROTOBUF_VERSIONS:
        found = kubectl_binary(version)
        if found is None:
            continue
        pb = Kubectl(version, "ws", found, cluster, kubectl_homes[version])
        assert _dry_run(pb, name, generator) == expected, version


def _rich_pod(name: str) -> dict[str, Any]:
    """A pod using much of PodSpec: what ``debug --copy-to`` copies, field for field."""
    main = {
        "name": "main",
        "image": "busybox",
        "command": ["sleep", "3600"],
        "args": ["--", "x"],
        "workingDir": "/tmp",
        "env": [
            {"name": "A", "value": "1"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
        "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
        "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}, "requests": {"cpu": "1m"}},
        "volumeMounts": [{"name": "scratch", "mountPath": "/scratch", "readOnly": True}],
        "livenessProbe": {"exec": {"command": ["true"]}, "periodSeconds": 30},
        "readinessProbe": {"httpGet": {"path": "/", "port": "http"}, "failureThreshold": 9},
        "startupProbe": {"tcpSocket": {"port": 8080}, "initialDelaySeconds": 1},
        "securityContext": {"allowPrivilegeEscalation": False, "runAsNonRoot": False},
        "stdin": True,
        "tty": True,
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    spec = {
        "containers": [main],
        "initContainers": [{"name": "init", "image": "busybox", "command": ["true"]}],
        "volumes": [{"name": "scratch", "emptyDir": {"sizeLimit": "1Mi"}}],
        "restartPolicy": "OnFailure",
        "terminationGracePeriodSeconds": 1,
        "activeDeadlineSeconds": 3600,
        "hostname": "rich",
        "subdomain": "sub",
        "securityContext": {"runAsUser": 0, "supplementalGroups": [1, 2], "fsGroup": 3},
        "tolerations": [
            {"key": "k", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 5}
        ],
        "priority": 0,
        "enableServiceLinks": False,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "annotations": {"note": "rich"}},
        "spec": spec,
    }


#: What differs between two copies of one pod made a moment apart.
POD_VOLATILE = ("uid", "creationTimestamp", "managedFields", "resourceVersion", "name")


def test_debug_copy_of_a_rich_pod_is_the_same_from_protobuf_and_json(
    cluster: Cluster, kubectl_homes: dict[str, pathlib.Path], cleanup: list[tuple[str, ...]]
) -> None:
    """kubectl 1.31 posts the copy as JSON, 1.32/1.33 as protobuf: the stored copies are
    equal, so every PodSpec field the copy carries was decoded as its JSON."""
    original = _name("pb-rich")
    cleanup.append(("pod", original))
    cluster.apply_pod(_rich_pod(original))
    copies: dict[str, dict[str, Any]] = {}
    for version in ("1.31", *PROTOBUF_VERSIONS):
        binary = kubectl_binary(version)
        if binary is None:
            pytest.skip(f"kubectl.{version} is not installed")
        kubectl = Kubectl(version, "ws", binary, cluster, kubectl_homes[version])
        copy = _name(f"pb-copy{version.replace('.', '')}")
        cleanup.append(("pod", copy))
        made = kubectl(
            "debug", original, f"--copy-to={copy}", "--image=busybox", "--container=dbg",
            "--", "sleep", "3600",
        )  # fmt: skip
        _ok(made)
        stored = _get(kubectl, "pod", copy)
        for key in POD_VOLATILE:
            stored["metadata"].pop(key, None)
        stored["spec"].pop("nodeName", None)  # set by the scheduler, when it has run
        stored.pop("status", None)
        copies[version] = stored
    assert copies["1.31"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["port"] == "http"
    assert copies["1.31"]["spec"]["volumes"][0]["emptyDir"] == {"sizeLimit": "1Mi"}
    for version in PROTOBUF_VERSIONS:
        assert copies[version] == copies["1.31"], version
