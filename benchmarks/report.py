"""The current benchmark figures: one table in benchmarks/README.md and one plot, from results.json.

``benchmarks/run.py --shape ...`` measures and calls ``update``: the shapes it measured replace their
rows in ``results.json``, then the README's table and ``shapes.png`` are written again from the whole
file. Only the current figures are kept; earlier ones live in git's history.

    .venv/bin/python benchmarks/report.py      # write the table and the plot again from results.json
"""

from __future__ import annotations

import json
import statistics
from datetime import date
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results.json"
README = HERE / "README.md"
PLOT = HERE / "shapes.png"
TABLE_START = "<!-- benchmarks/run.py writes this table: do not edit by hand -->"
TABLE_END = "<!-- end of the table -->"

LABELS = {
    "2gib-one-file": "one 2 GiB file",
    "200mb-20-files": "200 MB in 20 files",
    "10k-small": "10,000 files of 10 KiB",
}


def label(row: dict[str, Any]) -> str:
    text = LABELS.get(row["shape"], row["shape"])
    return text + (", split cores" if row.get("split_cores") else "")


def ratios(row: dict[str, Any]) -> list[float]:
    """Ours over the bare client's, pair by pair (each pair ran side by side)."""
    return [ours / bare for ours, bare in zip(row["ours_s"], row["bare_s"], strict=True)]


def render_table(results: dict[str, Any]) -> str:
    lines = [
        "| shape | bare `mlflow-skinny` | `model register` | ratio (range, pairs) | target | "
        "re-run / hashlib alone | peak RSS (ours) | measured |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results["shapes"]:
        pair_ratios = ratios(row)
        spread = f"({min(pair_ratios):.2f}-{max(pair_ratios):.2f}, {len(pair_ratios)} pairs)"
        lines.append(
            f"| {label(row)} | {statistics.median(row['bare_s']):.2f} s | {statistics.median(row['ours_s']):.2f} s | "
            f"**{statistics.median(pair_ratios):.2f}** {spread} | <= {row['target']:.2f} | "
            f"{row['rerun_s']:.2f} s / {row['hash_alone_s']:.2f} s | {row['peak_rss_mb']} MB | {row['measured']} |"
        )
    lines.append("")
    lines.append("Wall times are medians over the pairs. " + results["setup"])
    return "\n".join(lines)


def write_readme(results: dict[str, Any], readme: Path = README) -> None:
    """Put the table between the README's markers, leaving the rest of the file as it is."""
    text = readme.read_text(encoding="utf-8")
    head, start, rest = text.partition(TABLE_START)
    _, end, tail = rest.partition(TABLE_END)
    if not start or not end:
        raise SystemExit(f"{readme} lacks the table markers {TABLE_START!r} ... {TABLE_END!r}")
    readme.write_text(f"{head}{TABLE_START}\n{render_table(results)}\n{TABLE_END}{tail}", encoding="utf-8")


def draw_plot(results: dict[str, Any], png: Path = PLOT) -> None:
    """One panel per shape: the median wall time of the bare client and of ours, side by side, and
    the re-run of the same bytes. Each panel has its own scale (seconds differ a hundredfold)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["shapes"]
    figure, axes = plt.subplots(1, len(rows), figsize=(3.2 * len(rows), 3.6), squeeze=False)
    colours = ("#9e9e9e", "#5e35b1", "#b39ddb")
    for axis, row in zip(axes[0], rows, strict=True):
        bars = [statistics.median(row["bare_s"]), statistics.median(row["ours_s"]), row["rerun_s"]]
        names = ["bare\nmlflow-skinny", "model\nregister", "re-run"]
        drawn = axis.bar(names, bars, color=colours)
        axis.bar_label(drawn, labels=[f"{value:.1f} s" for value in bars], fontsize=8)
        axis.set_title(
            f"{label(row)}\nratio {statistics.median(ratios(row)):.2f} (target <= {row['target']:.2f})", fontsize=9
        )
        axis.set_ylabel("seconds (median)", fontsize=8)
        axis.tick_params(labelsize=8)
        axis.set_ylim(0, max(bars) * 1.18)
        axis.spines[["top", "right"]].set_visible(False)
    figure.suptitle("Registration wall time against MLflow's own client", fontsize=10)
    figure.tight_layout()
    figure.savefig(png, dpi=110, metadata={"Software": None})
    plt.close(figure)


def load_results(path: Path = RESULTS) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def update(measured: list[dict[str, Any]], *, setup: str, path: Path = RESULTS) -> dict[str, Any]:
    """Replace the rows of the shapes just measured (same shape, same core split), keep the others,
    and write results.json, the README's table and the plot again."""
    results = load_results(path) if path.exists() else {"shapes": []}
    key = lambda row: (row["shape"], bool(row.get("split_cores")))  # noqa: E731
    fresh = {key(row): row for row in measured}
    kept = [row for row in results["shapes"] if key(row) not in fresh]
    order = {shape: index for index, shape in enumerate(LABELS)}
    today = date.today().isoformat()
    measured = [{**row, "measured": today} for row in measured]
    results["shapes"] = sorted([*kept, *measured], key=lambda row: (order.get(row["shape"], 99), key(row)))
    results["setup"] = setup
    path.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    render(results, readme=path.with_name(README.name), png=path.with_name(PLOT.name))
    return results


def render(results: dict[str, Any], *, readme: Path = README, png: Path = PLOT) -> None:
    write_readme(results, readme)
    draw_plot(results, png)


if __name__ == "__main__":
    render(load_results())
