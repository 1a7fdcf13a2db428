"""Names in request paths: checked as client-go checks them, escaped as Go escapes them."""

from __future__ import annotations

import pytest

from hatchway.client import paths
from hatchway.client.api import resource_path


def test_pod_path_escapes_what_would_end_the_path() -> None:
    assert paths.pod_path("default", "demo") == "/api/v1/namespaces/default/pods/demo"
    # '?' and '#' would start a query or fragment: the exec's own query would follow
    # a name's; a space or a control character would break the request line.
    assert paths.pod_path("default", "demo?x=1", "exec") == (
        "/api/v1/namespaces/default/pods/demo%3Fx=1/exec"
    )
    assert (
        paths.pod_path("ns", "a#b c\r\n\u00e9")
        == "/api/v1/namespaces/ns/pods/a%23b%20c%0D%0A%C3%A9"
    )
    assert paths.segment("resource name", "a:b@c;d=e+f,g&h$i~j") == "a:b@c;d=e+f,g&h$i~j"


@pytest.mark.parametrize(
    ("namespace", "pod", "message"),
    [
        (
            "default/pods/demo/exec?command=id&x=",
            "demo",
            "invalid namespace \"default/pods/demo/exec?command=id&x=\": [may not contain '/']",
        ),
        ("x/../default", "demo", "invalid namespace \"x/../default\": [may not contain '/']"),
        ("..", "demo", "invalid namespace \"..\": [may not be '..']"),
        (
            "default",
            "../../secrets",
            "invalid resource name \"../../secrets\": [may not contain '/']",
        ),
        ("default", ".", "invalid resource name \".\": [may not be '.']"),
        ("default", "a%2Fb", "invalid resource name \"a%2Fb\": [may not contain '%']"),
    ],
)
def test_names_that_would_leave_their_segment_are_refused(
    namespace: str, pod: str, message: str
) -> None:
    with pytest.raises(paths.InvalidNameError) as caught:
        paths.pod_path(namespace, pod, "exec")
    assert str(caught.value) == message


def test_resource_paths_check_both_names() -> None:
    assert resource_path("pods", "ns", "p?q") == "/api/v1/namespaces/ns/pods/p%3Fq"
    with pytest.raises(paths.InvalidNameError):
        resource_path("pods", "a/b", "p")
    with pytest.raises(paths.InvalidNameError):
        resource_path("clusterroles", None, "../x")
