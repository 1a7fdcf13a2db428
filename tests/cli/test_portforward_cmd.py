"""``hatchway port-forward``: help, usage errors and refusals as kubectl words them (the
forwarding itself: tests/interop/test_port_forward.py)."""

from __future__ import annotations

from cluster import Cluster


def fails(result, *fragments: str) -> str:  # type: ignore[no-untyped-def]
    err = str(result.stderr.decode())
    assert result.returncode == 1, (result.stdout, err)
    for fragment in fragments:
        assert fragment in err, err
    assert "Traceback" not in err
    return err


def test_help_names_the_forms_and_the_address(cluster: Cluster) -> None:
    result = cluster.hatchway("port-forward", "--help")
    assert result.returncode == 0
    text = result.stdout.decode()
    for fragment in ("[LOCAL:]REMOTE", "--address", "5000:80", "localhost"):
        assert fragment in text
    assert "port-forward" in cluster.hatchway("--help").stdout.decode()


def test_usage_errors(cluster: Cluster) -> None:
    fails(cluster.hatchway("port-forward", "web"), "required: [LOCAL:]REMOTE")
    fails(cluster.hatchway("port-forward", "web", "http"), "invalid port mapping 'http'")
    fails(cluster.hatchway("port-forward", "web", "70000"), "ports are 1-65535")
    fails(cluster.hatchway("port-forward", "svc/web", "80"), "works on pods only")
    fails(cluster.hatchway("port-forward", "--address", "nowhere", "web", "80"), "not a valid IP")


def test_refusals(cluster: Cluster) -> None:
    fails(cluster.hatchway("port-forward", "nope", "80"), 'pods "nope" not found')
    name = cluster.pod(command=("true",), restartPolicy="Never", wait=False)
    cluster.wait_phase(name, ("Succeeded",))
    fails(
        cluster.hatchway("port-forward", name, "80"),
        "unable to forward port because pod is not running. Current status=Succeeded",
    )
