"""Draw the stop-latency CDFs of a bench_budget.py run: one panel per CPU budget, one curve per number of sessions
(and per daemon when the run compared two), the floors as vertical lines.

    python benchmarks/plot_cdf.py [--input build/bench/budget.json] [--output docs/stop-latency-cdf.png]

x: deadline -> duty 0 at pigpiod (the emulator's log), ms, log scale: per expiry the smaller of bench_budget.py's two
upper bounds (the daemon's exact deadline is not on the wire), so the true latency is at most this. y: the share of
expiries stopped by then, on a logit scale so that p50, p90 and p99 are equally far apart (the tail is what matters).
A log axis cannot show a value <= 0 (an early stop: duty 0 before the deadline) or below its left edge (0.02 ms):
those are drawn at the left edge, and each panel counts them in its title and its box. Floors: one raw pigpiod round
trip (measured in the same run), a SCHED_FIFO timer's lateness in the same cgroup (the witness, same run), and the
reference floor quoted from /work/shared/reference/performance.md (not measured in the run).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.lines import Line2D

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python benchmarks/plot_cdf.py` as well as `python -m benchmarks.plot_cdf`
    sys.path.insert(0, str(ROOT))

from benchmarks.stats import pct  # noqa: E402

X_MIN = 0.02  # ms: the x axis's left edge
COLOURS = {1: "#1b9e77", 10: "#7570b3", 100: "#d95f02"}
EXTRA_COLOURS = ["#e7298a", "#66a61e", "#e6ab02", "#a6761d"]
STYLES: list[Literal["-", "--", ":", "-."]] = ["-", "--", ":", "-."]
Json = dict[str, Any]


def cdf(values: list[float]) -> tuple[list[float], list[float]]:
    """Sorted values and their plotting positions (i + 0.5) / n, inside (0, 1) for the logit scale; a value left of
    the axis (early stops, <= 0, included) is drawn at its left edge, X_MIN (the caller counts them)."""
    ordered = sorted(max(v, X_MIN) for v in values)
    n = len(ordered)
    return ordered, [(i + 0.5) / n for i in range(n)]


def pi_label(fraction: float, rows: list[Json]) -> str:
    """The Pi whose single core is nearest this share of a core here (by the Python figure, else sysbench)."""
    best, distance = "", math.inf
    for row in rows:
        py = row.get("python")
        centre = math.sqrt(py[0] * py[1]) if py else row.get("sysbench")
        if not centre:
            continue
        d = abs(math.log(fraction / centre))
        if d < distance:
            best, distance = row["pi"].split(" (")[0], d
    return f"≈ {best} core" if best and distance < math.log(1.6) else ""


def draw(data: Json, output: Path, daemons: list[str] | None) -> Path:
    runs = [r for r in data["runs"] if r.get("cells")]
    labels = daemons or list(dict.fromkeys(r["daemon"] for r in runs))
    runs = [r for r in runs if r["daemon"] in labels]
    budgets = list(dict.fromkeys(r["budget"]["label"] for r in runs))
    if not budgets:
        raise SystemExit("no stop-latency cells in the results")
    fractions = {r["budget"]["label"]: r["budget"]["fraction"] for r in runs}
    pi_rows = data.get("calibration", {}).get("pi", [])
    columns = min(3, len(budgets) + 1)
    rows = math.ceil((len(budgets) + 1) / columns)
    fig, axes_grid = plt.subplots(rows, columns, figsize=(5.6 * columns, 4.3 * rows), squeeze=False,
                                  sharex=True, sharey=True)
    axes: list[Axes] = [ax for line in axes_grid for ax in line]
    floor = data.get("floors", {}).get("emulator_rtt", {}).get("back_to_back", {})
    reference = data.get("meta", {}).get("performance_md_us", {})
    ref_fifo = reference.get("SCHED_FIFO thread in a separate process, lateness p50 / p99 / max")
    longest = max((v for r in runs for c in r["cells"] for v in c["stop"]["latency_ms"]), default=10.0)
    top = max(longest * 1.3, 2.0)
    decade = 10 ** math.floor(math.log10(top))
    x_max = next(k * decade for k in (1, 2, 5, 10) if k * decade >= top)
    sessions_seen: list[int] = []
    early_total = 0
    for ax, budget in zip(axes, budgets, strict=False):
        witness: list[float] = []
        summary: list[str] = []
        early_here = 0
        for k, label in enumerate(labels):
            run = next((r for r in runs if r["daemon"] == label and r["budget"]["label"] == budget), None)
            if run is None:
                continue
            for cell in run["cells"]:
                values = cell["stop"]["latency_ms"]
                if not values:
                    continue
                n = cell["sessions"]
                if n not in sessions_seen:
                    sessions_seen.append(n)
                colour = COLOURS.get(n) or EXTRA_COLOURS[sessions_seen.index(n) % len(EXTRA_COLOURS)]
                xs, ys = cdf(values)
                early = sum(1 for v in values if v < 0)  # as bench_budget.py counts "before_deadline"
                left = sum(1 for v in values if 0 <= v < X_MIN)
                early_here += early
                off_axis = "".join([f"  early {early}" if early else "", f"  <{X_MIN:g} {left}" if left else ""])
                summary.append(f"{label + ' ' if len(labels) > 1 else ''}{n:>3}: p50 {pct(values, 0.5):.2f}"
                               f"  p99 {pct(values, 0.99):.2f}  max {max(values):.2f}{off_axis}")
                ax.step(xs, ys, where="post", color=colour, linestyle=STYLES[k % len(STYLES)],
                        linewidth=2.0 if k == 0 else 1.4, alpha=1.0 if k == 0 else 0.8)
                fifo = cell.get("witness", {}).get("fifo", {})
                if k == 0 and fifo.get("p99") is not None:
                    witness.append(fifo["p99"])
        if floor.get("p50"):
            ax.axvline(floor["p50"], color="black", linewidth=1.0, linestyle="-", alpha=0.7)
        if witness:
            ax.axvline(max(witness), color="#555555", linewidth=1.0, linestyle="--")
        if ref_fifo:
            ax.axvline(ref_fifo[1] / 1000, color="#999999", linewidth=1.0, linestyle=":")
        ax.axvline(1.0, color="#c00000", linewidth=0.8, alpha=0.5)
        first = next((r for r in runs if r["budget"]["label"] == budget), None)
        if first is not None and first["budget"].get("quota_us"):
            stall = (first["budget"]["period_us"] - first["budget"]["quota_us"]) / 1000
            ax.axvline(stall, color="#b8860b", linewidth=1.2, linestyle="-.")
        if summary:
            ax.text(0.98, 0.03, "sessions, ms\n" + "\n".join(summary), transform=ax.transAxes, ha="right",
                    va="bottom", fontsize=7.5, family="monospace",
                    bbox={"boxstyle": "round", "facecolor": "white", "alpha": 0.85, "edgecolor": "#cccccc"})
        pi = pi_label(fractions[budget], pi_rows)
        early_total += early_here
        ax.set_title(f"{budget} of one core here" + (f"  ({pi})" if pi else "")
                     + f"; early stops: {early_here}", fontsize=11)
        ax.grid(True, which="major", alpha=0.3)
        ax.grid(True, which="minor", axis="x", alpha=0.1)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_yscale("logit")
        ax.set_xlim(X_MIN, x_max)
        ax.tick_params(labelbottom=True, labelleft=True)
        ax.set_ylim(0.01, 0.995)
        ax.set_yticks([0.05, 0.1, 0.5, 0.9, 0.99])
        ax.set_yticklabels(["p5", "p10", "p50", "p90", "p99"])
        ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    for ax in axes[:len(budgets)]:
        ax.set_xlabel("deadline → duty 0 at pigpiod, ms, upper bound (log)", fontsize=9)
    for line in axes_grid:
        line[0].set_ylabel("share of expiries stopped")
    # the last panel: legend and how to read it
    key = axes[len(budgets)]
    for ax in axes[len(budgets) + 1:]:
        ax.set_visible(False)
    key.set_axis_off()
    handles: list[Line2D] = [Line2D([], [], color=COLOURS.get(n) or EXTRA_COLOURS[i % len(EXTRA_COLOURS)],
                                    linewidth=2, label=f"{n} heartbeating session{'s' if n != 1 else ''}")
                             for i, n in enumerate(sessions_seen)]
    handles += [Line2D([], [], color="black", linestyle=STYLES[k % len(STYLES)], linewidth=2 if k == 0 else 1.4,
                       label=f"daemon: {label}") for k, label in enumerate(labels)] if len(labels) > 1 else []
    if floor.get("p50"):
        handles.append(Line2D([], [], color="black", linewidth=1, alpha=0.7,
                              label=f"floor: one raw pigpiod round trip, p50 {floor['p50']:.3f} ms (this run)"))
    handles.append(Line2D([], [], color="#555555", linestyle="--", linewidth=1,
                          label=f"floor: SCHED_FIFO timer in the same cgroup, worst p99 ({labels[0]}, this run)"))
    if ref_fifo:
        handles.append(Line2D([], [], color="#999999", linestyle=":", linewidth=1,
                              label=f"reference, quoted (performance.md, not this run): SCHED_FIFO process, "
                                    f"p99 {ref_fifo[1]} µs"))
    handles.append(Line2D([], [], color="#b8860b", linewidth=1.2, linestyle="-.",
                          label="one throttled stretch: (1 − share) × CFS period"))
    handles.append(Line2D([], [], color="#c00000", linewidth=0.8, alpha=0.5, label="1 ms after the deadline"))
    key.legend(handles=handles, loc="upper left", fontsize=9.5, frameon=False)
    meta = data.get("meta", {})
    counts = sorted({len(c["stop"]["latency_ms"]) for r in runs for c in r["cells"]})
    notes = [f"{counts[0]}–{counts[-1]} expiries per curve; early stops (duty 0 before the deadline): {early_total}"
             if counts else "",
             "x: per expiry the smaller of two upper bounds (bench_budget.py);",
             f"values left of {X_MIN:g} ms (early stops too) drawn at the left edge, counted in each box",
             f"window {meta.get('window_s', 0.5) * 1000:g} ms, heartbeats every window/5; 14 lanes drive a motor "
             "and go silent",
             "the daemon pinned to one CPU, in a cgroup with a CFS quota",
             "(the share above); clients and emulator on the other CPU",
             f"{meta.get('date', '')}; {(meta.get('machine') or [''])[0][:60]}",
             "the machine is shared: see BENCHMARKS.md for its load"]
    key.text(0.0, 0.02, "\n".join(n for n in notes if n), fontsize=8.5, va="bottom", color="#333333",
             transform=key.transAxes)
    fig.suptitle("rover-safety: when does the motor stop? deadline → PWM duty 0 (an upper bound), by CPU budget",
                 fontsize=14)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=130)
    plt.close(fig)
    return output


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--input", type=Path, default=ROOT / "build" / "bench" / "budget.json")
    p.add_argument("--output", type=Path, default=ROOT / "docs" / "stop-latency-cdf.png")
    p.add_argument("--daemon", action="append", default=None,
                   help="only this daemon's curves (repeat for several; default every daemon in the run)")
    args = p.parse_args(argv)
    data = json.loads(args.input.read_text())
    print(f"wrote {draw(data, args.output, args.daemon)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
