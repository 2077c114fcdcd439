"""results.json → results.md (tables and the issue's targets) and results.png. Pure but for plot().

`python e2e/opbench/run.py --report-only` re-renders both from results.json.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from opbench.apistats import RequestKey, event_writes, operator_writes, without_events

PHASES = ("create", "idle", "change", "restart", "delete")
PHASE_LABELS = {
    "create": "create burst → all Ready",
    "idle": "idle",
    "change": "spec change → all rolled out",
    "restart": "operator restart → re-planned",
    "delete": "delete all → children gone",
}
# The targets.
READY_RATIO_MAX = 1.2
EXTRA_WRITES_PER_MODEL = 2  # operator writes per created model ≤ children + 2 (Events apart)
IDLE_CPU_MAX_PERCENT = 1.0
RSS_EMPTY_MAX_MIB = 80.0
RSS_PER_MODEL_MAX_KB = 50.0


def encode_writes(writes: Mapping[RequestKey, int]) -> list[list[Any]]:
    """JSON form: [[resource, subresource, verb, count], ...], sorted."""
    return [[k.resource, k.subresource, k.verb, c] for k, c in sorted(writes.items())]


def decode_writes(rows: list[list[Any]]) -> Counter[RequestKey]:
    return Counter({RequestKey(r, s, v): int(c) for r, s, v, c in rows})


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def runs_by(results: Mapping[str, Any]) -> dict[tuple[str, int], dict[str, Any]]:
    return {(run["system"], int(run["n"])): run for run in results["runs"]}


def phase_operator_writes(run: Mapping[str, Any], phase: str) -> Counter[RequestKey] | None:
    """The operator's writes (Events apart) in one phase of a Davit run."""
    if phase not in run["phases"]:
        return None
    writes = decode_writes(run["phases"][phase]["writes"])
    return without_events(operator_writes(writes, deletes_are_operators=phase != "delete"))


@dataclass(frozen=True)
class Target:
    description: str
    measured: str
    required: str
    met: bool


def targets(results: Mapping[str, Any]) -> list[Target]:
    """The issue's targets at the largest N measured for both systems."""
    runs = runs_by(results)
    sizes = sorted(n for (system, n) in runs if system == "davit" and ("peer", n) in runs)
    if not sizes:
        return []
    n = sizes[-1]
    davit, peer = runs[("davit", n)], runs[("peer", n)]
    checks: list[Target] = []

    ratio = davit["phases"]["create"]["wall_s"] / peer["phases"]["create"]["wall_s"]
    checks.append(
        Target(
            f"time to all Ready, Davit / Deployment controller (N={n})",
            f"{ratio:.2f}x",
            f"≤ {READY_RATIO_MAX}x",
            ratio <= READY_RATIO_MAX,
        )
    )
    if ("peer-children", n) in runs:
        alike = runs[("peer-children", n)]["phases"]["create"]["wall_s"]
        own = davit["phases"]["create"]["wall_s"] / alike
        checks.append(
            Target(
                f"time to all Ready, Davit / the same children written directly (N={n})",
                f"{own:.2f}x",
                f"≤ {READY_RATIO_MAX}x (not the issue's: its peer is the line above)",
                own <= READY_RATIO_MAX,
            )
        )
    created = phase_operator_writes(davit, "create") or Counter()
    per_model = sum(created.values()) / n
    children = float(davit.get("children_per_model", math.nan))
    checks.append(
        Target(
            f"operator writes per created ModelDeployment, Events apart (N={n})",
            f"{per_model:.2f}",
            f"≤ children + {EXTRA_WRITES_PER_MODEL} = {children + EXTRA_WRITES_PER_MODEL:.0f}",
            per_model <= children + EXTRA_WRITES_PER_MODEL,
        )
    )
    idle_writes = sum((phase_operator_writes(davit, "idle") or Counter()).values())
    idle_events = event_writes(decode_writes(davit["phases"]["idle"]["writes"]))
    checks.append(
        Target(
            f"operator writes while idle (N={n})",
            f"{idle_writes} (+{idle_events} Events by anyone)",
            "0",
            idle_writes == 0,
        )
    )
    idle_cpu = float(davit["phases"]["idle"]["cpu_percent"])
    checks.append(
        Target(
            f"operator CPU while idle (N={n})",
            f"{idle_cpu:.2f} % of a core",
            f"≤ {IDLE_CPU_MAX_PERCENT:.0f} %",
            idle_cpu <= IDLE_CPU_MAX_PERCENT,
        )
    )
    empty = float(results["rss_empty_mib"])
    checks.append(
        Target(
            "operator RSS, no ModelDeployment",
            f"{empty:.1f} MiB",
            f"≤ {RSS_EMPTY_MAX_MIB:.0f} MiB",
            empty <= RSS_EMPTY_MAX_MIB,
        )
    )
    per_model_kb = (float(davit["rss_idle_mib"]) - empty) * 1024 / n
    checks.append(
        Target(
            f"operator RSS per ModelDeployment, idle after the burst (N={n})",
            f"{per_model_kb:.0f} KB",
            f"≤ {RSS_PER_MODEL_MAX_KB:.0f} KB",
            per_model_kb <= RSS_PER_MODEL_MAX_KB,
        )
    )
    if "restart" in davit["phases"]:
        restart_writes = sum((phase_operator_writes(davit, "restart") or Counter()).values())
        checks.append(
            Target(
                f"operator writes when a restart re-plans N={n}",
                str(restart_writes),
                "0",
                restart_writes == 0,
            )
        )
    return checks


