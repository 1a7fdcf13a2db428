"""The client commands against a real local cluster: get (pods, nodes, namespaces,
service accounts, events, leases), create/apply/delete -f, run, logs, auth can-i,
config, image import, help and usage errors."""

from __future__ import annotations

import io
import json
import pathlib
import tarfile
import time
import uuid

import pytest
import yaml

from cluster import SCALE, Cluster


def _uid() -> str:
    return uuid.uuid4().hex[:6]


def ok(result) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode == 0, (result.stdout, result.stderr)
    return str(result.stdout.decode())


def fails(result, *fragments: str) -> str:  # type: ignore[no-untyped-def]
    err = str(result.stderr.decode())
    assert result.returncode == 1, (result.stdout, err)
    for fragment in fragments:
        assert fragment in err
    assert "Traceback" not in err
    return err


def _cells(text: str) -> list[list[str]]:
    return [line.split() for line in text.splitlines()]


@pytest.fixture(scope="module")
def pod(cluster: Cluster) -> str:
    """One running pod for the read-only tests."""
    return cluster.pod()


# --------------------------------------------------------------------------------- get


def test_get_table_like_kubectl(cluster: Cluster, pod: str) -> None:
    table = _cells(ok(cluster.hatchway("get", "pods")))
    assert table[0] == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert [pod, "1/1", "Running", "0"] in [row[:4] for row in table[1:]]
    # same header spacing as kubectl, and the same rows apart from the age column
    ours = ok(cluster.hatchway("get", "po", pod, "-o", "wide")).splitlines()
    theirs = cluster.kubectl("get", "po", pod, "-o", "wide").stdout.decode().splitlines()
    assert ours[0] == theirs[0]
    assert ours[1].split()[:4] == theirs[1].split()[:4]
    assert ours[1].split()[5:] == theirs[1].split()[5:]
    assert cluster.node_name in ours[1].split()
    everywhere = _cells(ok(cluster.hatchway("get", "pods", "-A")))
    assert everywhere[0][:2] == ["NAMESPACE", "NAME"]
    assert ["default", pod] in [row[:2] for row in everywhere]
    nodes = _cells(ok(cluster.hatchway("get", "no")))
    assert nodes[1][:2] == [cluster.node_name, "Ready"]
    both = ok(cluster.hatchway("get", "pods,ns"))
    assert f"pod/{pod}" in both and "namespace/default" in both


def test_get_output_formats(cluster: Cluster, pod: str) -> None:
    assert ok(cluster.hatchway("get", f"pod/{pod}", "-o", "name")) == f"pod/{pod}\n"
    names = ok(cluster.hatchway("get", "pods", "-o", "name"))
    assert names == cluster.kubectl("get", "pods", "-o", "name").stdout.decode()
    single = json.loads(ok(cluster.hatchway("get", "pod", pod, "-o", "json")))
    assert single["kind"] == "Pod" and single["metadata"]["name"] == pod
    listing = yaml.safe_load(ok(cluster.hatchway("get", "pods", "-o", "yaml")))
    assert listing["kind"] == "List"
    assert all(item["kind"] == "Pod" for item in listing["items"])
    template = '{range .items[*]}{.metadata.name}={.status.phase}{"\\n"}{end}'
    lines = ok(cluster.hatchway("get", "pods", "-o", f"jsonpath={template}")).splitlines()
    assert f"{pod}=Running" in lines
    one = ok(cluster.hatchway("get", "pod", pod, "-o", "jsonpath={.spec.containers[0].name}"))
    assert one == "main"


def test_get_label_selector(cluster: Cluster) -> None:
    tag = _uid()
    ok(
        cluster.hatchway(
            "run", f"lab-{tag}", "--image", "busybox", "--labels", f"t={tag}", "--", "sleep", "3600"
        )
    )
    assert ok(cluster.hatchway("get", "pods", "-l", f"t={tag}", "-o", "name")) == (
        f"pod/lab-{tag}\n"
    )
    shown = ok(cluster.hatchway("get", "pods", "-l", f"t={tag}", "--show-labels"))
    assert shown.splitlines()[0].endswith("LABELS") and f"t={tag}" in shown
    empty = cluster.hatchway("get", "pods", "-l", "t=none-such")
    assert ok(empty) == ""
    assert empty.stderr.decode() == "No resources found in default namespace.\n"


