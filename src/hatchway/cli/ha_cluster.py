"""Starting, restarting and stopping the cluster of ``hatchway up --ha``
(:mod:`hatchway.cli.ha` says what runs where).

``up`` starts what is not running, in dependency order: the etcd members (together:
each waits for a quorum), then the API servers, the load balancer and the node agents,
waiting for each tier to be healthy, saving ``cluster.json`` after every start (so that
``down`` finds what a failed start left). ``down`` stops the node agents, removes their
containers, stops the rest, kills whatever still runs in the cluster's namespaces and
removes the namespaces, veths and bridge; with or without ``cluster.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import shutil
import sys
from collections.abc import Sequence

from hatchway.cli import ha, netns
from hatchway.cli.ha import Component, Layout
from hatchway.cli.up import ClusterState, _current_context, _terminate, write_kubeconfigs
from hatchway.errors import ConfigError

ROLE_ORDER = ("etcd", "apiserver", "loadbalancer", "node")


def why_not() -> str | None:
    """Why ``up --ha`` cannot run here, or None."""
    reason = netns.why_not()
    if reason:
        return reason
    for tool, package in (("etcd", "etcd-server"), ("haproxy", "haproxy"), ("runc", "runc")):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (Debian package {package}; scripts/setup.sh)"
    return None


def up(
    data_dir: pathlib.Path,
    *,
    nodes: int = 2,
    merge: bool = True,
    timeout: float = 90.0,
    apiserver_args: Sequence[str] = (),
    timeout_scale: float = 1.0,
) -> ClusterState:
    """Start (or complete) the cluster; the state, once every node is Ready."""
    reason = why_not()
    if reason:
        raise ConfigError(f"hatchway up --ha: {reason}")
    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    state = ClusterState.load(data_dir)
    if state is not None and not state.cluster_id:
        raise ConfigError(
            f"a one-node cluster runs in {data_dir}: `hatchway down` it first, or use "
            "another --data-dir"
        )
    nodes = state.nodes if state is not None else nodes
    components = ha.plan(nodes)
    layout = Layout(data_dir)
    cid = ha.cluster_id(data_dir)
    if state is None:
        state = ClusterState(
            apiserver_port=ha.LB_PORT,
            node_port=ha.NODE_PORT,
            apiserver_pid=0,
            node_pid=0,
            node_name="node-1",
            cluster_id=cid,
            nodes=nodes,
            server=ha.server_url(components),
        )
    ha.mint(layout, components)
    netns.ensure_bridge(cid)
    scale = [f"--timeout-scale={timeout_scale}"] if timeout_scale != 1.0 else []
    extra = {"apiserver": [*apiserver_args, *scale], "node": scale}
    pids = {c["name"]: int(c["pid"]) for c in state.components}
    for role in ROLE_ORDER:
        tier = [c for c in components if c.role == role]
        started = _start_tier(layout, state, tier, components, pids, extra)
        _wait_tier(layout, tier, started, pids, timeout)
    if merge and not state.kubeconfig:
        state.kubeconfig, state.previous_context = _current_context()
        state.save(data_dir)
    write_kubeconfigs(data_dir, state.apiserver_port, False, server=state.server)
    if merge:
        _merge(data_dir, state)
    names = [c.name for c in components if c.role == "node"]
    asyncio.run(ha.nodes_ready(data_dir / "admin.kubeconfig", names, timeout))
    return state


def _merge(data_dir: pathlib.Path, state: ClusterState) -> None:
    from hatchway.cli.up import CONTEXT

    merged = write_kubeconfigs(data_dir, state.apiserver_port, True, server=state.server)
    if merged:
        print(f"  context {CONTEXT!r} merged into {merged} and made current")


def _start_tier(
    layout: Layout,
    state: ClusterState,
    tier: Sequence[Component],
    components: Sequence[Component],
    pids: dict[str, int],
    extra: dict[str, list[str]],
) -> list[Component]:
    """Start the tier's components that are not running; which were."""
    started = []
    for component in tier:
        if ha.ours(pids.get(component.name, 0), layout.data):
            continue
        if component.name in pids:
            print(f"hatchway: restarting {component.name}", file=sys.stderr)
        name = netns.ensure_namespace(state.cluster_id, component.name, component.address)
        argv = ha.argv_of(layout, component, components, extra)
        pids[component.name] = ha.spawn(name, argv, layout.log(component.name))
        started.append(component)
        _record(layout, state, components, pids)
    return started


def _record(
    layout: Layout, state: ClusterState, components: Sequence[Component], pids: dict[str, int]
) -> None:
    state.components = [c.record(pids[c.name]) for c in components if c.name in pids]
    first = {c.role: pids[c.name] for c in reversed(components) if c.name in pids}
    state.apiserver_pid = first.get("apiserver", 0)
    state.node_pid = first.get("node", 0)
    state.save(layout.data)


def _wait_tier(
    layout: Layout,
    tier: Sequence[Component],
    started: Sequence[Component],
    pids: dict[str, int],
    timeout: float,
) -> None:
    if not started:
        return
    watched = {c.name: pids[c.name] for c in started}
    role = tier[0].role
    if role == "etcd":
        for member in started:
            ha.wait_until(
                member.name, lambda m=member: ha.etcd_healthy(layout, m), watched, layout, timeout
            )
    elif role == "apiserver":
        for api in started:
            ha.wait_until(
                api.name, lambda a=api: ha.apiserver_ready(layout, a), watched, layout, timeout
            )
    # the load balancer and the nodes: _nodes_ready, through the load balancer


def leftovers(data_dir: pathlib.Path) -> bool:
    """Namespaces of an ``up --ha`` cluster of ``data_dir`` exist (a crashed one)."""
    return bool(netns.namespaces(ha.cluster_id(data_dir.resolve())))


def down(data_dir: pathlib.Path, state: ClusterState | None) -> None:
    """Stop every component, remove the containers, namespaces, veths and bridge."""
    data_dir = data_dir.resolve()
    cid = state.cluster_id if state is not None and state.cluster_id else ha.cluster_id(data_dir)
    records = state.components if state is not None else []
    by_role = {role: [r for r in records if r.get("role") == role] for role in ROLE_ORDER}
    for role in reversed(ROLE_ORDER):
        for record in by_role[role]:
            pid = int(record.get("pid") or 0)
            if ha.ours(pid, data_dir):
                _terminate(pid)
        if role == "node":
            _remove_node_containers(data_dir, state)
    netns.remove(cid)


def _remove_node_containers(data_dir: pathlib.Path, state: ClusterState | None) -> None:
    """The containers of every node (``--cleanup`` of each node's data dir)."""
    from hatchway.cli.up import _remove_containers

    nodes = state.nodes if state is not None and state.nodes else 0
    dirs = [data_dir / f"node-{i}" for i in range(1, nodes + 1)]
    dirs += [p for p in data_dir.glob("node-*") if p.is_dir() and p not in dirs]
    for node_dir in dirs:
        with contextlib.suppress(OSError):
            _remove_containers(node_dir)