PEERS = (("peer", "Deployments"), ("peer-children", "Deployment + Service + PDB"))


def _all_writes(phase: Mapping[str, Any] | None, n: int) -> str:
    if phase is None:
        return "-"
    return _fmt(sum(without_events(decode_writes(phase["writes"])).values()) / n, 2)


def summary_rows(results: Mapping[str, Any]) -> list[list[str]]:
    """Per N and phase: wall times (Davit, each peer, Davit's ratio to each), the operator's
    writes and every client's per object, the operator's CPU and RSS."""
    runs = runs_by(results)
    rows = []
    for n in sorted({n for (_, n) in runs}):
        davit = runs.get(("davit", n))
        for phase in PHASES:
            d = davit["phases"].get(phase) if davit else None
            peers = [
                runs[(key, n)]["phases"].get(phase) if (key, n) in runs else None
                for key, _ in PEERS
            ]
            if d is None and not any(peers):
                continue
            timed = phase != "idle"
            cells = [str(n), PHASE_LABELS[phase], _fmt(d["wall_s"]) if d and timed else "-"]
            for p in peers:
                ratio = d["wall_s"] / p["wall_s"] if timed and d and p and p["wall_s"] else None
                cells += [_fmt(p["wall_s"]) if p and timed else "-", _fmt(ratio, 2)]
            op = phase_operator_writes(davit, phase) if davit else None
            cells.append(_fmt(sum(op.values()) / n, 2) if op is not None else "-")
            cells += [_all_writes(d, n), *(_all_writes(p, n) for p in peers)]
            cells += [_fmt(d["cpu_percent"]) if d else "-", _fmt(d["peak_rss_mib"]) if d else "-"]
            rows.append(cells)
    return rows


def write_rows(run: Mapping[str, Any]) -> list[list[str]]:
    """Writes per object by resource and verb, one column per phase (every client)."""
    n = int(run["n"])
    per_phase = {
        ph: decode_writes(run["phases"][ph]["writes"]) for ph in PHASES if ph in run["phases"]
    }
    keys = sorted({k for writes in per_phase.values() for k in writes})
    rows = []
    for key in keys:
        cells = [
            _fmt(per_phase[ph][key] / n, 2) if key in per_phase[ph] else "" for ph in per_phase
        ]
        mark = ""
        if run["system"] == "davit" and any(
            key in (phase_operator_writes(run, ph) or Counter()) for ph in per_phase
        ):
            mark = " (operator)"
        rows.append([key.label() + mark, *cells])
    return rows


