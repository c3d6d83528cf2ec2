"""Benchmark: a registration on the embedded default (both stores under ./.hokusai/), against the
targets of issue 9: <= 1.5 s wall and <= 150 MB peak RSS for a 2 KB model.

    .venv/bin/python benchmarks/embedded.py [--runs 5] [--python .venv-cli/bin/python] [--against DIR]

Each run starts in a fresh temporary directory with nothing set that points at a server (no
MLFLOW_TRACKING_URI, no HOKUSAI_DATABASE_URL), and does what the README says a user does:

1. ``db upgrade``              setup: creates the site database and MLflow's store (timed, printed)
2. ``token create A``, ``model register`` for A: the **first registration** in that ./.hokusai
3. ``token create B``, ``model register`` for B: a **second token** in the same ./.hokusai

Every command is its own process, as a user runs it: nothing is cached across processes that a
user would not have. Wall time, peak RSS (``ru_maxrss`` of that one process, as
``/usr/bin/time -f %M`` reports it) and CPU time (user + system) are the medians over the runs.
CPU time is printed beside wall time because the machine is shared: when other work competes for
the two cores, wall time grows and CPU time does not. The load average is printed before and after.

``--python`` is the interpreter that runs the CLI: the runtime-only virtualenv (mlflow-skinny), as
users install the tool; the package is taken from this checkout (PYTHONPATH). ``--against DIR``
measures another checkout (e.g. a worktree of main) in the same runs, interleaved, so both see the
same load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET_WALL_S = 1.5
TARGET_RSS_MB = 150.0
MODEL_BYTES = 2048


@dataclass(frozen=True)
class Measure:
    wall: float  # seconds
    cpu: float  # seconds, user + system
    rss_mb: float  # peak resident set size of the process, MB (10^6 bytes, as the issue states it)


def default_python() -> str:
    for candidate in (os.environ.get("HOKUSAI_TEST_CLI_PYTHON"), REPO / ".venv-cli" / "bin" / "python"):
        if candidate and Path(candidate).exists():
            return str(candidate)
    return sys.executable


def embedded_env(checkout: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HOKUSAI_", "PUBSUB_", "GITHUB_"))}
    env["PYTHONPATH"] = str(checkout)
    env["HOKUSAI_GIT_SHA"] = "0" * 40  # no `git rev-parse` in a temporary directory
    return env


def measured(cmd: list[str], *, cwd: Path, env: dict[str, str]) -> Measure:
    """Run ``cmd`` to completion; its own wall time, CPU time and peak RSS (from wait4)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{' '.join(cmd[2:5])} exited {process.returncode}:\n{err.read().decode()[-2000:]}")
    return Measure(wall=wall, cpu=usage.ru_utime + usage.ru_stime, rss_mb=usage.ru_maxrss * 1024 / 1e6)


def one_run(python: str, env: dict[str, str]) -> dict[str, Measure]:
    cli = [python, "-m", "hokusai_action"]
    with tempfile.TemporaryDirectory(prefix="hokusai-embedded-") as folder:
        work = Path(folder)
        model = work / "model"
        model.mkdir()
        (model / "weights.bin").write_bytes(os.urandom(MODEL_BYTES))
        (model / "metrics.json").write_text(json.dumps({"auroc": 0.91}))
        register = ["model", "register", "--model-path", str(model), "--metric", "auroc", "--baseline", "0.82"]
        result = {"setup (db upgrade)": measured([*cli, "db", "upgrade"], cwd=work, env=env)}
        for label, token in (("first registration", "A"), ("second token", "B")):
            measured([*cli, "token", "create", token], cwd=work, env=env)
            result[label] = measured([*cli, *register, "--token-id", token], cwd=work, env=env)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs, each in a fresh temporary directory")
    parser.add_argument("--python", default=default_python(), help="interpreter that runs the CLI")
    parser.add_argument("--against", type=Path, help="another checkout to measure in the same runs")
    args = parser.parse_args()
    checkouts = {"this checkout": REPO}
    if args.against:
        checkouts["against " + str(args.against)] = args.against.resolve()

    print(f"embedded default, {MODEL_BYTES} B model, {args.runs} runs, CLI on {args.python}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    runs: dict[str, list[dict[str, Measure]]] = {name: [] for name in checkouts}
    for index in range(args.runs):
        for name, checkout in checkouts.items():
            run = one_run(args.python, embedded_env(checkout))
            runs[name].append(run)
            shown = (f"{label} {m.wall:.2f} s / {m.cpu:.2f} s cpu / {m.rss_mb:.0f} MB" for label, m in run.items())
            print(f"  run {index + 1} ({name}): " + ", ".join(shown), flush=True)
    print(f"load average after:  {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    for name, measures in runs.items():
        print()
        print(f"{name}, median of {args.runs}")
        print(f"{'':<22} {'wall':>8} {'cpu':>8} {'peak RSS':>10}   target")
        for label in measures[0]:
            wall = statistics.median(r[label].wall for r in measures)
            cpu = statistics.median(r[label].cpu for r in measures)
            rss = statistics.median(r[label].rss_mb for r in measures)
            if label.startswith("setup"):
                verdict = "(one-time setup, no target)"
            else:
                ok = wall <= TARGET_WALL_S and rss <= TARGET_RSS_MB
                verdict = f"<= {TARGET_WALL_S} s, <= {TARGET_RSS_MB:.0f} MB: {'met' if ok else 'NOT met'}"
            print(f"{label:<22} {wall:>6.2f} s {cpu:>6.2f} s {rss:>7.0f} MB   {verdict}")


if __name__ == "__main__":
    main()
