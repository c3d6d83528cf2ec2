"""benchmarks/report.py: the one current table and the plot that benchmarks/run.py writes.

The committed table is what results.json renders (so it cannot be edited apart from the figures);
the plot is a real PNG with a panel per shape; a shape measured again replaces its row only.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path
from types import ModuleType

import pytest

from tests.helpers import load_script

pytestmark = [pytest.mark.unit]

REPO_ROOT = Path(__file__).resolve().parents[3]
BENCHMARKS = REPO_ROOT / "benchmarks"


@pytest.fixture(scope="module")
def report() -> ModuleType:
    return load_script(BENCHMARKS / "report.py", "benchmarks_report")


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_the_readme_table_is_what_results_json_renders(report: ModuleType) -> None:
    results = report.load_results()
    readme = (BENCHMARKS / "README.md").read_text(encoding="utf-8")
    assert f"{report.TABLE_START}\n{report.render_table(results)}\n{report.TABLE_END}" in readme
    shapes = {row["shape"] for row in results["shapes"]}
    assert shapes == set(report.LABELS), "every shape run.py measures has its current row"


def test_the_plot_draws_each_shape_from_the_table(report: ModuleType, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the benchmarks extra (pip install -e '.[benchmarks]') draws the plot")
    from PIL import Image

    results = report.load_results()
    png = tmp_path / "shapes.png"
    report.draw_plot(results, png)
    width, height = png_size(png)
    assert (width, height) == png_size(BENCHMARKS / "shapes.png"), "the committed plot is this function's"
    assert width > height * 2  # one panel per shape, side by side
    with Image.open(png) as image:
        colours = {colour for _, colour in image.convert("RGB").getcolors(maxcolors=1 << 20)}
    # the bars' three colours are drawn (the bare client, ours, the re-run)
    for hex_colour in ("#9e9e9e", "#5e35b1", "#b39ddb"):
        assert tuple(int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)) in colours


def test_a_shape_measured_again_replaces_only_its_row(report: ModuleType, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the benchmarks extra (pip install -e '.[benchmarks]') draws the plot")
    for name in ("results.json", "README.md"):
        shutil.copy(BENCHMARKS / name, tmp_path / name)
    before = json.loads((tmp_path / "results.json").read_text(encoding="utf-8"))
    fresh = {
        "shape": "200mb-20-files",
        "bare_s": [2.0, 2.2],
        "ours_s": [1.0, 1.1],
        "rerun_s": 0.3,
        "hash_alone_s": 0.2,
        "peak_rss_mb": 100,
        "target": 1.1,
    }
    after = report.update([fresh], setup=before["setup"], path=tmp_path / "results.json")
    by_key = {(row["shape"], bool(row.get("split_cores"))): row for row in after["shapes"]}
    assert by_key[("200mb-20-files", False)]["ours_s"] == [1.0, 1.1]
    assert len(after["shapes"]) == len(before["shapes"])
    for row in before["shapes"]:
        if row["shape"] != "200mb-20-files":
            assert by_key[(row["shape"], bool(row.get("split_cores")))] == row
    table = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "| 200 MB in 20 files | 2.10 s | 1.05 s | **0.50** (0.50-0.50, 2 pairs) | <= 1.10 |" in table
    assert table.count(report.TABLE_START) == 1 and table.count(report.TABLE_END) == 1
    assert png_size(tmp_path / "shapes.png")[0] > 0
