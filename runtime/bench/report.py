"""results.json -> results.md (tables, targets, where the time goes) and throughput.png.

`python -m bench.report RESULTS_DIR` re-renders both from results.json without measuring again.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from bench.stats import TargetCheck, check_targets

SERVER_LABELS = {
    "davit": "Davit",
    "triton": "Triton via PyTriton",
    "kserve": "KServe ModelServer",
    "mlserver": "MLServer",
}
TARGET_MODEL = "mlp"


def _fmt(value: float, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:,.{digits}f}"


def label(point: dict[str, Any]) -> str:
    return f"{SERVER_LABELS.get(point['server'], point['server'])} ({point['transport']})"


def raw_row(raw: list[dict[str, Any]], model: str, threads: int, batch: int) -> dict[str, Any]:
    for row in raw:
        if row["model"] == model and row["threads"] == threads and row["batch"] == batch:
            return row
    return {}


def best_point(
    points: Iterable[dict[str, Any]], server_filter: set[str], concurrency: int, model: str
) -> dict[str, Any] | None:
    """Highest-throughput error-free point among the given servers at this concurrency."""
    candidates = [
        p
        for p in points
        if p["server"] in server_filter
        and p["concurrency"] == concurrency
        and p["model"] == model
        and p["errors"] == 0
    ]
    return max(candidates, key=lambda p: p["rps"], default=None)


def lowest_p50(
    points: Iterable[dict[str, Any]], server: str, concurrency: int, model: str
) -> dict[str, Any] | None:
    candidates = [
        p
        for p in points
        if p["server"] == server
        and p["concurrency"] == concurrency
        and p["model"] == model
        and p["errors"] == 0
    ]
    return min(candidates, key=lambda p: p["p50_ms"], default=None)


def cpu_us_per_request(point: dict[str, Any]) -> float:
    return point["cpu_percent"] / 100.0 / point["rps"] * 1e6 if point["rps"] > 0 else math.nan


def targets(results: dict[str, Any]) -> tuple[list[TargetCheck], list[str]]:
    """The issue's targets on the MLP, and the lines that say what was compared with what."""
    points = results["points"]
    threads = int(results["options"]["torch_threads"])
    peers = {p["server"] for p in points} - {"davit"}
    davit32 = best_point(points, {"davit"}, 32, TARGET_MODEL)
    peer32 = best_point(points, peers, 32, TARGET_MODEL)
    davit1 = lowest_p50(points, "davit", 1, TARGET_MODEL)
    raw32 = raw_row(results["raw"], TARGET_MODEL, threads, 32)
    raw1 = raw_row(results["raw"], TARGET_MODEL, threads, 1)
    if davit32 is None or davit1 is None or not raw32 or not raw1:
        return [], ["Targets not evaluated: Davit or raw torch MLP points are missing."]
    checks = check_targets(
        davit_rps_c32=davit32["rps"],
        best_peer_rps_c32=peer32["rps"] if peer32 else 0.0,
        raw_samples_per_s_b32=raw32["samples_per_s"],
        davit_p50_c1_ms=davit1["p50_ms"],
        raw_p50_b1_ms=raw1["p50_ms"],
    )
    if peer32 is None:  # a ratio against nothing is not a result
        checks = [c for c in checks if "best peer" not in c.description]
    notes = [
        f"Davit at c=32: {label(davit32)}, {_fmt(davit32['rps'])} rps.",
        (
            f"Best peer at c=32: {label(peer32)}, {_fmt(peer32['rps'])} rps."
            if peer32
            else "No peer was measured at c=32 in this run."
        ),
        f"Raw torch ({threads} thread(s), same as the servers): batch 32 "
        f"{_fmt(raw32['samples_per_s'])} samples/s; batch 1 p50 {raw1['p50_ms']:.2f} ms.",
        f"Davit at c=1: {label(davit1)}, p50 {davit1['p50_ms']:.2f} ms.",
    ]
    best_raw1 = min(
        (r for r in results["raw"] if r["model"] == TARGET_MODEL and r["batch"] == 1),
        key=lambda r: r["p50_ms"],
    )
    if best_raw1["threads"] != threads:
        notes.append(
            f"Raw torch with {best_raw1['threads']} threads runs batch 1 in "
            f"{best_raw1['p50_ms']:.2f} ms (p50): Davit's c=1 p50 is "
            f"{davit1['p50_ms'] - best_raw1['p50_ms']:.2f} ms above that."
        )
    best_raw32 = max(
        (r for r in results["raw"] if r["model"] == TARGET_MODEL and r["batch"] == 32),
        key=lambda r: r["samples_per_s"],
    )
    if best_raw32["threads"] != threads:
        notes.append(
            f"Raw torch with {best_raw32['threads']} threads reaches "
            f"{_fmt(best_raw32['samples_per_s'])} samples/s at batch 32: Davit at c=32 is "
            f"{davit32['rps'] / best_raw32['samples_per_s']:.2f}x that."
        )
    return checks, notes