def test_get_errors(cluster: Cluster) -> None:
    fails(cluster.hatchway("get", "pods", "nope"), 'Error from server (NotFound): pods "nope"')
    fails(cluster.hatchway("get", "gizmos"), 'the server doesn\'t have a resource type "gizmos"')
    fails(cluster.hatchway("get", "pods", "-o", "xml"), "unable to match a printer")
    err = fails(cluster.hatchway("get", "--bogus"), "unrecognized arguments")
    assert "See 'hatchway get -h'" in err
    assert ok(cluster.hatchway("get", "pods", "nope", "--ignore-not-found")) == ""


def test_get_serviceaccounts_events_and_leases(cluster: Cluster, pod: str) -> None:
    """The types beyond pods, nodes and RBAC, by every name kubectl knows them by, with
    the same names as kubectl's and the same table header."""
    for words in (["sa"], ["serviceaccounts"], ["serviceaccount", "default"]):
        assert "serviceaccount/default\n" in ok(cluster.hatchway("get", *words, "-o", "name"))
    table = ok(cluster.hatchway("get", "sa")).splitlines()
    assert table[0] == cluster.kubectl("get", "sa").stdout.decode().splitlines()[0]
    assert ["default"] in [row.split()[:1] for row in table[1:]]
    account = json.loads(ok(cluster.hatchway("get", "sa", "default", "-o", "json")))
    assert (account["apiVersion"], account["kind"]) == ("v1", "ServiceAccount")

    # the pod's own events (scheduled, started): the same as kubectl lists
    where = ["--field-selector", f"involvedObject.name={pod}"]
    theirs = set(cluster.kubectl("get", "events", *where, "-o", "name").stdout.decode().split())
    assert theirs
    ours = set(ok(cluster.hatchway("get", "ev", "-o", "name")).split())
    assert theirs <= ours and all(name.startswith("event/") for name in ours)
    listing = yaml.safe_load(ok(cluster.hatchway("get", "events", "-o", "yaml")))
    assert {item["kind"] for item in listing["items"]} == {"Event"}

    # the node agent's heartbeat Lease in kube-node-lease
    lease = f"lease.coordination.k8s.io/{cluster.node_name}\n"
    for word in ("lease", "leases", "leases.coordination.k8s.io"):
        names = ok(cluster.hatchway("get", word, "-n", "kube-node-lease", "-o", "name"))
        assert lease in names
    assert (
        names
        == cluster.kubectl("get", "leases", "-n", "kube-node-lease", "-o", "name").stdout.decode()
    )
    table = ok(cluster.hatchway("get", "leases", "-n", "kube-node-lease")).splitlines()
    assert table[0].split() == ["NAME", "HOLDER", "AGE"]
    assert [cluster.node_name, cluster.node_name] in [row.split()[:2] for row in table[1:]]
    everywhere = _cells(ok(cluster.hatchway("get", "leases", "-A")))
    assert everywhere[0][:2] == ["NAMESPACE", "NAME"]
    assert ["kube-node-lease", cluster.node_name] in [row[:2] for row in everywhere]
    fails(cluster.hatchway("get", "leasez"), 'the server doesn\'t have a resource type "leasez"')


def test_leases_from_manifests(cluster: Cluster, tmp_path: pathlib.Path) -> None:
    """A Lease is created, applied and deleted from a file like the other types."""
    name = f"lock-{_uid()}"
    manifest = tmp_path / "lease.yaml"
    lease = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name},
        "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15},
    }
    manifest.write_text(yaml.safe_dump(lease))
    assert ok(cluster.hatchway("create", "-f", str(manifest))) == (
        f"lease.coordination.k8s.io/{name} created\n"
    )
    lease["spec"]["holderIdentity"] = "you"
    manifest.write_text(yaml.safe_dump(lease))
    assert ok(cluster.hatchway("apply", "-f", str(manifest))) == (
        f"lease.coordination.k8s.io/{name} configured\n"
    )
    got = json.loads(ok(cluster.hatchway("get", f"lease/{name}", "-o", "json")))
    assert got["spec"]["holderIdentity"] == "you"
    assert ok(cluster.hatchway("delete", "lease", name)) == (
        f'lease.coordination.k8s.io "{name}" deleted\n'
    )
    fails(cluster.hatchway("get", "lease", name), "(NotFound)")


