"""Benchmarks, measured against a bare MLflow client in the same run (never a timed test).

    .venv/bin/python benchmarks/run.py [--runs 5] [--size-mb 200] [--files 20]
    .venv/bin/python benchmarks/run.py --shape all [--runs 1] [--python PATH] [--split-cores]   (issue 9's targets)

Needs the test extra in .venv (for `mlflow server`) and the machine's PostgreSQL. Builds, once, a
production-like virtualenv `.bench-venv` with the runtime dependencies only (mlflow-skinny), so the
CLI and the bare script import what users import. Prints:

1. registration: median of (hokusai CLI wall time / bare mlflow-skinny script wall time) over
   --runs pairs, each pair uploading the same model to the same server (order alternates);
2. re-run: wall time of registering the same bytes again, as a fraction of the first run;
3. `hokusai-ml-platform --help` wall time (median of 10);
4. events: median time that delivering to Pub/Sub (emulator), a webhook (loopback) and the
   database adds to an in-process registration, against the database sink alone.

With --shape (2gib-one-file, 200mb-20-files, 10k-small, or all) it measures instead, for each shape and
side by side in one run: the bare script's wall time, ours, their ratio, the re-run's wall time and
our peak RSS (``/usr/bin/time -f %M``), and writes them into benchmarks/results.json, the table in
benchmarks/README.md and benchmarks/shapes.png (``benchmarks/report.py``; the shapes measured replace
their rows). The model bytes are generated under a temporary folder and deleted after. --python
runs both with another interpreter (e.g. a venv that has the package installed; the worktree's code
is put first on PYTHONPATH either way).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.server
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import report  # noqa: E402
from tests.helpers import register_args  # noqa: E402
from tests.services import create_database, drop_database, start_mlflow_server  # noqa: E402

BENCH_VENV = REPO / ".bench-venv"


def production_venv() -> Path:
    python = BENCH_VENV / "bin" / "python"
    if not python.exists():
        print("building .bench-venv (runtime dependencies only, mlflow-skinny) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(BENCH_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-e", str(REPO)], check=True)
    return python


def make_model(root: Path, size_mb: int, files: int) -> Path:
    root.mkdir(parents=True)
    per_file = size_mb * 1024 * 1024 // files
    for index in range(files):
        with open(root / f"shard-{index:02d}.bin", "wb") as handle:
            remaining = per_file
            while remaining:
                chunk = min(remaining, 4 * 1024 * 1024)
                handle.write(os.urandom(chunk))
                remaining -= chunk
    (root / "metrics.json").write_text('{"auroc": 0.91}')
    return root


def timed(cmd: list[str], env: dict[str, str], cwd: Path) -> float:
    started = time.perf_counter()
    done = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return elapsed


def bench_registration(python: Path, env: dict[str, str], work: Path, runs: int, size_mb: int, files: int):
    cli = [str(python), "-m", "hokusai_action"]
    model = make_model(work / "model", size_mb, files)
    ratios, ours_times, bare_times, reruns = [], [], [], []
    subprocess.run([*cli, "db", "upgrade"], env=env, cwd=work, check=True, capture_output=True)
    for run in range(runs):
        token = f"BENCH{uuid.uuid4().hex[:8]}".upper()
        subprocess.run([*cli, "token", "create", token], env=env, cwd=work, check=True, capture_output=True)
        register = [*cli, *register_args(token, str(model))]
        bare = [
            str(python),
            str(REPO / "benchmarks" / "bare_mlflow_upload.py"),
            env["MLFLOW_TRACKING_URI"],
            str(model),
            f"bare-{token}",
        ]
        if run % 2 == 0:
            ours, base = timed(register, env, work), timed(bare, env, work)
        else:
            base, ours = timed(bare, env, work), timed(register, env, work)
        rerun = timed(register, env, work)
        ours_times.append(ours)
        bare_times.append(base)
        ratios.append(ours / base)
        reruns.append(rerun / ours)
        print(
            f"  run {run + 1}: hokusai {ours:.2f} s, bare {base:.2f} s, ratio {ours / base:.3f}, "
            f"re-run {rerun:.2f} s ({rerun / ours:.2f}x)",
            flush=True,
        )
    return ratios, ours_times, bare_times, reruns


SHAPES = {
    # name: (files, bytes per file, the ratio issue 9 asks for)
    "2gib-one-file": (1, 2 * 1024**3, 1.03),
    "200mb-20-files": (20, 10 * 1024**2, 1.10),
    "10k-small": (10_000, 10 * 1024, 0.35),
}


def make_shape(root: Path, files: int, per_file: int) -> Path:
    """Random bytes (incompressible, never deduplicated), written once per shape."""
    root.mkdir(parents=True)
    block = os.urandom(min(per_file, 4 * 1024 * 1024))
    width = len(str(files - 1))
    for index in range(files):
        with open(root / f"part-{index:0{width}d}.bin", "wb") as handle:
            handle.write(os.urandom(16))  # every file differs: no store can deduplicate them
            remaining = per_file - 16
            while remaining > 0:
                chunk = block[: min(remaining, len(block))]
                handle.write(chunk)
                remaining -= len(chunk)
    (root / "metrics.json").write_text('{"auroc": 0.91}')
    return root


def timed_rss(
    cmd: list[str], env: dict[str, str], cwd: Path, before: Callable[[Path], None] | None = None
) -> tuple[float, int]:
    """Wall time and peak RSS (kB, from GNU time) of ``cmd``.

    Dirty pages are flushed first (untimed): the server writes every upload to disk, and the kernel's
    writeback of one run's gigabytes must not land in the next run's time. ``before(cwd)`` runs
    first, untimed.
    """
    rss_file = cwd / "rss.txt"
    if before is not None:
        before(cwd)
    os.sync()
    started = time.perf_counter()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *cmd], env=env, cwd=cwd, capture_output=True, text=True
    )
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:4])} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return elapsed, int(rss_file.read_text().split()[-1])


def forget_stored(work: Path) -> None:
    """Delete what the server stored so far, so that each upload finds the machine as the others did.

    With the last upload's gigabytes still on the server's disk, the next upload's writes cost the
    server 2-3 times the CPU, whoever the client is (``benchmarks/upload_cpu.py --settle``): one pair
    of 2 GiB uploads gave 5.5 s to the first and 10 s to the second, in either order. Nothing later
    reads them: a re-run finds its version by tag.
    """
    stored = work / "mlartifacts"
    for child in stored.iterdir() if stored.is_dir() else ():
        shutil.rmtree(child, ignore_errors=True)


def bench_shapes(
    python: Path, env: dict[str, str], work: Path, shapes: list[str], runs: int
) -> tuple[list[str], list[dict]]:
    """The printed rows, and one result per shape for ``benchmarks/report.py``."""
    cli = [str(python), "-m", "hokusai_action"]
    subprocess.run([*cli, "db", "upgrade"], env=env, cwd=work, check=True, capture_output=True)
    rows, results = [], []
    for shape in shapes:
        files, per_file, target = SHAPES[shape]
        print(f"{shape}: generating {files} x {per_file / 1024**2:.2f} MiB ...", flush=True)
        model = make_shape(work / f"model-{shape}", files, per_file)
        ratios, reruns, hashed_alone, bares, ours_times, peak_rss = [], [], [], [], [], []
        hash_alone = [str(python), str(REPO / "benchmarks" / "hash_alone.py"), str(model)]
        for run in range(runs):
            token = f"B{uuid.uuid4().hex[:8]}".upper()
            subprocess.run([*cli, "token", "create", token], env=env, cwd=work, check=True, capture_output=True)
            ours_cmd = [*cli, *register_args(token, str(model)), "--quiet"]
            bare_cmd = [str(python), str(REPO / "benchmarks" / "bare_mlflow_upload.py"), env["MLFLOW_TRACKING_URI"]]
            bare_cmd += [str(model), f"bare-{token}"]
            # what the server stored is deleted (and the disk flushed) before each upload: see forget_stored
            if run % 2 == 0:
                ours, rss = timed_rss(ours_cmd, env, work, before=forget_stored)
                bare, _ = timed_rss(bare_cmd, env, work, before=forget_stored)
            else:
                bare, _ = timed_rss(bare_cmd, env, work, before=forget_stored)
                ours, rss = timed_rss(ours_cmd, env, work, before=forget_stored)
            # the uploads just wrote gigabytes that may have pushed the model out of the page cache: read it
            # once untimed, so that hashlib alone and the re-run both find it cached, as a re-run usually does
            subprocess.run(hash_alone, env=env, cwd=work, check=True)
            hashed_alone.append(timed_rss(hash_alone, env, work)[0])
            rerun, rerun_rss = timed_rss(ours_cmd, env, work)
            row = (
                f"| {shape} | {bare:.2f} s | {ours:.2f} s | {ours / bare:.2f} (target <= {target}) | "
                f"{rerun:.2f} s | {max(rss, rerun_rss) / 1024:.0f} MB |"
            )
            print("  " + row, flush=True)
            rows.append(row)
            ratios.append(ours / bare)
            reruns.append(rerun)
            bares.append(round(bare, 2))
            ours_times.append(round(ours, 2))
            peak_rss.append(max(rss, rerun_rss))
        summary = (
            f"{shape}: median ratio {statistics.median(ratios):.2f} over {runs} pair(s) (target <= {target}); "
            f"median re-run {statistics.median(reruns):.2f} s, against {statistics.median(hashed_alone):.2f} s for "
            "hashlib's SHA-256 alone over the same (cached) files in a bare interpreter, measured just before each"
        )
        print("  " + summary, flush=True)
        rows.append(summary)
        results.append(
            {
                "shape": shape,
                "bare_s": bares,
                "ours_s": ours_times,
                "rerun_s": round(statistics.median(reruns), 2),
                "hash_alone_s": round(statistics.median(hashed_alone), 2),
                "peak_rss_mb": round(max(peak_rss) / 1024),
                "target": target,
            }
        )
        shutil.rmtree(model)
    return rows, results


def bench_help(python: Path, env: dict[str, str], work: Path) -> float:
    cli = str(python.with_name("hokusai-ml-platform"))
    times = [timed([cli, "--help"], env, work) for _ in range(10)]
    return statistics.median(times)


class _Receiver(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        return None


def bench_events(env: dict[str, str], work: Path, runs: int) -> list[float] | None:
    """In-process, so that process start-up noise does not swamp a few milliseconds."""
    from tests.pubsub_emulator import EmulatorUnavailable, PubSubEmulator, find_emulator_script, free_port

    try:
        script = find_emulator_script()
    except EmulatorUnavailable as exc:
        print(f"  events: skipped ({exc})")
        return None
    emulator = PubSubEmulator(script=script, port=free_port(), log_path=work / "emulator.log")
    emulator.start()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        topic = emulator.make_topic()
        emulator.make_subscription(topic)
        os.environ["PUBSUB_EMULATOR_HOST"] = emulator.host
        from hokusai_action.commands.register import run_register
        from hokusai_action.commands.wiring import build_database
        from hokusai_action.settings.loader import load_settings

        secret = "whsec_" + base64.b64encode(os.urandom(32)).decode()
        all_sinks = {
            **env,
            "HOKUSAI_EVENT_SINKS": "pubsub,webhook,database",
            "HOKUSAI_PUBSUB_TOPIC": topic,
            "HOKUSAI_WEBHOOK_URL": f"http://127.0.0.1:{server.server_port}/hook",
            "HOKUSAI_WEBHOOK_SECRET": secret,
            "PUBSUB_EMULATOR_HOST": emulator.host,
        }
        db_only = {**env, "HOKUSAI_EVENT_SINKS": "database"}
        added = []
        for run in range(runs + 1):  # the first pair warms up clients and connections
            pair = {}
            for label, environ in (("all", all_sinks), ("db", db_only))[:: 1 if run % 2 else -1]:
                token = f"EV{uuid.uuid4().hex[:8]}".upper()
                model = work / f"small-{token}"
                model.mkdir()
                (model / "weights.bin").write_bytes(os.urandom(256 * 1024))
                (model / "metrics.json").write_text('{"auroc": 0.9}')
                flags = {"token_id": token, "model_path": str(model), "metric": "auroc", "baseline": "0.8"}
                settings = load_settings(flags, environ=environ, cwd=work)
                database = build_database(settings)
                from hokusai_action.db.store import insert_token

                with database.unit_of_work() as uow:
                    insert_token(uow, token)
                    uow.commit()
                database.dispose()
                started = time.perf_counter()
                result, code = run_register(settings)
                pair[label] = time.perf_counter() - started
                assert code == 0 and all(result.events_delivered.values()), result.events_delivered
            if run:
                added.append(pair["all"] - pair["db"])
                print(
                    f"  events run {run}: all sinks {pair['all'] * 1000:.0f} ms, database only "
                    f"{pair['db'] * 1000:.0f} ms, added {(pair['all'] - pair['db']) * 1000:.0f} ms",
                    flush=True,
                )
        return added
    finally:
        server.shutdown()
        emulator.stop()


@contextlib.contextmanager
def bench_services() -> Iterator[tuple[Path, dict[str, str]]]:
    """A fresh site database and an MLflow server (PostgreSQL backend) in a temporary folder: the folder
    and the environment a user would set for them, this checkout first on ``PYTHONPATH``."""
    database_url = create_database("hokusai_bench")
    mlflow_backend = create_database("hokusai_bench_mlflow")
    with tempfile.TemporaryDirectory(prefix="hokusai-bench-") as tmp:
        work = Path(tmp)
        server = start_mlflow_server(work, mlflow_backend)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HOKUSAI_"))}
        env.update(
            MLFLOW_TRACKING_URI=server.url,
            HOKUSAI_DATABASE_URL=database_url,
            HOKUSAI_HOME=str(work / ".hokusai"),
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        )
        try:
            yield work, env
        finally:
            server.stop()
            drop_database(database_url)
            drop_database(mlflow_backend)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--event-runs", type=int, default=9, help="pairs for the events measurement (noisy)")
    parser.add_argument("--skip-events", action="store_true")
    parser.add_argument(
        "--shape", action="append", choices=[*SHAPES, "all"], help="issue 9's shapes, side by side (repeatable)"
    )
    parser.add_argument("--python", type=Path, help="interpreter for the CLI and the bare script (default .bench-venv)")
    parser.add_argument(
        "--split-cores",
        action="store_true",
        help="with --shape: the MLflow server on one half of the cores, the clients on the other (as when the "
        "server runs on a machine of its own; PostgreSQL stays unpinned)",
    )
    args = parser.parse_args()

    python = args.python.absolute() if args.python else production_venv()
    if args.shape:
        shapes = list(SHAPES) if "all" in args.shape else list(dict.fromkeys(args.shape))
        return main_shapes(python, shapes, args.runs, split_cores=args.split_cores)
    with bench_services() as (work, env):
        print(f"registration: {args.size_mb} MB in {args.files} files, {args.runs} pairs", flush=True)
        ratios, ours, bare, reruns = bench_registration(python, env, work, args.runs, args.size_mb, args.files)
        help_time = bench_help(python, env, work)
        added = None if args.skip_events else bench_events(env, work, args.event_runs)

    print("\nresults")
    print(
        f"  registration ratio (hokusai / bare mlflow-skinny), median: {statistics.median(ratios):.3f}"
        f"  [hokusai {statistics.median(ours):.2f} s, bare {statistics.median(bare):.2f} s]  target <= 1.15"
    )
    print(f"  re-run of the same bytes, median: {statistics.median(reruns):.3f}x of the first run  target <= 0.3")
    print(f"  hokusai-ml-platform --help, median wall time: {help_time:.3f} s  target <= 0.25")
    if added is not None:
        print(
            f"  events: delivery to pubsub+webhook+database adds, median: {statistics.median(added) * 1000:.1f} ms"
            "  target <= 50 ms"
        )


def main_shapes(python: Path, shapes: list[str], runs: int, split_cores: bool = False) -> None:
    cores = sorted(os.sched_getaffinity(0))
    server_cores, client_cores = set(cores[len(cores) // 2 :]), set(cores[: len(cores) // 2])
    if split_cores and not client_cores:
        raise SystemExit("--split-cores needs at least two cores")
    if split_cores:  # the server and every process it starts inherit this
        os.sched_setaffinity(0, server_cores)
    with bench_services() as (work, env):
        if split_cores:  # and every command timed from here on inherits this
            os.sched_setaffinity(0, client_cores)
            print(f"MLflow server on cores {sorted(server_cores)}, the clients on {sorted(client_cores)}", flush=True)
        rows, results = bench_shapes(python, env, work, shapes, runs)
    if split_cores:
        results = [{**result, "split_cores": True} for result in results]
    report.update(results, setup=report.load_results()["setup"])
    print("\n| shape | bare script | model register | ratio | re-run | peak RSS (ours) |")
    print("|---|---|---|---|---|---|")
    print("\n".join(row for row in rows if row.startswith("|")))
    print("\n".join(row for row in rows if not row.startswith("|")))
    print("targets: re-run of 2 GiB <= 1.3 s; peak RSS <= 150 MB")
    written = (report.RESULTS, report.README, report.PLOT)
    print("written: " + ", ".join(str(path.relative_to(REPO)) for path in written))


if __name__ == "__main__":
    main()