def where_time_goes(results: dict[str, Any]) -> list[str]:
    """CPU cost per request against the raw forward cost per sample, from this run."""
    threads = int(results["options"]["torch_threads"])
    lines = []
    for concurrency in (1, 32):
        point = best_point(results["points"], {"davit"}, concurrency, TARGET_MODEL)
        if point is None:
            continue
        batch = point.get("mean_batch") or math.nan
        sizes = sorted(
            {r["batch"] for r in results["raw"] if r["model"] == TARGET_MODEL},
            key=lambda b: abs(b - batch) if not math.isnan(batch) else b,
        )
        raw = raw_row(results["raw"], TARGET_MODEL, threads, sizes[0]) if sizes else {}
        if not raw:
            continue
        forward_us = raw["p50_ms"] * 1e3 * threads / raw["batch"]
        spent_us = cpu_us_per_request(point)
        lines.append(
            f"- c={concurrency}, {label(point)}: the server burned {_fmt(spent_us)} CPU-µs per "
            f"request (CPU {_fmt(point['cpu_percent'])}% at {_fmt(point['rps'])} rps, mean "
            f"batch {_fmt(batch, 1)}); the forward alone costs {_fmt(forward_us)} CPU-µs per "
            f"sample at batch {raw['batch']} (raw p50 {raw['p50_ms']:.2f} ms x {threads} "
            f"thread(s) / {raw['batch']}), so about {_fmt(spent_us - forward_us)} µs per "
            "request is serving overhead (parsing, batching, queue hand-offs, encoding)."
        )
        if spent_us > 0 and concurrency > 1:
            lines.append(
                f"  1 / (CPU per request) = {_fmt(1e6 / spent_us)} rps against "
                f"{_fmt(point['rps'])} measured: "
                + (
                    "the server's work ran as if on a single core. In a closed loop the "
                    "clients of one batch all wait for it, so encoding and parsing around one "
                    "batch do not overlap the next forward."
                    if 1e6 / spent_us < 1.25 * point["rps"]
                    else "the server overlapped work across cores."
                )
            )
        cores = int(results["machine"].get("cores", "0") or 0)
        loadgen = point.get("loadgen_cpu_percent")
        if cores and loadgen is not None:
            idle = 100.0 * cores - point["cpu_percent"] - loadgen
            lines.append(
                f"  CPU budget at this point: server {_fmt(point['cpu_percent'])}% + load "
                f"generator {_fmt(loadgen)}% of {100 * cores}% ({cores} cores); "
                f"{_fmt(idle)}% was left idle or went to other jobs (1-minute load average "
                f"{_fmt(point.get('load1_before', math.nan), 1)} before the point)."
            )
    return lines


