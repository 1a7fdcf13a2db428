"""The three patch formats kubectl sends: JSON merge patch (RFC 7386), strategic merge
patch (what ``kubectl apply/label/annotate/edit`` send for built-in types), JSON patch
(RFC 6902).

Strategic merge knows the merge keys of the lists in the types we serve (containers by
``name``, ports by ``containerPort``, ...) and the directives ``$patch``
(``replace``/``delete``/``merge``), ``$retainKeys``, ``$deleteFromPrimitiveList/<f>`` and
``$setElementOrder/<f>``. Lists without a merge key are replaced whole, as upstream does
for atomic lists. A malformed patch raises a 400 BadRequest; a JSON patch that does not
apply (failed ``test``, missing path) raises 422.
"""

from __future__ import annotations

import copy
from typing import Any

from hatchway.api.status import StatusError, bad_request, status

JSON_PATCH = "application/json-patch+json"
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_MERGE_PATCH = "application/strategic-merge-patch+json"

_CONTAINER_LISTS = {
    "env": "name",
    "ports": "containerPort",
    "volumeMounts": "mountPath",
    "volumeDevices": "devicePath",
    "resizePolicy": "resourceName",
}
_POD_SPEC = {
    "volumes": "name",
    "imagePullSecrets": "name",
    "hostAliases": "ip",
    "resourceClaims": "name",
    "schedulingGates": "name",
    "topologySpreadConstraints": "topologyKey",
}
_POD_STATUS = {
    "conditions": "type",
    "containerStatuses": "name",
    "initContainerStatuses": "name",
    "ephemeralContainerStatuses": "name",
    "podIPs": "ip",
    "hostIPs": "ip",
}


def _merge_keys() -> dict[tuple[str, ...], str | None]:
    """Paths (field names, list items transparent) of lists merged by key; ``None``
    marks a primitive list merged as a set (``finalizers``)."""
    keys: dict[tuple[str, ...], str | None] = {
        ("metadata", "ownerReferences"): "uid",
        ("metadata", "finalizers"): None,
        ("spec", "taints"): "key",
        ("status", "addresses"): "type",
    }
    for field in ("containers", "initContainers", "ephemeralContainers"):
        keys[("spec", field)] = "name"
        for sub, key in _CONTAINER_LISTS.items():
            keys[("spec", field, sub)] = key
    keys.update({("spec", f): k for f, k in _POD_SPEC.items()})
    keys.update({("status", f): k for f, k in _POD_STATUS.items()})
    return keys


_MERGE_KEYS = _merge_keys()
_DIRECTIVE = "$patch"
_RETAIN = "$retainKeys"
_ORDER = "$setElementOrder/"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"


def _bad(message: str) -> StatusError:
    return StatusError(bad_request(message))


def _unprocessable(message: str) -> StatusError:
    return StatusError(status(422, "Invalid", message))


# -- RFC 7386 ---------------------------------------------------------------------------


def json_merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 MergePatch: a new value; neither argument is modified."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = json_merge_patch(result.get(key), value)
    return result


# -- strategic merge --------------------------------------------------------------------


def strategic_merge_patch(original: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Apply a strategic merge patch to ``original`` (a pod, node, ...); a new object."""
    if not isinstance(patch, dict):
        raise _bad("strategic merge patch must be a JSON object")
    return _merge_map(copy.deepcopy(original) if isinstance(original, dict) else {}, patch, ())


def _merge_map(orig: dict[str, Any], patch: dict[str, Any], path: tuple[str, ...]) -> Any:
    directive = patch.get(_DIRECTIVE)
    if directive == "delete":
        return _DELETED
    if directive == "replace":
        return _strip_directives(patch)
    if directive not in (None, "merge"):
        raise _bad(f"Unknown patch type: {directive}")
    for key, value in patch.items():
        if key.startswith(_DELETE_PRIMITIVE):
            field = key[len(_DELETE_PRIMITIVE) :]
            if not isinstance(value, list):
                raise _bad(f"{key} must be a list")
            if isinstance(orig.get(field), list):
                orig[field] = [v for v in orig[field] if v not in value]
    for key, value in patch.items():
        if key.startswith("$"):
            continue
        if value is None:
            orig.pop(key, None)
            continue
        merged = _merge_value(orig.get(key), value, (*path, key))
        if merged is _DELETED:
            orig.pop(key, None)
        else:
            orig[key] = merged
    for key, order in patch.items():
        if key.startswith(_ORDER) and isinstance(orig.get(key[len(_ORDER) :]), list):
            field = key[len(_ORDER) :]
            orig[field] = _apply_order(orig[field], order, _MERGE_KEYS.get((*path, field)))
    retain = patch.get(_RETAIN)
    if retain is not None:
        if not isinstance(retain, list):
            raise _bad("$retainKeys must be a list")
        for key in [k for k in orig if k not in retain]:
            del orig[key]
    return orig


class _Deleted:
    pass


_DELETED: Any = _Deleted()


def _merge_value(orig: Any, patch: Any, path: tuple[str, ...]) -> Any:
    if isinstance(patch, dict):
        base = copy.deepcopy(orig) if isinstance(orig, dict) else {}
        return _merge_map(base, patch, path)
    if isinstance(patch, list) and path in _MERGE_KEYS:
        base = orig if isinstance(orig, list) else []
        key = _MERGE_KEYS[path]
        if key is None:
            return _merge_primitive_list(base, patch)
        return _merge_keyed_list(base, patch, key, path)
    return _strip_directives(patch)


def _merge_primitive_list(orig: list[Any], patch: list[Any]) -> list[Any]:
    out = list(orig)
    out.extend(v for v in patch if v not in out)
    return out


def _merge_keyed_list(
    orig: list[Any], patch: list[Any], key: str, path: tuple[str, ...]
) -> list[Any]:
    if any(isinstance(p, dict) and p.get(_DIRECTIVE) == "replace" for p in patch):
        return [_strip_directives(p) for p in patch if not _is_directive_only(p)]
    out = [copy.deepcopy(item) for item in orig]
    for item in patch:
        if not isinstance(item, dict):
            raise _bad(f"list {'.'.join(path)} merged by {key} holds a non-object: {item!r}")
        if key not in item:
            raise _bad(f"map: {item} does not contain declared merge key: {key}")
        index = _find(out, key, item[key])
        if item.get(_DIRECTIVE) == "delete":
            if index is not None:
                del out[index]
            continue
        if index is None:
            out.append(_strip_directives(item))
        else:
            out[index] = _merge_map(out[index], item, path)
    return out


def _find(items: list[Any], key: str, value: Any) -> int | None:
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get(key) == value:
            return i
    return None


def _is_directive_only(item: Any) -> bool:
    return isinstance(item, dict) and set(item) <= {_DIRECTIVE}


def _apply_order(items: list[Any], order: Any, key: str | None) -> list[Any]:
    """``$setElementOrder``: items named in ``order`` first, in that order; the rest after
    in their original order (a tolerant reading of upstream's interleaving)."""
    if not isinstance(order, list):
        raise _bad("$setElementOrder must be a list")
    wanted = [o.get(key) if key and isinstance(o, dict) else o for o in order]

    def ident(item: Any) -> Any:
        return item.get(key) if key and isinstance(item, dict) else item

    ranked = {value: i for i, value in enumerate(wanted) if _hashable(value)}
    first = [it for it in items if _hashable(ident(it)) and ident(it) in ranked]
    rest = [it for it in items if not (_hashable(ident(it)) and ident(it) in ranked)]
    first.sort(key=lambda it: ranked[ident(it)])
    return first + rest


def _hashable(value: Any) -> bool:
    return isinstance(value, str | int | float | bool) or value is None


def _strip_directives(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: _strip_directives(v)
            for k, v in value.items()
            if not k.startswith("$") and v is not None
        }
    if isinstance(value, list):
        return [_strip_directives(v) for v in value]
    return value


# -- RFC 6902 ---------------------------------------------------------------------------


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise _bad(f"invalid JSON pointer: {path!r}")
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]]


