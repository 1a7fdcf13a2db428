"""kubectl's pre-flight rules for a pod, applied by the client library and the CLI alike.

Before an exec, attach or log request kubectl reads the pod: a completed pod is refused
(:func:`check_pod_active`), and without ``-c`` the container is chosen by
:func:`default_container` -- the ``kubectl.kubernetes.io/default-container`` annotation,
else the first container, with a notice when there was a choice.
"""

from __future__ import annotations

from hatchway.errors import ConfigError, HatchwayError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_CONTAINER_ANNOTATION = "kubectl.kubernetes.io/default-container"


class CompletedPodError(HatchwayError):
    """The pod has finished (Succeeded or Failed): nothing runs in it any more."""


def default_container(pod: dict[str, Any], requested: str | None) -> tuple[str, str | None]:
    """The container to exec into and the notice to print on stderr (None: say nothing;
    ``-q`` suppresses it). An explicit name is used unchecked: the server validates it.
    Otherwise the ``kubectl.kubernetes.io/default-container`` annotation when it names
    an existing container (regular, init or ephemeral), silently; else the first
    container, announced when there was a choice."""
    if requested:
        return requested, None
    spec = pod.get("spec") or {}
    regular = _names(spec.get("containers"))
    init = _names(spec.get("initContainers"))
    ephemeral = _names(spec.get("ephemeralContainers"))
    if not regular:
        meta = pod.get("metadata") or {}
        raise ConfigError(
            f"pod {meta.get('namespace', '')}/{meta.get('name', '')} does not have any containers"
        )
    annotations = (pod.get("metadata") or {}).get("annotations") or {}
    wanted = annotations.get(DEFAULT_CONTAINER_ANNOTATION)
    if wanted and wanted in (*regular, *init, *ephemeral):
        return wanted, None
    chosen = regular[0]
    if len(regular) == 1 and not init and not ephemeral:
        return chosen, None
    everything = [*regular, *(f"{n} (ephem)" for n in ephemeral), *(f"{n} (init)" for n in init)]
    return chosen, f'Defaulted container "{chosen}" out of: {", ".join(everything)}'


def _names(containers: Any) -> list[str]:
    if not isinstance(containers, list):
        return []
    return [c["name"] for c in containers if isinstance(c, dict) and c.get("name")]


def check_pod_active(pod: dict[str, Any], *, attach: bool = False) -> None:
    """kubectl refuses to exec into (or attach to) a pod that has completed."""
    phase = (pod.get("status") or {}).get("phase")
    if phase in {"Succeeded", "Failed"}:
        what = "attach a container" if attach else "exec into a container"
        raise CompletedPodError(f"cannot {what} in a completed pod; current phase is {phase}")