def table(headers: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    out.extend("| " + " | ".join(row) + " |" for row in rows)
    return out


def point_rows(points: list[dict[str, Any]], model: str) -> list[list[str]]:
    rows = []
    for p in points:
        if p["model"] != model:
            continue
        rows.append(
            [
                label(p),
                str(p["concurrency"]),
                _fmt(p["rps"]),
                _fmt(p["p50_ms"], 2),
                _fmt(p["p99_ms"], 2),
                str(p["errors"]),
                _fmt(p["cpu_percent"]),
                _fmt(p["peak_rss_mb"]),
                _fmt(p["mean_batch"], 1),
                _fmt(cpu_us_per_request(p)),
                _fmt(p.get("loadgen_cpu_percent", math.nan)),
                _fmt(p.get("load1_before", math.nan), 1),
            ]
        )
    return rows


POINT_HEADERS = [
    "server (transport)",
    "c",
    "rps",
    "p50 ms",
    "p99 ms",
    "errors",
    "server CPU %",
    "server RSS MB",
    "mean batch",
    "CPU µs/req",
    "loadgen CPU %",
    "machine load1",
]


def summary_rows(points: list[dict[str, Any]], model: str, levels: list[int]) -> list[list[str]]:
    by_label: dict[str, dict[int, dict[str, Any]]] = {}
    for p in points:
        if p["model"] == model:
            by_label.setdefault(label(p), {})[p["concurrency"]] = p
    rows = []
    for name, per_c in by_label.items():
        cells = []
        for c in levels:
            found = per_c.get(c)
            cells.append(
                "-" if found is None else _fmt(found["rps"]) + ("*" if found["errors"] else "")
            )
        rows.append([name, *cells])
    return rows


def render(results: dict[str, Any]) -> str:
    points = results["points"]
    levels = sorted({p["concurrency"] for p in points})
    models = list(dict.fromkeys([TARGET_MODEL, *(p["model"] for p in points)]))
    out = ["# Davit runtime benchmark", ""]
    out += [
        f"Run {results['started']}, wall time {_fmt(results.get('wall_s', math.nan))} s.",
        "",
        f"Command: `{results['command']}`",
        "",
        "One 1-sample request per call, closed loop (each connection keeps one request in "
        "flight), load generator on the same machine: `wrk -t1` + Lua for HTTP, `h2load -t1` "
        "with a pre-framed ModelInferRequest for gRPC. Every server and the load generator run "
        "on 127.0.0.1 inside a private network namespace, one server at a time. "
        f"Torch threads per server and for raw torch: {results['options']['torch_threads']}; "
        f"dynamic batching max {results['options']['max_batch_size']} / "
        f"{results['options']['max_queue_delay_ms']} ms delay wherever the server batches "
        f"(KServe's Python server does not); Davit model instances: "
        f"{results['options'].get('instance_count', '1')}; "
        f"{results['options']['duration_s']} s per point. "
        "Every transport's output was checked with allclose against local torch before its "
        "load points. Compare numbers within one run: run-to-run noise on this machine is "
        "about ±25%, more when other jobs share it (the 1-minute load average before each point "
        "is in the last column of the detailed tables; 2 means both cores were already busy).",
        "",
    ]
    checks, notes = targets(results)
    out += ["## Targets (MLP 512→2048→2048→512, same run)", ""]
    if checks:
        out += table(
            ["target", "measured", "required", "met"],
            [
                [
                    c.description,
                    f"{c.measured:.2f}",
                    ("≤ " if "p50" in c.description else "≥ ") + f"{c.required:.2f}",
                    "yes" if c.met else "**no**",
                ]
                for c in checks
            ],
        )
        out.append("")
    out += [f"- {n}" for n in notes]
    out += ["", "### Where the time goes", ""]
    out += where_time_goes(results) or ["(no Davit MLP points)"]
    out += ["", "## Throughput, MLP (requests/s; * = errors at that point)", ""]
    out += table(
        ["server (transport)", *[f"c={c}" for c in levels]],
        summary_rows(points, TARGET_MODEL, levels),
    )
    out += ["", "![throughput](throughput.png)", ""]
    out += ["## Raw torch (the ceiling: forward in a loop, inference_mode, no server)", ""]
    out += table(
        ["model", "threads", "batch", "samples/s", "p50 ms", "p99 ms"],
        [
            [
                r["model"],
                str(r["threads"]),
                str(r["batch"]),
                _fmt(r["samples_per_s"]),
                _fmt(r["p50_ms"], 2),
                _fmt(r["p99_ms"], 2),
            ]
            for r in results["raw"]
        ],
    )
    for model in models:
        rows = point_rows(points, model)
        if rows:
            out += ["", f"## All points, {model}", ""]
            out += table(POINT_HEADERS, rows)
    pa = results.get("perf_analyzer", [])
    if pa:
        out += ["", "## perf_analyzer cross-check (tritonclient 2.50.0 wheel), MLP", ""]
        out += table(
            ["server", "protocol", "concurrency", "infer/s", "p50 ms", "p99 ms", "note"],
            [
                [
                    SERVER_LABELS.get(p["server"], p["server"]),
                    p["protocol"],
                    str(p.get("concurrency", "-")),
                    _fmt(p.get("infer_per_s", math.nan)),
                    _fmt(p.get("p50_ms", math.nan), 2),
                    _fmt(p.get("p99_ms", math.nan), 2),
                    p.get("error", "ok").replace("\n", " ")[:200],
                ]
                for p in pa
            ],
        )
    failed = [c for c in results["checks"] if not c["ok"]]
    out += ["", "## Correctness checks", ""]
    out.append(
        f"{sum(c['ok'] for c in results['checks'])} of {len(results['checks'])} "
        "server/transport/model combinations matched local torch (allclose rtol 1e-4, atol 1e-5)."
    )
    out += [f"- FAILED {c['server']} {c['transport']} {c['model']}: {c['detail']}" for c in failed]
    if results.get("failures"):
        out += ["", "## Failures", ""]
        out += [f"- {f['server']}: {f['detail']}" for f in results["failures"]]
    out += ["", "## Machine", ""]
    out += table(["", ""], [[k, str(v)] for k, v in results["machine"].items()])
    out += ["", "## Versions", ""]
    out += table(["component", "version"], [[k, str(v)] for k, v in results["versions"].items()])
    out.append(
        "\nModels: "
        + (
            "davit_runtime.testing builders"
            if results.get("runtime_builders")
            else "bench fallback builders"
        )
        + " (fixed seed), TorchScript; every server loads the same file."
    )
    return "\n".join(out) + "\n"


def plot(results: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [p for p in results["points"] if p["model"] == TARGET_MODEL]
    figure, (left, right) = plt.subplots(1, 2, figsize=(13, 5))
    series: dict[str, list[dict[str, Any]]] = {}
    for p in points:
        series.setdefault(label(p), []).append(p)
    for name, pts in series.items():
        pts.sort(key=lambda p: p["concurrency"])
        style = "-o" if pts[0]["server"] == "davit" else "--s"
        xs = [p["concurrency"] for p in pts]
        left.plot(xs, [p["rps"] for p in pts], style, label=name)
        right.plot(xs, [p["p50_ms"] for p in pts], style, label=name)
    threads = int(results["options"]["torch_threads"])
    for batch, color in ((32, "grey"), (64, "black")):
        raw = raw_row(results["raw"], TARGET_MODEL, threads, batch)
        if raw:
            left.axhline(
                raw["samples_per_s"],
                color=color,
                linestyle=":",
                label=f"raw torch, batch {batch}, {threads} thread(s) (samples/s)",
            )
    left.set(
        xscale="log",
        xlabel="concurrency",
        ylabel="requests/s",
        title="MLP throughput (1-sample requests)",
    )
    right.set(
        xscale="log",
        yscale="log",
        xlabel="concurrency",
        ylabel="p50 latency (ms)",
        title="MLP median latency",
    )
    for axis in (left, right):
        axis.grid(True, which="both", alpha=0.3)
        axis.set_xticks(sorted({p["concurrency"] for p in points}) or [1])
        axis.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
    right.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    right.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    left.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write(results: dict[str, Any], results_dir: Path) -> None:
    results_dir.mkdir(parents=True, exist_ok=True)
    (results_dir / "results.md").write_text(render(results))
    plot(results, results_dir / "throughput.png")


if __name__ == "__main__":
    directory = Path(sys.argv[1])
    write(json.loads((directory / "results.json").read_text()), directory)
