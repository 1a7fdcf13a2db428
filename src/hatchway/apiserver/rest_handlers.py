"""REST semantics of the stored resources: get, list, watch, create, update, patch,
delete, and the ``status`` subresource.

Kubernetes behaviour kept here:

* every object carries ``resourceVersion``; a PUT or PATCH against a stale one is 409
  Conflict; lists carry the store's resourceVersion; ``?watch=true`` streams from
  ``?resourceVersion=``;
* lists page with ``?limit=`` and ``?continue=`` and read at ``?resourceVersion=`` /
  ``?resourceVersionMatch=`` (protocol.md 10.5);
* ``?labelSelector=`` / ``?fieldSelector=`` on list and watch; ``Accept: ...;as=Table``
  answers a meta.k8s.io/v1 Table (what ``kubectl get`` prints);
* a namespaced object is created only in an existing namespace and only in the
  namespace of the URL; ``default``, ``kube-system``, ``kube-public`` and
  ``kube-node-lease`` cannot be deleted;
* PUT of a pod or node keeps the stored ``status``; PUT/PATCH of ``.../status`` changes
  only ``status``;
* patches: merge, strategic merge and JSON patch; server-side apply
  (``apply-patch+yaml``) in :mod:`.apply`;
* pod deletion is graceful (:mod:`.pods`).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from hatchway.api import defaults, resources, server_fields, status, table, validation
from hatchway.api.meta import format_time
from hatchway.api.patch import apply_patch
from hatchway.api.protobuf import MEDIA_TYPE as PROTOBUF
from hatchway.api.protobuf import decode as decode_protobuf
from hatchway.api.selectors import parse_field_selector, parse_label_selector
from hatchway.api.status import StatusError
from hatchway.apiserver import apply, field_validation, namespaces, node_restriction, pods
from hatchway.apiserver.app import Call, json_response
from hatchway.apiserver.pod_security import PodSecurityAdmission
from hatchway.apiserver.request_info import query_bool
from hatchway.apiserver.serviceaccounts import ServiceAccountTokens
from hatchway.apiserver.watch import watch_response
from hatchway.protocol import peer_json
from hatchway.store import paging
from hatchway.store.base import Store
from hatchway.transport.http import Response

PROTECTED_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})
#: Resources whose PUT keeps the stored status (status is written via the subresource).
STATUS_SPLIT = frozenset({"pods", "nodes", "namespaces"})
PATCH_RETRIES = 5

Hook = Callable[[str, dict[str, Any]], Awaitable[None] | None]


def _now() -> datetime:
    return datetime.now(UTC)


def _first(call: Call, key: str) -> str | None:
    values = call.request.query.get(key)
    return values[0] if values else None


def decode_body(call: Call) -> Any:
    """The JSON body (YAML accepted too, as kubectl never sends it but people do); a
    Kubernetes protobuf body (kubectl 1.32+'s typed clients) as the JSON it stands for."""
    raw = call.request.body
    if not raw:
        raise StatusError(status.bad_request("the request body is empty"))
    content_type = (call.request.header("content-type") or "").lower()
    if content_type.split(";")[0].strip() == PROTOBUF:
        return decode_protobuf(raw)
    if "protobuf" in content_type or "cbor" in content_type:
        media = content_type.split(";")[0].strip()
        raise StatusError(
            status.unsupported_media_type(
                f"the body of the request was in an unknown format ({media})"
            )
        )
    try:
        return peer_json.loads(raw)
    except ValueError as exc:
        if peer_json.too_deep(exc):
            raise StatusError(
                status.bad_request(f"invalid JSON body: {peer_json.TOO_DEEP}")
            ) from None
    if "yaml" in content_type:
        return _yaml_body(raw)
    raise StatusError(status.bad_request("the body of the request was in an unknown format"))


#: How many nodes YAML aliases may add to a body once expanded (a YAML body is stored as
#: JSON, which expands every alias): Kubernetes' decoder refuses "excessive aliasing" too.
MAX_ALIAS_EXPANSION = 1_000_000


def _yaml_body(raw: bytes) -> Any:
    import yaml

    try:
        obj = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise StatusError(status.bad_request(f"invalid YAML body: {exc}")) from None
    except RecursionError:
        raise StatusError(status.bad_request(f"invalid YAML body: {peer_json.TOO_DEEP}")) from None
    if _alias_expansion(obj) > MAX_ALIAS_EXPANSION:
        raise StatusError(
            status.bad_request("invalid YAML body: document contains excessive aliasing")
        )
    return obj


def _alias_expansion(root: Any) -> int:
    """How many more nodes ``root`` has as a tree than as the graph YAML built (shared
    by aliases); a cycle (``&a [*a]``) counts as endless. Iterative: the graph may be as
    deep as the parser allowed."""
    tree: dict[int, int] = {}  # container id -> its node count as a tree
    graph = 0  # nodes of the graph, each container once
    on_path: set[int] = set()
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        obj, children_counted = stack.pop()
        kids = list(obj.values()) if isinstance(obj, dict) else obj
        if not isinstance(kids, list) or (id(obj) in tree and not children_counted):
            continue
        if children_counted:
            on_path.discard(id(obj))
            tree[id(obj)] = 1 + sum(tree.get(id(kid), 1) for kid in kids)
            graph += 1 + sum(1 for kid in kids if not isinstance(kid, (dict, list)))
            continue
        if id(obj) in on_path:
            return MAX_ALIAS_EXPANSION + 1
        on_path.add(id(obj))
        stack.append((obj, True))
        stack.extend((kid, False) for kid in kids if isinstance(kid, (dict, list)))
    return tree.get(id(root), 1) - max(graph, 1)


def _body_object(call: Call) -> dict[str, Any]:
    obj = decode_body(call)
    if not isinstance(obj, dict):
        raise StatusError(status.bad_request("the request body is not a JSON object"))
    return obj


class ResourceHandler:
    """CRUD over the :class:`~hatchway.store.base.Store` for every served resource.

    ``on_change(resource, obj)`` is called after each successful write (the server
    uses it to wake the scheduler and refresh the RBAC cache). ``admission`` (Pod
    Security) sees every create and update, whatever the route, before it is stored."""

    def __init__(
        self,
        store: Store,
        on_change: Hook | None = None,
        admission: PodSecurityAdmission | None = None,
        tokens: ServiceAccountTokens | None = None,
    ) -> None:
        self.store = store
        self.on_change = on_change
        self.admission = admission
        #: Answers ``serviceaccounts/NAME/token`` (TokenRequest); None: not served.
        self.tokens = tokens

    async def _changed(self, resource: str, obj: dict[str, Any]) -> None:
        if self.on_change is not None:
            result = self.on_change(resource, obj)
            if result is not None:
                await result

    async def __call__(self, call: Call) -> Response:
        info = call.info
        res = resources.lookup(info.resource, info.api_group)
        if res is None or res.version != info.api_version or info.api_prefix not in ("api", "apis"):
            raise StatusError(status.not_found_path())
        if (info.api_prefix == "api") != (res.group == ""):
            raise StatusError(status.not_found_path())
        if info.subresource and res.subresource(info.subresource) is None:
            raise StatusError(status.not_found_path())
        if info.subresource == "token" and res.name == "serviceaccounts" and self.tokens:
            return await self._token_request(call, info.namespace, info.name)
        if info.subresource and info.subresource != "status":
            raise StatusError(status.not_found_path())
        namespace = "" if not res.namespaced else info.namespace
        if res.name == "namespaces":
            namespace = ""
        if res.namespaced and info.name and not namespace:
            raise StatusError(status.not_found_path())
        return await self._route(call, res, namespace)

    async def _route(self, call: Call, res: resources.Resource, namespace: str) -> Response:
        method, name = call.request.method, call.info.name
        if node_restriction.node_identity(call.user) is not None:
            body = (
                _body_object(call)
                if method == "POST" and res.name in ("nodes", "events", "leases")
                else None
            )
            await node_restriction.check(
                self.store, call.user, method, res.name, namespace, name, body
            )
        if method in ("GET", "HEAD"):
            if name and not call.info.verb == "watch" and call.info.verb != "list":
                return await self.get(call, res, namespace, name)
            return await self.list_or_watch(call, res, namespace)
        if method == "POST" and not name:
            return await self.create(call, res, namespace)
        if method == "PUT" and name:
            return await self.update(call, res, namespace, name)
        if method == "PATCH" and name:
            return await self.patch(call, res, namespace, name)
        if method == "DELETE" and name:
            return await self.delete(call, res, namespace, name)
        if method == "DELETE":
            return await self.delete_collection(call, res, namespace)
        action = {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())
        raise StatusError(status.method_not_allowed(res.name, action, res.group))

    # -- reads -------------------------------------------------------------------------
    def _render(self, call: Call, res: resources.Resource, objs: list[dict[str, Any]], rv: str):
        return table.table(
            res.name,
            objs,
            now=_now(),
            resource_version=rv,
            include_object=_first(call, "includeObject") or "Metadata",
        )

    def _wants_table(self, call: Call) -> bool:
        return table.wants_table(call.request.header("accept") or "")

    async def get(self, call: Call, res: resources.Resource, namespace: str, name: str) -> Response:
        obj = await self.store.get(res.name, namespace, name)
        if self._wants_table(call):
            rv = str((obj.get("metadata") or {}).get("resourceVersion") or "")
            return json_response(self._render(call, res, [obj], rv))
        return json_response(obj)

    async def list_or_watch(self, call: Call, res: resources.Resource, namespace: str) -> Response:
        labels = parse_label_selector(_first(call, "labelSelector"))
        fields = parse_field_selector(_first(call, "fieldSelector"), res.name)
        scope = namespace or None
        if query_bool(call.request.query.get("watch")):
            timeout = _first(call, "timeoutSeconds")
            return watch_response(
                self.store,
                res.name,
                scope,
                since_rv=_first(call, "resourceVersion"),
                labels=labels,
                fields=fields,
                timeout=float(timeout) if timeout and timeout.isdigit() else None,
                as_table=self._wants_table(call),
                include_object=_first(call, "includeObject") or "Metadata",
            )
        match = None
        if labels.requirements or fields.requirements:

            def match(obj: dict[str, Any]) -> bool:
                return labels.matches_object(obj) and fields.matches(obj)

        page = await self._list(call, res.name, scope, match)
        meta: dict[str, Any] = {"resourceVersion": page.resource_version}
        if page.continue_:
            meta["continue"] = page.continue_
        if page.remaining is not None:
            meta["remainingItemCount"] = page.remaining
        if self._wants_table(call):
            rendered = self._render(call, res, page.items, page.resource_version)
            rendered["metadata"] = meta
            return json_response(rendered)
        return json_response(
            {
                "kind": f"{res.kind}List",
                "apiVersion": res.api_version,
                "metadata": meta,
                "items": page.items,
            }
        )

    async def _list(
        self, call: Call, resource: str, scope: str | None, match: paging.Match | None
    ) -> paging.ListPage:
        """``?limit=``, ``?continue=``, ``?resourceVersion=`` and
        ``?resourceVersionMatch=`` as kube-apiserver reads them (protocol.md 10.5)."""
        limit, token, rv, exact = list_options(call)
        if not limit and not token and rv in (None, "", "0"):
            items, current = await self.store.list(resource, scope)
            return paging.ListPage([o for o in items if match is None or match(o)], current)
        if limit or token:
            return await self.store.list_page(
                resource, scope, limit=limit, continue_=token, resource_version=rv, exact=exact,
                match=match,
            )  # fmt: skip
        page = await self.store.list_page(
            resource, scope, limit=0, resource_version=rv, exact=exact, match=match
        )
        items = list(page.items)
        while page.continue_:  # no limit asked: every page, all at the first one's revision
            page = await self.store.list_page(
                resource, scope, limit=0, continue_=page.continue_, match=match
            )
            items += page.items
        return paging.ListPage(items, page.resource_version)

    # -- writes ------------------------------------------------------------------------
    async def _check_namespace(self, res: resources.Resource, namespace: str, name: str) -> None:
        """A create's namespace exists and is not Terminating (NamespaceLifecycle)."""
        if res.namespaced:
            found = await self.store.get("namespaces", "", namespace)
            namespaces.check_not_terminating(found, res.name, name, res.group)

    async def create(self, call: Call, res: resources.Resource, namespace: str) -> Response:
        if call.info.subresource:
            raise StatusError(status.method_not_allowed(res.name, "create", res.group))
        dry_run = _dry_run(call, "CreateOptions")
        obj = _body_object(call)
        warnings = field_validation.check(call.request.query, res, obj)
        created = await self._create(res, namespace, obj, call, dry_run=dry_run)
        return json_response(created, 201, warnings)

    async def _create(
        self,
        res: resources.Resource,
        namespace: str,
        obj: dict[str, Any],
        call: Call,
        managed: list[dict[str, Any]] | None = None,
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Default, validate, admit and store ``obj``; with ``dry_run`` the same up to the
        store, which is only asked whether the name is free: the answer is the object as
        it would have been stored (without a resourceVersion, as Kubernetes answers)."""
        meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        if res.namespaced:
            body_ns = meta.get("namespace")
            if body_ns and body_ns != namespace:
                raise StatusError(
                    status.bad_request(
                        "the namespace of the provided object does not match the namespace"
                        " sent on the request"
                    )
                )
        obj = defaults.apply_defaults(res.name, obj, namespace=namespace or None)
        server_fields.for_create(res.name, obj, uid=str(uuid.uuid4()), now=_now(), managed=managed)
        obj_meta = obj["metadata"]
        if not obj_meta.get("name") and obj_meta.get("generateName"):
            obj_meta["name"] = obj_meta["generateName"] + uuid.uuid4().hex[:5]
        if res.name == "pods":
            pods.prepare_create(obj)
        validation.check(res.name, obj)
        await self._check_namespace(res, namespace, str(obj_meta.get("name") or ""))
        if self.admission is not None:
            await self.admission.admit(call, res.name, obj, None)
        if dry_run:
            await self._check_absent(res, namespace, obj_meta.get("name", ""))
            return obj
        created = await self.store.create(res.name, obj)
        await self._changed(res.name, created)
        return created

    async def _write(
        self,
        res: resources.Resource,
        old: dict[str, Any],
        new: dict[str, Any],
        subresource: str,
        expect_rv: str | None,
        call: Call,
        managed: list[dict[str, Any]] | None = None,
        *,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Merge, validate, admit and store an update; with ``dry_run`` nothing is stored
        and the answer is what would have been (its resourceVersion still the old one)."""
        new = merge_for_update(res.name, old, new, subresource, managed)
        validation.check_update(res.name, new, old)
        if self.admission is not None:
            await self.admission.admit(call, res.name, new, old)
        if dry_run:
            _check_version(res, old, expect_rv)
            return new
        stored = await self.store.update(res.name, new, expect_rv=expect_rv)
        await self._changed(res.name, stored)
        return stored

    async def update(
        self, call: Call, res: resources.Resource, namespace: str, name: str
    ) -> Response:
        dry_run = _dry_run(call, "UpdateOptions")
        obj = _body_object(call)
        warnings = field_validation.check(call.request.query, res, obj)
        meta = obj.get("metadata") if isinstance(obj.get("metadata"), dict) else {}
        if meta.get("name") and meta.get("name") != name:
            raise StatusError(
                status.bad_request(
                    f"the name of the object ({meta.get('name')}) does not match the name on"
                    f" the URL ({name})"
                )
            )
        if res.namespaced and meta.get("namespace") and meta.get("namespace") != namespace:
            raise StatusError(
                status.bad_request(
                    "the namespace of the provided object does not match the namespace sent"
                    " on the request"
                )
            )
        old = await self.store.get(res.name, namespace, name)
        rv = str(meta.get("resourceVersion") or "") or None
        stored = await self._write(res, old, obj, call.info.subresource, rv, call, dry_run=dry_run)
        return json_response(stored, headers=warnings)

    async def patch(
        self, call: Call, res: resources.Resource, namespace: str, name: str
    ) -> Response:
        content_type = call.request.header("content-type") or ""
        dry_run = _dry_run(call, "PatchOptions")
        if apply.is_apply(content_type):
            return await self.server_side_apply(call, res, namespace, name, dry_run)
        patch_doc = decode_body(call)
        for _ in range(PATCH_RETRIES):
            old = await self.store.get(res.name, namespace, name)
            patched = apply_patch(content_type, old, patch_doc)
            warnings = field_validation.check(call.request.query, res, patched)
            wanted = str((patched.get("metadata") or {}).get("resourceVersion") or "")
            old_rv = str(old["metadata"].get("resourceVersion") or "")
            if wanted and wanted != old_rv:
                raise StatusError(status.conflict(res.name, name, res.group))
            try:
                stored = await self._write(
                    res, old, patched, call.info.subresource, old_rv, call, dry_run=dry_run
                )
            except StatusError as exc:
                if exc.reason == "Conflict" and not wanted:
                    continue  # someone wrote in between: patch the new version
                raise
            return json_response(stored, headers=warnings)
        raise StatusError(status.conflict(res.name, name, res.group))

    async def server_side_apply(
        self, call: Call, res: resources.Resource, namespace: str, name: str, dry_run: bool
    ) -> Response:
        """PATCH application/apply-patch+yaml: see :mod:`.apply` (and its limits)."""
        if call.info.subresource:
            raise StatusError(status.unsupported_media_type("apply to a subresource"))
        manager = apply.field_manager(call.request.query)
        config = server_fields.without_managed_fields(
            apply.check_config(res, decode_body(call), name)
        )
        warnings = field_validation.check(call.request.query, res, config, default="Strict")
        now = format_time(_now())
        for _ in range(PATCH_RETRIES):
            try:
                old = await self.store.get(res.name, namespace, name)
            except StatusError as exc:
                if exc.code != 404:
                    raise
                obj = apply.record(json.loads(json.dumps(config)), res, config, manager, now)
                managed = obj["metadata"]["managedFields"]
                created = await self._create(res, namespace, obj, call, managed, dry_run=dry_run)
                return json_response(created, 201, warnings)
            merged = apply.record(apply.merge(old, config), res, config, manager, now)
            old_rv = str(old["metadata"].get("resourceVersion") or "")
            wanted = str((config.get("metadata") or {}).get("resourceVersion") or "")
            if wanted and wanted != old_rv:
                raise StatusError(status.conflict(res.name, name, res.group))
            try:
                managed = merged["metadata"]["managedFields"]
                stored = await self._write(
                    res, old, merged, "", old_rv, call, managed, dry_run=dry_run
                )
            except StatusError as exc:
                if exc.reason == "Conflict" and not wanted:
                    continue
                raise
            return json_response(stored, headers=warnings)
        raise StatusError(status.conflict(res.name, name, res.group))

    async def delete(
        self, call: Call, res: resources.Resource, namespace: str, name: str
    ) -> Response:
        options = _delete_options(call)
        dry_run = _dry_run(call, "DeleteOptions", options)
        if res.name == "namespaces":
            return json_response(await self._delete_namespace(name, dry_run))
        preconditions = options.get("preconditions") or {}
        expect_rv = preconditions.get("resourceVersion") or None
        if preconditions.get("uid"):
            current = await self.store.get(res.name, namespace, name)
            uid = (current.get("metadata") or {}).get("uid")
            if uid != preconditions["uid"]:
                detail = (
                    f"Precondition failed: UID in precondition: {preconditions['uid']},"
                    f" UID in object meta: {uid}"
                )
                raise StatusError(status.conflict(res.name, name, res.group, detail))
        if dry_run:  # the object as it is: deleting it would be allowed
            current = await self.store.get(res.name, namespace, name)
            _check_version(res, current, expect_rv)
            return json_response(current)
        if res.name == "pods":
            obj = await pods.delete_pod(
                self.store, namespace, name, options.get("gracePeriodSeconds"), expect_rv
            )
        else:
            obj = await self.store.delete(res.name, namespace, name, expect_rv=expect_rv)
        await self._changed(res.name, obj)
        return json_response(obj)

    async def delete_collection(
        self, call: Call, res: resources.Resource, namespace: str
    ) -> Response:
        if res.name == "namespaces":
            raise StatusError(status.method_not_allowed(res.name, "deletecollection"))
        labels = parse_label_selector(_first(call, "labelSelector"))
        fields = parse_field_selector(_first(call, "fieldSelector"), res.name)
        options = _delete_options(call)
        dry_run = _dry_run(call, "DeleteOptions", options)
        grace = options.get("gracePeriodSeconds")
        items, _ = await self.store.list(res.name, namespace or None)
        deleted = []
        for obj in items:
            if not (labels.matches_object(obj) and fields.matches(obj)):
                continue
            if dry_run:
                deleted.append(obj)
                continue
            meta = obj["metadata"]
            try:
                if res.name == "pods":
                    gone = await pods.delete_pod(
                        self.store, meta.get("namespace", ""), meta["name"], grace, None
                    )
                else:
                    gone = await self.store.delete(
                        res.name, meta.get("namespace", ""), meta["name"]
                    )
            except StatusError as exc:
                if exc.code == 404:
                    continue
                raise
            await self._changed(res.name, gone)
            deleted.append(gone)
        _, rv = await self.store.list(res.name, namespace or None)
        return json_response(
            {
                "kind": f"{res.kind}List",
                "apiVersion": res.api_version,
                "metadata": {"resourceVersion": rv},
                "items": deleted,
            }
        )

    async def _delete_namespace(self, name: str, dry_run: bool = False) -> dict[str, Any]:
        if name in PROTECTED_NAMESPACES:
            raise StatusError(
                status.forbidden_message("namespaces", name, "this namespace may not be deleted")
            )
        if dry_run:
            return await self.store.get("namespaces", "", name)
        marked = await namespaces.terminate(self.store, name)
        await self._changed("namespaces", marked)
        return marked

    async def _token_request(self, call: Call, namespace: str, name: str) -> Response:
        assert self.tokens is not None
        if call.request.method != "POST":
            action = call.request.method.lower()
            raise StatusError(status.method_not_allowed("serviceaccounts/token", action))
        answer = await self.tokens.token_request(namespace, name, _body_object(call))
        return json_response(answer, 201)

    async def _check_absent(self, res: resources.Resource, namespace: str, name: str) -> None:
        """A dry-run create's one question to the store: 409 AlreadyExists as a create."""
        if not name:
            return
        try:
            await self.store.get(res.name, namespace, name)
        except StatusError as exc:
            if exc.code == 404:
                return
            raise
        raise StatusError(status.already_exists(res.name, name, res.group))


#: The one dryRun value Kubernetes knows: every stage runs, nothing is stored.
DRY_RUN_ALL = "All"


def list_options(call: Call) -> tuple[int, str | None, str | None, bool]:
    """(limit, continue token, resourceVersion, whether it must match exactly), checked
    as kube-apiserver's ``ValidateListOptions``: 400 or 422 for combinations it refuses."""
    text = _first(call, "limit")
    try:
        limit = int(text) if text else 0
    except ValueError:
        raise StatusError(status.bad_request(f"invalid limit {text!r}: not an integer")) from None
    token = _first(call, "continue") or None
    rv = _first(call, "resourceVersion") or None
    match = _first(call, "resourceVersionMatch") or ""
    causes = []
    if match and rv is None:
        detail = "resourceVersionMatch is forbidden unless resourceVersion is provided"
        causes.append(status.forbidden_field("resourceVersionMatch", detail))
    if match and token:
        detail = "resourceVersionMatch is forbidden when continue is provided"
        causes.append(status.forbidden_field("resourceVersionMatch", detail))
    if match and match not in ("Exact", "NotOlderThan"):
        causes.append(
            status.not_supported("resourceVersionMatch", match, ["Exact", "NotOlderThan"])
        )
    if match == "Exact" and rv == "0":
        detail = 'resourceVersionMatch "exact" is forbidden for resourceVersion "0"'
        causes.append(status.forbidden_field("resourceVersionMatch", detail))
    if causes:
        raise StatusError(status.invalid("ListOptions", "", causes, "meta.k8s.io"))
    if token and rv not in (None, "0"):
        message = "specifying resource version is not allowed when using continue"
        raise StatusError(status.bad_request(message))
    # Without a match, a first page (limit, no continue) at a resourceVersion other than
    # "0" is read exactly at it: kube-apiserver's legacy rule for paged lists.
    legacy_exact = not match and limit > 0 and not token and rv not in (None, "0")
    return max(limit, 0), token, rv, match == "Exact" or legacy_exact


def _dry_run(call: Call, options_kind: str, body: dict[str, Any] | None = None) -> bool:
    """Whether the write is a dry run: ``dryRun=All`` in the query, or in a
    DeleteOptions body (how ``kubectl delete --dry-run=server`` sends it). Any other
    value is refused as Kubernetes refuses it (422 on the options kind), so a typo
    never turns a dry run into a real write."""
    values = list(call.request.query.get("dryRun") or [])
    if body is not None and isinstance(body.get("dryRun"), list):
        values += [v if isinstance(v, str) else str(v) for v in body["dryRun"]]
    unknown = [v for v in values if v != DRY_RUN_ALL]
    if unknown:
        cause = status.not_supported("dryRun", unknown, [DRY_RUN_ALL])
        raise StatusError(status.invalid(options_kind, "", [cause], "meta.k8s.io"))
    return bool(values)


def _check_version(res: resources.Resource, current: dict[str, Any], expect_rv: str | None) -> None:
    """A dry run's resourceVersion precondition, as the store would check it."""
    rv = str((current.get("metadata") or {}).get("resourceVersion") or "")
    if expect_rv and expect_rv != rv:
        name = str((current.get("metadata") or {}).get("name") or "")
        raise StatusError(status.conflict(res.name, name, res.group))


def _delete_options(call: Call) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if call.request.body:
        body = decode_body(call)
        if isinstance(body, dict):
            options = body
    grace = _first(call, "gracePeriodSeconds")
    if grace is not None:
        try:
            options["gracePeriodSeconds"] = int(grace)
        except ValueError:
            raise StatusError(status.bad_request(f"invalid gracePeriodSeconds {grace!r}")) from None
    return options


def merge_for_update(
    resource: str,
    old: dict[str, Any],
    new: dict[str, Any],
    subresource: str,
    managed: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """What is stored for a PUT/PATCH: server-owned metadata from ``old``
    (:mod:`hatchway.api.server_fields`; ``managed`` is server-side apply's managedFields);
    for the status subresource only the new ``status``; for a main-resource write of a
    resource with a status subresource, the old ``status``."""
    new_meta = dict(new.get("metadata") or {})
    old_meta = old.get("metadata") or {}
    if subresource == "status":
        out = dict(old)
        out["status"] = new.get("status", old.get("status"))
        out["metadata"] = dict(old_meta)
        return out
    out = dict(new)
    out["metadata"] = new_meta
    server_fields.for_update(resource, old, out, managed=managed)
    for key in ("name", "namespace"):
        new_meta.setdefault(key, old_meta.get(key))
    if not new_meta.get("namespace"):
        new_meta.pop("namespace", None)
    out["metadata"] = new_meta
    out.setdefault("apiVersion", old.get("apiVersion"))
    out.setdefault("kind", old.get("kind"))
    if resource in STATUS_SPLIT and "status" in old:
        out["status"] = old["status"]
    return out