# ------------------------------------------------------------- create, apply, delete


def _manifests(ns: str, pod: str) -> str:
    namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
    items = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": pod, "namespace": ns, "labels": {"app": "one"}},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "9"]}],
                },
            },
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": "viewers", "namespace": ns},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": "view",
                },
                "subjects": [{"kind": "Group", "name": "viewers"}],
            },
        ],
    }
    return yaml.safe_dump(namespace) + "---\n" + json.dumps(items)


def test_create_apply_delete(cluster: Cluster, tmp_path: pathlib.Path) -> None:
    ns, pod = f"ns-{_uid()}", "web"
    text = _manifests(ns, pod)
    created = ok(cluster.hatchway("create", "-f", "-", input=text.encode()))
    assert created.splitlines() == [
        f"namespace/{ns} created",
        f"pod/{pod} created",
        "rolebinding.rbac.authorization.k8s.io/viewers created",
    ]
    again = cluster.hatchway("create", "-f", "-", input=text.encode())
    fails(again, f'Error from server (AlreadyExists): error when creating "STDIN": pods "{pod}"')
    path = tmp_path / "all.yaml"
    path.write_text(text)
    applied = ok(cluster.hatchway("apply", "-f", str(path)))
    assert applied.splitlines()[1] == f"pod/{pod} configured"  # gains last-applied
    assert ok(cluster.hatchway("apply", "-f", str(path))).splitlines() == [
        f"namespace/{ns} unchanged",
        f"pod/{pod} unchanged",
        "rolebinding.rbac.authorization.k8s.io/viewers unchanged",
    ]
    path.write_text(text.replace('"one"', '"two"'))
    assert f"pod/{pod} configured" in ok(cluster.hatchway("apply", "-f", str(path)))
    assert cluster.get("pod", pod, "-n", ns)["metadata"]["labels"] == {"app": "two"}
    kubectl = cluster.kubectl("apply", "--validate=false", "-f", str(path))
    assert "missing the kubectl.kubernetes.io/last-applied" not in kubectl.stderr.decode()
    fails(cluster.hatchway("apply", "-n", "elsewhere", "-f", str(path)), "does not match")
    deleted = ok(cluster.hatchway("delete", "pod", pod, "-n", ns, "--now"))
    assert deleted == f'pod "{pod}" deleted\n'
    assert cluster.kubectl("get", "pod", pod, "-n", ns).returncode == 1  # --wait: gone
    out = ok(cluster.hatchway("delete", "-f", str(path), "--ignore-not-found"))
    assert f'namespace "{ns}" deleted' in out


def test_apply_creates_and_delete_errors(cluster: Cluster, tmp_path: pathlib.Path) -> None:
    name = f"ap-{_uid()}"
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "c", "image": "busybox", "command": ["sleep", "9"]}]},
    }
    (tmp_path / "pod.json").write_text(json.dumps(manifest))
    (tmp_path / "notes.txt").write_text("not a manifest")
    assert ok(cluster.hatchway("apply", "-f", str(tmp_path))) == f"pod/{name} created\n"
    fails(cluster.hatchway("delete", "pod", "nope"), 'pods "nope" not found')
    fails(cluster.hatchway("delete", "pods"), "no name was specified")
    fails(cluster.hatchway("create", "-f", str(tmp_path / "missing.yaml")), "does not exist")
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n")
    fails(cluster.hatchway("create", "-f", str(bad)), 'no matches for kind "Deployment"')
    bad.write_text("kind: [unclosed\n")
    fails(cluster.hatchway("create", "-f", str(bad)), "error parsing")
    t0 = time.monotonic()
    ok(cluster.hatchway("delete", "pod", name, "--grace-period", "0", "--force", "--wait=false"))
    assert time.monotonic() - t0 < 10 * SCALE


