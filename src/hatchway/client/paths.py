"""Request paths built from names: each name checked as client-go's request builder
checks it (``IsValidPathSegmentName``: not ``.`` or ``..``, no ``/`` or ``%``) and escaped
as Go's ``url.URL`` escapes a path, so that no name -- from the command line, a
kubeconfig's namespace or a script's input -- can steer a request elsewhere: a ``/`` or
``..`` to another resource, a ``?`` to another query (``hatchway exec 'p?x'`` once sent
the exec's own query after it)."""

from __future__ import annotations

from hatchway.api.names import path_segment_name
from hatchway.errors import HatchwayError
from hatchway.protocol.exec_options import UNRESERVED

# Go's url.URL path escaping (encodePath): unreserved characters and these sub-delims
# stay; everything else, "?" and "#" among them, is %XX of its UTF-8 bytes.
_KEPT = UNRESERVED | frozenset(b"$&+,/:;=@")


class InvalidNameError(HatchwayError, ValueError):
    """A name that cannot be one segment of a request path (kubectl's wording)."""


def segment(kind: str, name: str) -> str:
    """``name`` as one path segment, or :class:`InvalidNameError` ("invalid namespace
    "a/b": [may not contain '/']", as kubectl says it)."""
    problems = path_segment_name(name)
    if problems:
        shown = name.replace("\\", "\\\\").replace('"', '\\"')
        raise InvalidNameError(f'invalid {kind} "{shown}": [{", ".join(problems)}]')
    data = name.encode("utf-8", "surrogateescape")
    if all(b in _KEPT for b in data):
        return name
    return "".join(chr(b) if b in _KEPT else f"%{b:02X}" for b in data)


def pod_path(namespace: str, pod: str, subresource: str = "") -> str:
    """``/api/v1/namespaces/NS/pods/NAME[/SUB]`` with both names checked and escaped."""
    path = f"/api/v1/namespaces/{segment('namespace', namespace)}/pods/"
    path += segment("resource name", pod)
    return f"{path}/{subresource}" if subresource else path