def render(results: Mapping[str, Any]) -> str:
    opts = results["options"]
    lines = [
        "# Operator benchmark: Davit vs the Deployment controller",
        "",
        f"`make bench-operator` (sizes {opts['sizes']}, idle {opts['idle_s']:.0f} s, "
        f"{opts['cores']} cores, one machine for the control plane, kwok, the operator and the "
        "driver). Each N: the ModelDeployments' phases with the operator running; then, with the "
        "operator stopped, the same number of plain Deployments (the pod template Davit renders, "
        "1 replica: the issue's peer), then the same Deployments each with the Service and "
        "PodDisruptionBudget Davit makes, written directly (the cluster's share of the work "
        "alike, so Davit's ratio to it is the operator's own overhead).",
        "",
        "Where the time and memory go (a py-spy profile, object sizes) and what would close the "
        "gaps: [analysis.md](analysis.md), written by hand from a run like this one.",
        "",
        "## Targets",
        "",
    ]
    rows = [
        [t.description, t.measured, t.required, "met" if t.met else "**missed**"]
        for t in targets(results)
    ]
    lines += table(["target", "measured", "required", ""], rows)
    lines += [
        "",
        "## Phases",
        "",
        "Wall time in seconds; writes per object (Events apart): the operator's alone, and every "
        "client's (controllers, scheduler, kwok as the kubelet, the driver) for each system; "
        "operator CPU as % of one core over the phase, and its peak RSS.",
        "",
    ]
    lines += table(
        [
            "N",
            "phase",
            "Davit s",
            "Deployments s",
            "ratio",
            "+ Service + PDB s",
            "ratio",
            "operator writes",
            "all writes, Davit",
            "all writes, Deployments",
            "all writes, + Service + PDB",
            "operator CPU %",
            "operator RSS MiB",
        ],
        summary_rows(results),
    )
    runs = runs_by(results)
    for (system, n), run in sorted(runs.items()):
        if system != "davit":
            continue
        delays = sorted(run.get("reaction_s") or [])
        replan = run["phases"].get("restart", {}).get("replan_s", math.nan)
        lines += [
            "",
            f"## N={n}",
            "",
            f"Operator RSS: {results['rss_empty_mib']:.1f} MiB with nothing, "
            f"{run['rss_idle_mib']:.1f} MiB idle after the burst, "
            f"{run.get('rss_restarted_mib', math.nan):.1f} MiB after a restart. "
            f"Re-plan after restart: {replan:.1f} s. "
            f"Children per model: {run.get('children_per_model', math.nan):.0f}.",
        ]
        if delays:
            lines += [
                "",
                f"Reaction (a Service deleted → the operator's new one exists), "
                f"{len(delays)} samples: median {statistics.median(delays) * 1000:.0f} ms, "
                f"max {delays[-1] * 1000:.0f} ms.",
            ]
        systems = [("Davit", run), *((label, runs.get((key, n))) for key, label in PEERS)]
        for label, r in systems:
            if r is None:
                continue
            lines += ["", f"Writes per object, {label} (N={n}), every client:", ""]
            lines += table(["request", *[ph for ph in PHASES if ph in r["phases"]]], write_rows(r))
    return "\n".join(lines) + "\n"


def plot(results: Mapping[str, Any], path: Path) -> None:
    """Wall time per phase and N, Davit beside the peers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = runs_by(results)
    sizes = sorted({n for (_, n) in runs})
    timed = ("create", "change", "delete")
    fig, axes = plt.subplots(1, len(timed), figsize=(4 * len(timed), 3.5))
    for ax, phase in zip(axes, timed, strict=True):
        for system, label in (("davit", "Davit"), *PEERS):
            points = [
                (n, runs[(system, n)]["phases"][phase]["wall_s"])
                for n in sizes
                if (system, n) in runs and phase in runs[(system, n)]["phases"]
            ]
            if points:
                ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
        ax.set_title(PHASE_LABELS[phase], fontsize=9)
        ax.set_xlabel("N")
        ax.set_ylabel("seconds")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