# ---------------------------------------------------------------------- run and logs


def test_run_and_logs(cluster: Cluster) -> None:
    name = f"run-{_uid()}"
    script = "echo $GREETING; i=0; while [ $i -lt 3 ]; do echo line$i; i=$((i+1)); sleep 0.3; done"
    created = cluster.hatchway(
        "run",
        name,
        "--image",
        "busybox",
        "--restart",
        "Never",
        "--env",
        "GREETING=hi",
        "--",
        "sh",
        "-c",
        script,
    )
    assert ok(created) == f"pod/{name} created\n"
    pod = cluster.get("pod", name)
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["sh", "-c", script]
    assert container["env"] == [{"name": "GREETING", "value": "hi"}]
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["metadata"]["labels"] == {"run": name}
    cluster.wait_phase(name, ("Running", "Succeeded"))
    followed = ok(cluster.hatchway("logs", "-f", f"pod/{name}"))  # returns at the end
    assert followed.splitlines() == ["hi", "line0", "line1", "line2"]
    cluster.wait_phase(name, ("Succeeded",))
    assert ok(cluster.hatchway("logs", name, "--tail", "1")).splitlines()[-1] == "line2"
    fails(cluster.hatchway("logs", name, "-c", "nope"), "container nope is not valid")
    fails(cluster.hatchway("logs", "ghost"), 'pods "ghost" not found')


def test_run_privileged_dry_run_and_usage(cluster: Cluster) -> None:
    dry = yaml.safe_load(
        ok(
            cluster.hatchway(
                "run",
                "x",
                "--image",
                "busybox",
                "--privileged",
                "--dry-run=client",
                "--labels",
                "a=b,c=d",
                "--",
                "sleep",
                "1",
            )
        )
    )
    assert dry["spec"]["containers"][0]["securityContext"] == {"privileged": True}
    assert dry["metadata"]["labels"] == {"a": "b", "c": "d"}
    assert cluster.kubectl("get", "pod", "x").returncode == 1  # nothing created
    fails(cluster.hatchway("run", "x"), "--image")
    fails(cluster.hatchway("run", "x", "--image", "busybox", "--env", "NOEQUALS"), "KEY=VALUE")


# ----------------------------------------------------------------- auth, config, help


def test_auth_can_i_as_admin(cluster: Cluster) -> None:
    assert ok(cluster.hatchway("auth", "can-i", "create", "pods/exec")) == "yes\n"
    assert ok(cluster.hatchway("auth", "can-i", "list", "no", "-A")) == "yes\n"
    assert ok(cluster.hatchway("auth", "can-i", "delete", "rolebindings", "-n", "x")) == "yes\n"
    fails(cluster.hatchway("auth", "can-i", "create"), "required")


def test_config(cluster: Cluster, tmp_path: pathlib.Path) -> None:
    doc = yaml.safe_load(cluster.kubeconfig.read_text())
    doc["contexts"].append(
        {
            "name": "other",
            "context": {"cluster": "hatchway", "user": "hatchway", "namespace": "kube-system"},
        }
    )
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(doc))
    flags = ("--kubeconfig", str(path))
    assert ok(cluster.hatchway("config", "current-context", *flags)) == "hatchway\n"
    rows = _cells(ok(cluster.hatchway("config", "get-contexts", *flags)))
    assert rows == [
        ["CURRENT", "NAME", "CLUSTER", "AUTHINFO", "NAMESPACE"],
        ["*", "hatchway", "hatchway", "hatchway"],
        ["other", "hatchway", "hatchway", "kube-system"],
    ]
    view = yaml.safe_load(ok(cluster.hatchway("config", "view", *flags)))
    assert view["users"][0]["user"]["client-key-data"] == "DATA+OMITTED"
    raw = yaml.safe_load(ok(cluster.hatchway("config", "view", "--raw", "--minify", *flags)))
    assert raw["users"][0]["user"]["client-key-data"].startswith("LS0t")
    assert [c["name"] for c in raw["contexts"]] == ["hatchway"]
    switched = ok(cluster.hatchway("config", "use-context", "other", *flags))
    assert switched == 'Switched to context "other".\n'
    assert yaml.safe_load(path.read_text())["current-context"] == "other"
    # the context's namespace applies to the client commands
    pods = ok(cluster.hatchway("get", "pods", "-o", "name", *flags))
    assert pods == cluster.kubectl("get", "pods", "-n", "kube-system", "-o", "name").stdout.decode()
    fails(cluster.hatchway("config", "use-context", "nope", *flags), "no context exists")
    fails(cluster.hatchway("get", "pods", "--context", "nope", *flags), 'context "nope" not found')


