"""The table (Markdown), ratios to the floor (runc) and to OpenSSH, and the targets."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench.peers import FLOOR, ORDER, SSH

Results = dict[str, Any]


@dataclass(frozen=True)
class Row:
    label: str
    figure: str
    get: Callable[[dict[str, Any]], float | None]
    unit: str
    higher_is_better: bool


def _key(*path: str) -> Callable[[dict[str, Any]], float | None]:
    def get(cell: dict[str, Any]) -> float | None:
        value: Any = cell
        for p in path:
            if not isinstance(value, dict) or p not in value:
                return None
            value = value[p]
        return float(value)

    return get


def _tree_pss(when: str) -> Callable[[dict[str, Any]], float | None]:
    """Everything that serves the session, per session: sshd's tree, or API server plus
    node agent with its ``runc exec`` children."""

    def get(cell: dict[str, Any]) -> float | None:
        servers = cell.get(when) or {}
        if not servers:
            return None
        return float(sum(s["tree_pss_kib"] for s in servers.values()))

    return get


ROWS = (
    Row("stdout, 1 stream", "stdout", _key("gib_s"), "GiB/s", True),
    Row("stdin, 1 stream", "stdin", _key("gib_s"), "GiB/s", True),
    Row("stdout: machine CPU per GiB", "stdout", _key("machine_cpu_s_per_gib"), "s", False),
    Row("stdin: machine CPU per GiB", "stdin", _key("machine_cpu_s_per_gib"), "s", False),
    Row("exec true p50", "latency", _key("p50_ms"), "ms", False),
    Row("exec true p99", "latency", _key("p99_ms"), "ms", False),
    Row("N streams, aggregate", "concurrent", _key("gib_s"), "GiB/s", True),
    Row("N idle: API server RSS/session", "idle",
        _key("idle_kib_per_session", "apiserver", "rss_kib"), "KiB", False),
    Row("N idle: node agent RSS/session", "idle",
        _key("idle_kib_per_session", "node", "rss_kib"), "KiB", False),
    Row("N idle: serving processes PSS/session", "idle",
        _tree_pss("idle_kib_per_session"), "KiB", False),
    Row("N idle, all closed: API server RSS kept", "idle",
        _key("after_kib", "apiserver", "rss_kib"), "KiB", False),
    Row("N idle, all closed: node agent RSS kept", "idle",
        _key("after_kib", "node", "rss_kib"), "KiB", False),
    Row("N streaming: API server RSS/session", "concurrent",
        _key("streaming_kib_per_session", "apiserver", "rss_kib"), "KiB", False),
    Row("N streaming: node agent RSS/session", "concurrent",
        _key("streaming_kib_per_session", "node", "rss_kib"), "KiB", False),
    Row("N streaming: serving processes PSS/session", "concurrent",
        _tree_pss("streaming_kib_per_session"), "KiB", False),
    Row("N streamed, all closed: API server RSS kept", "concurrent",
        _key("after_kib", "apiserver", "rss_kib"), "KiB", False),
    Row("N streamed, all closed: node agent RSS kept", "concurrent",
        _key("after_kib", "node", "rss_kib"), "KiB", False),
    Row("TTY echo p50", "echo", _key("p50_ms"), "ms", False),
    Row("TTY echo p99", "echo", _key("p99_ms"), "ms", False),
)  # fmt: skip


def value(results: Results, row: Row, peer: str) -> float | None:
    cell = results["figures"].get(row.figure, {}).get(peer)
    if not isinstance(cell, dict) or "error" in cell:
        return None
    return row.get(cell)


def _fmt(v: float) -> str:
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _cell(results: Results, row: Row, peer: str) -> str:
    v = value(results, row, peer)
    if v is None:
        return "n/a"
    ratios = []
    for ref, tag in ((FLOOR, "runc"), (SSH, "ssh")):
        r = value(results, row, ref)
        if ref != peer and r:
            ratio = v / r
            ratios.append(f"{ratio:.2f}x {tag}" if ratio >= 0.1 else f"{ratio:.2g}x {tag}")
    return _fmt(v) + (f" ({', '.join(ratios)})" if ratios else "")


def peers_in(results: Results) -> list[str]:
    return [p for p in ORDER if p in results["peers"]]


def table(results: Results) -> str:
    peers = peers_in(results)
    n = results["meta"]["sessions"]
    lines = [
        "| figure | unit | " + " | ".join(peers) + " |",
        "| --- | --- |" + " --- |" * len(peers),
    ]
    for row in ROWS:
        cells = [_cell(results, row, p) for p in peers]
        if all(c == "n/a" for c in cells):
            continue
        label = row.label.replace("N ", f"{n} ")
        lines.append(f"| {label} | {row.unit} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _ratio_target(
    results: Results, name: str, row: Row, peer: str, ref: str, factor: float
) -> dict[str, Any]:
    v, r = value(results, row, peer), value(results, row, ref)
    if v is None or r is None:
        return {"target": name, "status": "n/a", "detail": f"{peer} or {ref} unavailable"}
    ratio = v / r
    ok = ratio >= factor if row.higher_is_better else ratio <= factor
    detail = f"{peer} {_fmt(v)} vs {ref} {_fmt(r)} {row.unit}: {ratio:.2f}x (target "
    detail += f"{'≥' if row.higher_is_better else '≤'} {factor}x)"
    return {"target": name, "status": "pass" if ok else "miss", "ratio": ratio, "detail": detail}


def targets(results: Results) -> list[dict[str, Any]]:
    by_fig = {r.label: r for r in ROWS}
    out = []
    for label in ("stdout, 1 stream", "stdin, 1 stream"):
        row = by_fig[label]
        out.append(
            _ratio_target(results, f"{row.figure} ≥ 1.2x OpenSSH", row, "hatchway", SSH, 1.2)
        )
        out.append(_ratio_target(results, f"{row.figure} ≥ 0.5x runc", row, "hatchway", FLOOR, 0.5))
    p50 = by_fig["exec true p50"]
    for ref, factor in (("kubectl-ws", 0.9), ("kubectl-spdy", 0.9), ("podman", 1.0)):
        name = f"exec true p50 ≤ {factor}x {ref}" if factor != 1.0 else f"exec true p50 ≤ {ref}"
        out.append(_ratio_target(results, name, p50, "hatchway", ref, factor))
    if "hatchway-reuse" in results["peers"]:  # the opt-in warm daemon, measured both ways
        for ref in ("kubectl-ws", "kubectl-spdy"):
            name = f"exec true p50 with --reuse ≤ 0.9x {ref}"
            out.append(_ratio_target(results, name, p50, "hatchway-reuse", ref, 0.9))
    n = results["meta"]["sessions"]
    streams = by_fig["N streams, aggregate"]
    out.append(_ratio_target(results, f"{n} streams ≥ 1.2x OpenSSH", streams, "hatchway", SSH, 1.2))
    for label in ("TTY echo p50", "TTY echo p99"):
        row = by_fig[label]
        out.append(_ratio_target(results, f"{label} ≤ OpenSSH", row, "hatchway", SSH, 1.0))
    out.append(_idle_target(results, by_fig["N idle: API server RSS/session"], "API server"))
    out.append(_idle_target(results, by_fig["N idle: node agent RSS/session"], "node agent"))
    return out


def _idle_target(results: Results, row: Row, server: str) -> dict[str, Any]:
    n = results["meta"]["sessions"]
    name = f"{n} idle sessions: {server} < 100 KiB/session"
    found = {p: value(results, row, p) for p in ("hatchway", "kubectl-ws", "kubectl-spdy")}
    found = {p: v for p, v in found.items() if v is not None}
    if not found:
        return {"target": name, "status": "n/a", "detail": "no Hatchway figure"}
    worst = max(found.values())
    detail = ", ".join(f"{p} clients {_fmt(v)} KiB" for p, v in found.items())
    status = "pass" if worst < 100 else "miss"
    return {"target": name, "status": status, "ratio": worst / 100, "detail": detail}


def markdown(results: Results) -> str:
    meta = results["meta"]
    out = [
        f"Hatchway benchmark — {meta['date']}, {meta['host']}, {meta['cpus']} CPUs, "
        f"{meta['mode']} run ({meta['size_mib']} MiB per stream, {meta['runs']} latency runs, "
        f"{meta['sessions']} sessions x {meta['per_session_kib']} KiB, "
        f"{meta['echo_runs']} keystrokes; load average before {meta['loadavg_before']}, "
        f"after {meta.get('loadavg_after', '?')}; {meta.get('seconds', '?')} s)",
        "",
        table(results),
        "",
        "Cells: the figure, then (÷ the runc figure, ÷ the ssh figure) from this run.",
        "",
        "| target | result | detail |",
        "| --- | --- | --- |",
    ]
    for t in results["targets"]:
        out.append(f"| {t['target']} | {t['status']} | {t['detail']} |")
    errors = [
        f"- {fig} / {peer}: {cell['error']}"
        for fig, cells in results["figures"].items()
        for peer, cell in cells.items()
        if isinstance(cell, dict) and "error" in cell
    ]
    missing = [f"- {p}: {why}" for p, why in results.get("unavailable", {}).items()]
    if errors or missing:
        out += ["", "n/a because:", *missing, *errors]
    return "\n".join(out) + "\n"