def _parent(doc: Any, parts: list[str], path: str) -> tuple[Any, str]:
    here = doc
    for part in parts[:-1]:
        here = _child(here, part, path)
    return here, parts[-1]


def _child(here: Any, part: str, path: str) -> Any:
    if isinstance(here, dict) and part in here:
        return here[part]
    if isinstance(here, list) and part.isdigit() and int(part) < len(here):
        return here[int(part)]
    raise _unprocessable(
        f"the server rejected our request due to an error in our request: path {path} not found"
    )


def _get(doc: Any, path: str) -> Any:
    here = doc
    for part in _pointer(path):
        here = _child(here, part, path)
    return here


def _add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return value
    parent, last = _parent(doc, parts, path)
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        index = len(parent) if last == "-" else _index(last, len(parent) + 1, path)
        parent.insert(index, value)
    else:
        raise _unprocessable(f"cannot add at {path}: parent is not a container")
    return doc


def _remove(doc: Any, path: str) -> Any:
    parts = _pointer(path)
    if not parts:
        raise _unprocessable("cannot remove the whole document")
    parent, last = _parent(doc, parts, path)
    _child(parent, last, path)
    if isinstance(parent, dict):
        del parent[last]
    else:
        del parent[int(last)]
    return doc


def _index(text: str, limit: int, path: str) -> int:
    if not text.isdigit() or int(text) >= limit:
        raise _unprocessable(f"index {text} out of range at {path}")
    return int(text)


def json_patch(doc: Any, operations: Any) -> Any:
    """RFC 6902: apply ``operations`` to a copy of ``doc``."""
    if not isinstance(operations, list):
        raise _bad("json patch must be a list of operations")
    out = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise _bad(f"invalid json patch operation: {op!r}")
        out = _apply_op(out, op)
    return out


def _apply_op(doc: Any, op: dict[str, Any]) -> Any:
    kind, path = op["op"], op["path"]
    if kind in ("add", "replace", "test") and "value" not in op:
        raise _bad(f"missing value for {kind} operation at {path}")
    if kind == "add":
        return _add(doc, path, copy.deepcopy(op["value"]))
    if kind == "remove":
        return _remove(doc, path)
    if kind == "replace":
        _get(doc, path)
        return _add(_remove(doc, path), path, copy.deepcopy(op["value"])) if path else op["value"]
    if kind in ("move", "copy"):
        if "from" not in op:
            raise _bad(f"missing from for {kind} operation at {path}")
        value = copy.deepcopy(_get(doc, op["from"]))
        if kind == "move":
            doc = _remove(doc, op["from"])
        return _add(doc, path, value)
    if kind == "test":
        if _get(doc, path) != op["value"]:
            raise _unprocessable(
                "the server rejected our request due to an error in our request:"
                f" testing value {path} failed"
            )
        return doc
    raise _bad(f"unknown json patch operation: {kind}")


def apply_patch(content_type: str, original: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Apply ``patch`` sent with ``Content-Type: content_type``; 415 for other types."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media == JSON_PATCH:
        result = json_patch(original, patch)
    elif media == MERGE_PATCH:
        result = json_merge_patch(original, patch)
    elif media == STRATEGIC_MERGE_PATCH:
        result = strategic_merge_patch(original, patch)
    else:
        message = f"the server does not support the patch type {media!r}"
        raise StatusError(status(415, "UnsupportedMediaType", message))
    if not isinstance(result, dict):
        raise _unprocessable("the patched document is not an object")
    return result
