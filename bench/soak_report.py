"""The soak's one table and its JSON: counts by outcome (overall and by client), leaks,
fds and memory, and the failed sessions themselves (for inspection)."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bench.soak import Soak
    from bench.soak_session import Outcome

#: What makes the exit status non-zero.
FAILING = ("corrupted", "truncated", "wrong_exit", "error", "hung")
EXAMPLES = 25


def _status(out: Outcome) -> str:
    if out.silent:
        return "silent"
    return "cut" if out.cut else out.status


def _counts(outcomes: list[Outcome]) -> dict[str, int]:
    c = Counter(_status(o) for o in outcomes)
    row = {k: c.get(k, 0) for k in ("ok", "killed", "cut", "silent", *FAILING)}
    row["sessions"] = len(outcomes)
    row["bytes_verified"] = sum(o.verified for o in outcomes)
    row["left"] = sum(1 for o in outcomes if o.leaked)
    return row


def _failure(out: Outcome) -> dict[str, Any]:
    spec = asdict(out.spec)
    keep = ("status", "exit_code", "error", "received", "expected", "first_diff", "leaked")
    detail = {k: getattr(out, k) for k in keep}
    detail["seconds"] = round(out.end - out.start, 2)
    detail["in_restart"] = out.in_restart
    return {"spec": spec, **detail}


def summary(
    soak: Soak, final: dict[str, Any], idle_memory: dict[str, Any], seconds: float,
    meta: dict[str, Any],
) -> dict[str, Any]:  # fmt: skip
    outcomes = soak.outcomes
    total = _counts(outcomes)
    by_client = {
        client: _counts([o for o in outcomes if o.spec.client == client])
        for client in sorted({o.spec.client for o in outcomes})
    }
    by_phase = {
        phase: _counts([o for o in outcomes if o.spec.phase == phase])
        for phase in ("main", "slow", "idle")
    }
    leaked_procs = len(final["container_procs"]) + len(final["host_procs"])
    leaked_fds = sum(v["leaked"] for v in final["fds"].values())
    bad = [o for o in outcomes if _status(o) in FAILING or o.leaked]
    failed = sum(total[k] for k in FAILING) + total["left"] + leaked_procs + leaked_fds
    return {
        "meta": meta,
        "seconds": round(seconds, 1),
        "planned": len(soak.plan.all),
        "not_started": len(soak.plan.all) - len(outcomes),
        "total": total,
        "by_client": by_client,
        "by_phase": by_phase,
        "restarts": [
            {k: v for k, v in w.items() if k not in {"start", "end"}} for w in soak.windows
        ],
        "leaked_procs": {"container": final["container_procs"], "host": final["host_procs"]},
        "fds": final["fds"],
        "memory": {
            "before": final["memory_before"],
            "peak": final["memory_peak"],
            "idle": idle_memory,
            "after": final["memory_after"],
        },
        "failures": [_failure(o) for o in bad[:200]],
        "cut": [_failure(o) for o in outcomes if o.cut][:200],
        "silent": [_failure(o) for o in outcomes if o.silent][:200],
        "failed": failed,
    }


def _mem(result: dict[str, Any], role: str, key: str) -> str:
    mem = result["memory"]
    values = [mem[when].get(role, {}).get(key, 0) for when in ("before", "peak", "after")]
    return " / ".join(f"{v / 1024:.0f}" for v in values) + " MiB"


def _by(result: dict[str, Any], key: str) -> str:
    parts = [f"{c} {row[key]}" for c, row in result["by_client"].items() if row[key]]
    return f" ({', '.join(parts)})" if parts else ""


def table(result: dict[str, Any]) -> str:
    t = result["total"]
    fds = result["fds"]
    procs = result["leaked_procs"]
    restarts = (
        ", ".join(f"{r['component']} ({r['in_flight']} in flight)" for r in result["restarts"])
        or "none"
    )
    rows = [
        ("sessions (run / planned)", f"{t['sessions']} / {result['planned']}"),
        ("seconds", f"{result['seconds']:.0f}"),
        ("ok", f"{t['ok']}"),
        ("bytes verified (sha256)", f"{t['bytes_verified']:,}"),
        ("killed by the soak", f"{t['killed']}{_by(result, 'killed')}"),
        ("cut, reported (restart of: " + restarts + ")", f"{t['cut']}{_by(result, 'cut')}"),
        ("cut, not reported by kubectl's SPDY client (no end marker in its protocol)",
         f"{t['silent']}"),
        ("corrupted", f"{t['corrupted']}{_by(result, 'corrupted')}"),
        ("truncated", f"{t['truncated']}{_by(result, 'truncated')}"),
        ("wrong exit code", f"{t['wrong_exit']}{_by(result, 'wrong_exit')}"),
        ("failed, reported, outside a restart", f"{t['error']}{_by(result, 'error')}"),
        ("hung", f"{t['hung']}{_by(result, 'hung')}"),
        ("killed or hung, processes left", f"{t['left']}{_by(result, 'left')}"),
        ("leaked processes: container / host", f"{len(procs['container'])} / {len(procs['host'])}"),
        ("leaked fds: API server / node agent",
         f"{fds['apiserver']['leaked']} / {fds['node']['leaked']} "
         f"({fds['apiserver']['before']}→{fds['apiserver']['after']}, "
         f"{fds['node']['before']}→{fds['node']['after']}; "
         f"not counted: connections kept to the other {fds['apiserver']['kept']} / "
         f"{fds['node']['kept']})"),
        ("API server RSS before / peak / after", _mem(result, "apiserver", "rss_kib")),
        ("API server PSS before / peak / after", _mem(result, "apiserver", "pss_kib")),
        ("node agent RSS before / peak / after", _mem(result, "node", "rss_kib")),
        ("node agent PSS before / peak / after", _mem(result, "node", "pss_kib")),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    lines = [f"| {'soak':<{width}} | result |", f"|{'-' * (width + 2)}|--------|"]
    lines += [f"| {name:<{width}} | {value} |" for name, value in rows]
    verdict = "FAILED" if result["failed"] else "passed"
    lines.append(
        f"\nsoak {verdict}: {result['failed']} failures; details in the JSON (failures), "
        f"the servers' logs in {result.get('logs', '?')}"
    )
    for f in result["failures"][:EXAMPLES]:
        s = f["spec"]
        lines.append(
            f"  #{s['index']} {s['client']} {s['phase']}/{s['mode']} size={s['size']} "
            f"code={s['code']} kill={s['kill'] or '-'}: {f['status']} exit={f['exit_code']} "
            f"{'(in a restart) ' if f['in_restart'] else ''}"
            f"got {f['received']} of {f['expected']} (first diff {f['first_diff']}) "
            f"{f['error'][:160]} {'; left: ' + ', '.join(f['leaked'][:3]) if f['leaked'] else ''}"
        )
    for where in ("container", "host"):
        for p in procs[where][:10]:
            lines.append(f"  left in {where}: {p}")
    return "\n".join(lines)
