"""kubectl's pod pre-flight rules in the client library: the default container, and
no exec or attach into a completed pod."""

from __future__ import annotations

import pytest

from hatchway.client.pods import CompletedPodError, check_pod_active, default_container
from hatchway.errors import ConfigError


def pod(containers=("app",), init=(), ephem=(), annotation=None, phase="Running") -> dict:
    meta: dict = {"name": "mypod", "namespace": "default"}
    if annotation is not None:
        meta["annotations"] = {"kubectl.kubernetes.io/default-container": annotation}
    spec: dict = {"containers": [{"name": n, "image": "busybox"} for n in containers]}
    if init:
        spec["initContainers"] = [{"name": n} for n in init]
    if ephem:
        spec["ephemeralContainers"] = [{"name": n} for n in ephem]
    return {"metadata": meta, "spec": spec, "status": {"phase": phase}}


@pytest.mark.parametrize(
    ("the_pod", "requested", "expected"),
    [
        (pod(), None, ("app", None)),
        (pod(("app", "sidecar")), "sidecar", ("sidecar", None)),
        (pod(), "bogus", ("bogus", None)),  # not validated: the server does that
        (
            pod(("app", "sidecar")),
            None,
            ("app", 'Defaulted container "app" out of: app, sidecar'),
        ),
        (
            pod(("app", "sidecar"), init=("init",)),
            None,
            ("app", 'Defaulted container "app" out of: app, sidecar, init (init)'),
        ),
        (
            pod(("app",), init=("setup",), ephem=("debugger",)),
            None,
            ("app", 'Defaulted container "app" out of: app, debugger (ephem), setup (init)'),
        ),
        (
            pod(("app",), ephem=("dbg",)),
            None,
            ("app", 'Defaulted container "app" out of: app, dbg (ephem)'),
        ),
        (pod(("app", "sidecar"), annotation="sidecar"), None, ("sidecar", None)),
        (pod(("app",), init=("setup",), annotation="setup"), None, ("setup", None)),
        (pod(("app",), ephem=("dbg",), annotation="dbg"), None, ("dbg", None)),
        (
            pod(("app", "sidecar"), annotation="gone"),
            None,
            ("app", 'Defaulted container "app" out of: app, sidecar'),
        ),
        (pod(("app",), annotation=""), None, ("app", None)),
        (pod(("app", "sidecar"), annotation="sidecar"), "app", ("app", None)),
    ],
)
def test_default_container(the_pod, requested, expected) -> None:
    assert default_container(the_pod, requested) == expected


def test_pod_without_containers() -> None:
    with pytest.raises(ConfigError, match="pod default/mypod does not have any containers"):
        default_container(pod(()), None)


# ----------------------------------------------------------- completed pods


@pytest.mark.parametrize("phase", ["Succeeded", "Failed"])
def test_completed_pod_refused(phase: str) -> None:
    with pytest.raises(CompletedPodError) as info:
        check_pod_active(pod(phase=phase))
    assert str(info.value) == (
        f"cannot exec into a container in a completed pod; current phase is {phase}"
    )
    with pytest.raises(CompletedPodError, match="cannot attach a container in a completed pod"):
        check_pod_active(pod(phase=phase), attach=True)


@pytest.mark.parametrize("phase", ["Running", "Pending", "Unknown", None])
def test_active_pod_allowed(phase) -> None:
    the_pod = pod(phase=phase) if phase else {"metadata": {}, "spec": {}}
    check_pod_active(the_pod)
