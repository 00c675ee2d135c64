"""Sweep results as JSON, Markdown tables and a plot of latency against concurrency."""

from __future__ import annotations

import statistics
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from server_metrics import WHOLE_METRICS, stage_order

if TYPE_CHECKING:
    from loadgen import LoadConfig, Run

METRIC_NAMES = {"voice_to_voice_s": "voice-to-voice", "turn_s": "turn"}
MIDPOINTS = (
    "Ray exports a histogram's sum as if every value sat at its bucket's midpoint, so "
    "these means are approximate to within the bucket (a 5.2 s value counts as 6.5 s in the "
    "5-8 s bucket)."
)


def headline_metric(mode: str) -> str:
    """Voice calls are judged by voice-to-voice latency; text calls by the whole turn."""
    return "voice_to_voice_s" if mode in ("voice", "stream") else "turn_s"


def _holds(step: dict, metric: str, bound_s: float, max_error_rate: float) -> bool:
    figures = step[metric]
    return bool(figures["n"]) and figures["p95"] <= bound_s and step["error_rate"] <= max_error_rate


def calls_held(steps: list[dict], metric: str, bound_s: float, max_error_rate: float) -> dict:
    """The largest concurrency such that it and every smaller step tested held the bound."""
    held = 0
    for step in sorted(steps, key=lambda s: s["concurrency"]):
        if not _holds(step, metric, bound_s, max_error_rate):
            return {"calls_held": held, "limit_found": True}
        held = step["concurrency"]
    return {"calls_held": held, "limit_found": False}  # held at the largest level tested


def repetitions(steps: list[dict]) -> dict[int, list[dict]]:
    """The steps of each repetition of the sweep."""
    by_repeat: dict[int, list[dict]] = {}
    for step in steps:
        by_repeat.setdefault(step.get("repeat", 1), []).append(step)
    return dict(sorted(by_repeat.items()))


def held_over_repeats(
    steps: list[dict], metric: str, bound_s: float, max_error_rate: float
) -> dict:
    """Calls held in each repetition, their median and whether every repetition found its
    limit (rather than holding the largest level tested)."""
    found = [calls_held(s, metric, bound_s, max_error_rate) for s in repetitions(steps).values()]
    each = [f["calls_held"] for f in found]
    return {
        "calls_held": statistics.median(each) if each else 0,
        "calls_held_each": each,
        "limit_found": bool(found) and all(f["limit_found"] for f in found),
    }


def at_level(steps: list[dict], concurrency: int) -> list[dict]:
    return [s for s in steps if s["concurrency"] == concurrency]


def _repetitions(n: int) -> str:
    return f"{n} repetition" + ("" if n == 1 else "s")


def _median_rate(steps: list[dict]) -> float:
    return statistics.median(s["turns_per_s"] for s in steps)


def _median_of(steps: list[dict], metric: str, key: str) -> float | None:
    values = [s[metric][key] for s in steps if s[metric]["n"]]
    return statistics.median(values) if values else None


def results_json(
    runs: list[Run],
    cfg: LoadConfig,
    bound_s: float,
    max_error_rate: float,
    overload: Run | None = None,
) -> dict:
    metric = headline_metric(cfg.mode)
    results = {
        "load": {k: v for k, v in asdict(cfg).items() if k != "url"},
        "bound": {"metric": metric, "p95_s": bound_s, "max_error_rate": max_error_rate},
        "runs": {
            run.label: {
                **run.notes,
                **held_over_repeats(run.steps, metric, bound_s, max_error_rate),
                "steps": run.steps,
            }
            for run in runs
        },
    }
    if overload is not None:
        results["overload"] = {
            **overload.notes,
            **admission_outcome(overload, metric, bound_s),
            "steps": overload.steps,
        }
    return results