@pytest.mark.parametrize(
    "command",
    [
        ["get"],
        ["create"],
        ["apply"],
        ["delete"],
        ["run"],
        ["logs"],
        ["auth", "can-i"],
        ["config", "view"],
        ["image", "import"],
        ["kubeconfig", "user"],
        ["auth"],
        ["config"],
    ],
)
def test_help(cluster: Cluster, command: list[str]) -> None:
    text = ok(cluster.hatchway(*command, "-h"))
    assert text.startswith(f"usage: hatchway {' '.join(command)}")


def test_subcommand_required(cluster: Cluster) -> None:
    fails(cluster.hatchway("config"), "required")
    fails(cluster.hatchway("config", "frobnicate"), "invalid choice")


# ---------------------------------------------------------------------- image import


def _docker_save(path: pathlib.Path) -> None:
    """A ``docker save`` archive: static busybox as /bin/busybox and a file."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as tar:
        tar.add("/bin/busybox", arcname="bin/busybox")
        data = b"imported!\n"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    config = {"config": {"Cmd": ["/bin/busybox", "cat", "/hello.txt"]}, "rootfs": {}}
    members = {
        "layer.tar": layer.getvalue(),
        "config.json": json.dumps(config).encode(),
        "manifest.json": json.dumps(
            [{"Config": "config.json", "RepoTags": ["tiny:1"], "Layers": ["layer.tar"]}]
        ).encode(),
    }
    with tarfile.open(path, "w") as tar:
        for name, blob in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(blob)
            tar.addfile(info, io.BytesIO(blob))


def test_image_import_and_run(cluster: Cluster, tmp_path: pathlib.Path) -> None:
    archive = tmp_path / "tiny.tar"
    _docker_save(archive)
    tag = f"tiny-{_uid()}:1"
    data = ("--data-dir", str(cluster.data_dir))
    assert ok(cluster.hatchway("image", "import", tag, str(archive), *data)) == (
        f'image "{tag}" imported\n'
    )
    assert tag in ok(cluster.hatchway("image", "list", *data)).split()
    name = f"img-{_uid()}"
    ok(cluster.hatchway("run", name, "--image", tag, "--restart", "Never"))
    cluster.wait_phase(name, ("Succeeded",))
    assert ok(cluster.hatchway("logs", name)) == "imported!\n"
    fails(cluster.hatchway("image", "import", "x:1", str(tmp_path / "nope.tar"), *data), "no such")


def test_apiserver_leader_election_flags() -> None:
    """kube-controller-manager's three flags, in seconds; out of order is a usage error."""
    import argparse

    from hatchway.cli import daemons

    parser = argparse.ArgumentParser()
    daemons._leader_args(parser)
    timings = daemons.leader_timings(parser, parser.parse_args([]))
    assert (timings.lease_duration, timings.renew_deadline, timings.retry_period) == (15, 10, 2)
    fast = parser.parse_args(["--leader-elect-lease-duration", "3",
                              "--leader-elect-renew-deadline", "2",
                              "--leader-elect-retry-period", "0.5"])  # fmt: skip
    assert daemons.leader_timings(parser, fast).retry_period == 0.5
    wrong = parser.parse_args(["--leader-elect-renew-deadline", "20"])
    with pytest.raises(SystemExit) as caught:
        daemons.leader_timings(parser, wrong)
    assert caught.value.code == 2
