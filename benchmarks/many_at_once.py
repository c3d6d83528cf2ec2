"""16 registrations at once on 16 tokens against one MLflow server and one PostgreSQL (a
measurement, never a timed test).

    .venv/bin/python benchmarks/many_at_once.py [--runs 16] [--size-kb 256] [--python .venv-cli/bin/python]

Starts a real `mlflow server` (PostgreSQL backend, --serve-artifacts) and a fresh site database
with the test helpers, creates --runs draft tokens and small models (a --size-kb weights file and a
metrics.json each), times one registration alone, then starts --runs `model register` processes at
the same moment with the interpreter given by --python (the runtime virtualenv, mlflow-skinny, as
users install it). While they run, pg_stat_activity is sampled every 20 ms and each connection of application_name
`hokusai-ml-platform` is mapped to its client process (tests/pg_connections.py). Prints each exit
code, the p50 and p95 (nearest rank) wall time, each process's peak connections and the peak total,
and checks that every token is registered with version 1. Exits 1 if any check fails.

Needs the test extra in .venv (for `mlflow server`) and the machine's PostgreSQL.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import sqlalchemy as sa  # noqa: E402

from benchmarks.proc_cpu import live_processes  # noqa: E402
from hokusai_action.db.store import POOL_SIZE, Database, get_token, insert_token  # noqa: E402
from tests.helpers import register_args  # noqa: E402
from tests.pg_connections import ConnectionSampler  # noqa: E402
from tests.services import PG_ADMIN_URL, create_database, drop_database, start_mlflow_server  # noqa: E402


def nearest_rank(values: list[float], percent: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(percent / 100 * len(ordered)) - 1)]


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU of every live process in process group ``pgid`` (the MLflow server and its workers)."""
    return sum(process.seconds for process in live_processes() if process.group == pgid)


def make_small_model(root: Path, size_kb: int) -> Path:
    root.mkdir(parents=True)
    (root / "weights.bin").write_bytes(os.urandom(size_kb * 1024))
    (root / "metrics.json").write_text('{"auroc": 0.91}')
    return root


def run(args: argparse.Namespace, work: Path, site_url: str, mlflow_url: str, server_pgid: int) -> bool:
    site = Database(site_url, timeout=30)
    site.upgrade()
    tokens = [f"CONC{n:02d}{uuid.uuid4().hex[:6]}".upper() for n in range(args.runs + 1)]
    with site.unit_of_work() as uow:
        for token in tokens:
            insert_token(uow, token)
        uow.commit()
    models = [make_small_model(work / f"model-{n}", args.size_kb) for n in range(args.runs + 1)]
    solo_token, solo_model = tokens.pop(), models.pop()  # one registration alone first, for scale
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HOKUSAI_", "PUBSUB_", "GITHUB_"))}
    env.update(
        PYTHONPATH=str(REPO),
        MLFLOW_TRACKING_URI=mlflow_url,
        HOKUSAI_DATABASE_URL=site_url,
        HOKUSAI_HOME=str(work / ".hokusai"),
    )
    solo = [args.python, "-m", "hokusai_action", *register_args(solo_token, solo_model)]
    began = time.perf_counter()
    done = subprocess.run(solo, env=env, cwd=work, capture_output=True, text=True, check=False)
    alone = time.perf_counter() - began
    if done.returncode != 0:
        print(f"  the registration alone failed ({done.returncode}): {done.stderr.strip()[-500:]}")
        return False
    walls: list[float] = [0.0] * args.runs
    results: list[tuple[int, str]] = [(0, "")] * args.runs
    start = threading.Barrier(args.runs + 1)

    def one(index: int, sampler: ConnectionSampler) -> None:
        command = [args.python, "-m", "hokusai_action", *register_args(tokens[index], models[index])]
        start.wait()
        began = time.perf_counter()
        process = subprocess.Popen(
            command, env=env, cwd=work, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        sampler.watch(process.pid)
        _, err = process.communicate(timeout=600)
        walls[index] = time.perf_counter() - began
        results[index] = (process.returncode, err)

    before = resource.getrusage(resource.RUSAGE_CHILDREN)  # the server is not reaped: clients only
    server_before = group_cpu_seconds(server_pgid)
    database_name = sa.engine.make_url(site_url).database
    with ConnectionSampler(PG_ADMIN_URL, period=0.02, database=database_name) as sampler:
        threads = [threading.Thread(target=one, args=(n, sampler)) for n in range(args.runs)]
        for thread in threads:
            thread.start()
        began = time.perf_counter()
        start.wait()
        for thread in threads:
            thread.join()
        total = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    server_cpu = group_cpu_seconds(server_pgid) - server_before

    ok = True
    codes = [code for code, _ in results]
    print(f"{args.runs} registrations at once ({args.size_kb} KiB models), all started together:")
    print(f"  one alone       {alone:.2f} s (same server and database, just before)")
    print(f"  exit codes      {codes}")
    for code, err in results:
        if code != 0:
            ok = False
            print(f"  FAILED ({code}): {err.strip().splitlines()[-1] if err.strip() else 'no output'}")
    print(
        f"  wall            p50 {nearest_rank(walls, 50):.2f} s, p95 {nearest_rank(walls, 95):.2f} s, "
        f"min {min(walls):.2f} s, max {max(walls):.2f} s, mean {statistics.mean(walls):.2f} s; "
        f"all done in {total:.2f} s"
    )
    print(
        f"  CPU             clients {cpu:.1f} s ({cpu / args.runs:.2f} s per registration), MLflow server "
        f"{server_cpu:.1f} s; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the end"
    )
    peaks = sorted(sampler.peak.values())
    print(
        f"  db connections  per process peak {max(peaks) if peaks else 0} (bound {POOL_SIZE}); "
        f"peaks {peaks}; processes seen {len(peaks)}/{args.runs}; peak total {sampler.peak_total}; "
        f"{sampler.samples} samples"
    )
    if not peaks or max(peaks) > POOL_SIZE or len(peaks) != args.runs:
        ok = False
        print("  FAILED: a process held more than the bound, or was never seen holding one")
    with site.unit_of_work() as uow:
        states = [get_token(uow, token) for token in tokens]
    registered = [t for t in states if t and t.model_status == "registered" and t.model_version == "1"]
    print(f"  tokens          {len(registered)}/{args.runs} registered with version 1")
    ok = ok and len(registered) == args.runs
    site.dispose()
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument("--size-kb", type=int, default=256)
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs `model register`")
    args = parser.parse_args()
    site_url = create_database("hokusai_conc")
    mlflow_backend = create_database("hokusai_conc_mlflow")
    server = None
    try:
        with tempfile.TemporaryDirectory(prefix="hokusai-concurrent-") as folder:
            work = Path(folder)
            server = start_mlflow_server(work, mlflow_backend)
            ok = run(args, work, site_url, server.url, server.process.pid)
            server.stop()
            server = None
    finally:
        if server is not None:
            server.stop()
        drop_database(site_url)
        drop_database(mlflow_backend)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