def admission_outcome(run: Run, metric: str, bound_s: float) -> dict:
    """The overload step's verdict: admitted calls within the bound, the rest refused with
    Retry-After, and nothing else wrong."""
    steps = run.steps
    p95 = max((s[metric]["p95"] for s in steps if s[metric]["n"]), default=None)
    errors = sum(s["errors"] for s in steps)
    lost = sum(s["lost_turns"] for s in steps)
    refused = sum(s["calls_refused"] for s in steps)
    return {
        "admitted_calls": sum(s["calls_completed"] for s in steps),
        "refused_calls": refused,
        "admitted_turns": sum(s["turns_ok"] for s in steps),
        "admitted_p95_s": p95,
        "other_errors": errors,
        "lost_turns": lost,
        "holds": bool(p95 is not None and p95 <= bound_s and not errors and not lost and refused),
    }


def _s(figures: dict, key: str) -> str:
    return f"{figures[key]:.2f}" if figures.get("n") else "-"


def steps_table(runs: list[Run]) -> str:
    lines = [
        "| server | repetition | concurrent calls | turns ok | errors | refused calls "
        "| lost turns | voice-to-voice p50 / p95 / p99 (s) "
        "| whole turn p50 / p95 / p99 (s) | transcript p50 (s) | turns/s |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for run in runs:
        for s in run.steps:
            v, t = s["voice_to_voice_s"], s["turn_s"]
            lines.append(
                f"| {run.label} | {s.get('repeat', 1)} | {s['concurrency']} | {s['turns_ok']} "
                f"| {s['errors']} | {s.get('calls_refused', 0)} | {s.get('lost_turns', 0)} "
                f"| {_s(v, 'p50')} / {_s(v, 'p95')} / {_s(v, 'p99')} "
                f"| {_s(t, 'p50')} / {_s(t, 'p95')} / {_s(t, 'p99')} "
                f"| {_s(s['transcript_s'], 'p50')} | {s['turns_per_s']:.3f} |"
            )
    return "\n".join(lines)


def spread_table(runs: list[Run], mode: str) -> str:
    """Per server and concurrency: the p95 of each repetition, their median and range."""
    metric = headline_metric(mode)
    lines = [
        f"| server | concurrent calls | p95 {METRIC_NAMES[metric]} of each repetition (s) "
        "| median p95 (s) | spread (max - min, s) | median p50 (s) | median turns/s |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for run in runs:
        for level in sorted({s["concurrency"] for s in run.steps}):
            steps = at_level(run.steps, level)
            p95s = [s[metric]["p95"] for s in steps if s[metric]["n"]]
            each = ", ".join(f"{v:.2f}" for v in p95s) or "-"
            spread = f"{max(p95s) - min(p95s):.2f}" if p95s else "-"
            median95, median50 = _median_of(steps, metric, "p95"), _median_of(steps, metric, "p50")
            rate = _median_rate(steps)
            lines.append(
                f"| {run.label} | {level} | {each} | "
                + (f"{median95:.2f}" if median95 is not None else "-")
                + f" | {spread} | "
                + (f"{median50:.2f}" if median50 is not None else "-")
                + f" | {rate:.3f} |"
            )
    return "\n".join(lines)


def error_lines(runs: list[Run]) -> list[str]:
    return [
        f"- {run.label}, repetition {s.get('repeat', 1)}, {s['concurrency']} calls: "
        + "; ".join(f"{n} x {kind}" for kind, n in s["error_kinds"].items())
        for run in runs
        for s in run.steps
        if s["error_kinds"]
    ]


def ended_lines(runs: list[Run]) -> list[str]:
    """Calls the agent ended before their last turn: fewer turns, less load than planned."""
    return [
        f"- {run.label}, repetition {s.get('repeat', 1)}, {s['concurrency']} calls: "
        f"{s['calls_ended_by_agent']} ended by the agent"
        for run in runs
        for s in run.steps
        if s["calls_ended_by_agent"]
    ]


def stages_table(runs: list[Run]) -> str:
    """Server-side mean seconds per stage, per step; "" when no server exported metrics."""
    seen = {key for run in runs for s in run.steps for key in s.get("server") or {}}
    columns = stage_order(seen) + [k for k in WHOLE_METRICS if k in seen]
    rows = []
    for run in runs:
        for s in run.steps:
            if s.get("server"):
                cells = [
                    f"{s['server'][c]['mean_s']:.3f}" if c in s["server"] else "-" for c in columns
                ]
                rows.append(
                    f"| {run.label} | {s.get('repeat', 1)} | {s['concurrency']} | "
                    + " | ".join(cells)
                    + " |"
                )
    if not rows:
        return ""
    header = "| server | repetition | concurrent calls | " + " | ".join(columns) + " |"
    return "\n".join([header, "|---|--:|--:|" + "--:|" * len(columns), *rows])


def headline(runs: list[Run], mode: str, bound_s: float, max_error_rate: float) -> str:
    metric = headline_metric(mode)
    parts, medians = [], {}
    for run in runs:
        held = held_over_repeats(run.steps, metric, bound_s, max_error_rate)
        tested = max((s["concurrency"] for s in run.steps), default=0)
        n = medians[run.label] = held["calls_held"]
        each = ", ".join(map(str, held["calls_held_each"]))
        parts.append(
            f"**{run.label}: {n:g}{'' if held['limit_found'] else ' or more'}**"
            + f" (median of {_repetitions(len(held['calls_held_each']))}: {each}"
            + ("" if held["limit_found"] else f"; the largest level tested, {tested}")
            + ")"
        )
    line = (
        f"Concurrent calls held with p95 {METRIC_NAMES[metric]} latency <= {bound_s:g} s and "
        f"errors <= {max_error_rate:.0%}: " + "; ".join(parts) + "."
    )
    if medians.get("baseline") and "service" in medians:
        ratio = medians["service"] / medians["baseline"]
        line += f" The service holds {ratio:.1f}x the baseline's."
    return line


def bounds_table(runs: list[Run], mode: str, bounds: list[float], max_error_rate: float) -> str:
    """Calls held (median over the repetitions) at several bounds, from the same steps."""
    metric = headline_metric(mode)
    labels = [run.label for run in runs]
    lines = [
        f"| p95 {METRIC_NAMES[metric]} bound | "
        + " | ".join(f"{label}: calls held" for label in labels)
        + " | service / baseline |",
        "|--:|" + "--:|" * (len(labels) + 1),
    ]
    for bound in bounds:
        held = {
            run.label: held_over_repeats(run.steps, metric, bound, max_error_rate) for run in runs
        }
        cells = [f"{h['calls_held']:g}{'' if h['limit_found'] else '+'}" for h in held.values()]
        service, baseline = held.get("service"), held.get("baseline")
        ratio = (
            f"{service['calls_held'] / baseline['calls_held']:.1f}x"
            if service and baseline and baseline["calls_held"]
            else "-"
        )
        lines.append(f"| {bound:g} s | " + " | ".join(cells) + f" | {ratio} |")
    return "\n".join(lines)


def comparison(runs: list[Run], mode: str) -> str:
    """Every server side by side at the largest concurrency they all completed."""
    metric = headline_metric(mode)
    levels = [{s["concurrency"] for s in run.steps if s[metric]["n"]} for run in runs]
    common = set.intersection(*levels) if levels else set()
    if len(runs) < 2 or not common:
        return ""
    level = max(common)
    figures = []
    for run in runs:
        steps = at_level(run.steps, level)
        rate = _median_rate(steps)
        figures.append(
            f"{run.label} median p95 {_median_of(steps, metric, 'p95'):.2f} s, {rate:.3f} "
            f"turns/s, {sum(s['errors'] for s in steps)} errors"
        )
    return f"At {level} concurrent calls: " + "; ".join(figures) + "."


def plot(runs: list[Run], mode: str, bound_s: float, path: Path) -> Path | None:
    """Latency and throughput against concurrency; a third panel with the server's stage
    means (the waterfall) when any server exported them."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return None
    metric = headline_metric(mode)
    staged = [r for r in runs if any(s.get("server") for s in r.steps)]
    fig, axes = plt.subplots(1, 3 if staged else 2, figsize=(15 if staged else 10, 4.5))
    latency, throughput = axes[0], axes[1]
    for run in runs:
        x = sorted({s["concurrency"] for s in run.steps if s[metric]["n"]})
        p50 = [_median_of(at_level(run.steps, c), metric, "p50") for c in x]
        (line,) = latency.plot(x, p50, "o-", label=f"{run.label} p50 (median)")
        p95s = [[s[metric]["p95"] for s in at_level(run.steps, c) if s[metric]["n"]] for c in x]
        p95 = [statistics.median(v) for v in p95s]
        latency.errorbar(
            x,
            p95,
            yerr=[
                [m - min(v) for m, v in zip(p95, p95s, strict=True)],
                [max(v) - m for m, v in zip(p95, p95s, strict=True)],
            ],
            fmt="^--",
            capsize=3,
            color=line.get_color(),
            label=f"{run.label} p95 (median, range)",
        )
        levels_run = sorted({s["concurrency"] for s in run.steps})
        throughput.plot(
            levels_run,
            [_median_rate(at_level(run.steps, c)) for c in levels_run],
            "o-",
            color=line.get_color(),
            label=run.label,
        )
    levels = sorted({s["concurrency"] for run in runs for s in run.steps})
    for ax in (latency, throughput):
        ax.set_xticks(levels)
    latency.axhline(bound_s, color="red", linestyle=":", label=f"bound {bound_s:g} s")
    latency.set(xlabel="concurrent calls", ylabel=f"{METRIC_NAMES[metric]} latency (s)")
    latency.set_ylim(bottom=0)
    throughput.set_ylim(bottom=0)
    latency.set_title(f"{METRIC_NAMES[metric]} latency")
    throughput.set(xlabel="concurrent calls", ylabel="turns per second", title="throughput")
    if staged:
        _waterfall(axes[2], staged)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _waterfall(ax, runs: list[Run]) -> None:
    """Stacked mean stage times per step; llm_total includes llm_first_token, so it is left out."""
    seen = {key for run in runs for s in run.steps for key in s.get("server") or {}}
    stages = [s for s in stage_order(seen) if s != "llm_first_token"]
    labels, bottoms = [], []
    for run in runs:
        for s in run.steps:
            if s.get("server"):
                labels.append(f"{run.label}\n{s['concurrency']}")
                bottoms.append(s["server"])
    base = [0.0] * len(labels)
    for stage in stages:
        heights = [b.get(stage, {}).get("mean_s", 0.0) for b in bottoms]
        ax.bar(range(len(labels)), heights, bottom=base, label=stage)
        base = [a + h for a, h in zip(base, heights, strict=True)]
    ax.set_xticks(range(len(labels)), labels, fontsize=8)
    ax.set(xlabel="server / concurrent calls", ylabel="mean seconds per turn")
    ax.set_title("server stages (mean)")


def markdown(runs: list[Run], mode: str, bound_s: float, max_error_rate: float) -> str:
    parts = [headline(runs, mode, bound_s, max_error_rate), comparison(runs, mode), ""]
    parts += [spread_table(runs, mode), "", steps_table(runs)]
    if errors := error_lines(runs):
        parts += ["", "Errors:", *errors]
    if ended := ended_lines(runs):
        parts += ["", "Calls ended early:", *ended]
    stages = stages_table(runs)
    parts += ["", f"Server stages, mean seconds per turn (from GET /metrics). {MIDPOINTS}", ""]
    parts.append(stages or "server metrics unavailable")
    return "\n".join(parts) + "\n"


def write_outputs(
    json_path: Path, runs: list[Run], cfg: LoadConfig, bound_s: float, max_error_rate: float
) -> tuple[Path, Path | None]:
    """The Markdown table and the plot beside the JSON; prints the table."""
    text = markdown(runs, cfg.mode, bound_s, max_error_rate)
    md_path = json_path.with_suffix(".md")
    md_path.write_text(text)
    png_path = plot(runs, cfg.mode, bound_s, json_path.with_suffix(".png"))
    print(f"\n{text}\nwrote {json_path}, {md_path}" + (f", {png_path}" if png_path else ""))
    return md_path, png_path
