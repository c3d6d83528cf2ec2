"""Where an upload of many small files spends its CPU: the client's process against the server's workers.

    .venv/bin/python benchmarks/upload_cpu.py [--files 1000] [--size-kib 10] [--mode ours --mode bare]
                                              [--workers 8] [--repeat 2] [--profile FILE]

Starts a real ``mlflow server --serve-artifacts --workers 2`` (PostgreSQL backend, local-disk
artifacts: ``tests/services.py``), writes ``--files`` random files, then, in this process, uploads them
to a fresh logged model per attempt: ``ours`` through ``hokusai_action.mlflow.upload.upload_model`` (hashed
while streamed), ``bare`` through MLflow's own ``HttpArtifactRepository.log_artifacts`` (what
``MlflowClient.log_model_artifacts`` does). For each attempt it prints the wall time and the CPU time
(user + system) of this process and of the server's processes (``/proc/<pid>/stat`` of the server
and all its descendants, before and after), per file.

CPU time is what to compare on a shared machine: it does not grow with other jobs' load, wall time
does. ``--profile FILE`` writes a cProfile of the last ``ours`` attempt.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.proc_cpu import live_processes  # noqa: E402
from tests.services import create_database, drop_database, start_mlflow_server  # noqa: E402


def process_tree_cpu(root: int) -> dict[int, float]:
    """User + system CPU seconds of ``root`` and of every live descendant, by pid."""
    processes = list(live_processes())
    parents = {process.pid: process.parent for process in processes}
    times = {process.pid: process.seconds for process in processes}
    tree = {root}
    changed = True
    while changed:
        changed = False
        for pid, parent in parents.items():
            if parent in tree and pid not in tree:
                tree.add(pid)
                changed = True
    return {pid: times.get(pid, 0.0) for pid in tree}


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def make_files(root: Path, files: int, size: int) -> Path:
    root.mkdir(parents=True)
    width = len(str(files - 1))
    for index in range(files):
        (root / f"part-{index:0{width}d}.bin").write_bytes(os.urandom(size))
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--size-kib", type=int, default=10)
    parser.add_argument(
        "--mode",
        action="append",
        choices=["ours", "ours-in-line", "bare"],
        help="ours-in-line: ours with every file hashed by the thread that sends it (no hash-ahead thread)",
    )
    parser.add_argument(
        "--workers", type=int, action="append", help="upload threads for ours (repeatable; default UPLOAD_WORKERS)"
    )
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument(
        "--settle", action="store_true", help="delete what each attempt stored and flush the disk before the next"
    )
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--py-spy", type=Path, help="py-spy binary: sample the last ours attempt (client, server)")
    parser.add_argument("--spy-dir", type=Path, default=Path("."), help="where --py-spy writes its flame graphs")
    args = parser.parse_args()
    modes = args.mode or ["ours", "bare"]

    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    backend = create_database("hokusai_upload_cpu")
    with tempfile.TemporaryDirectory(prefix="hokusai-upload-cpu-") as tmp:
        work = Path(tmp)
        server = start_mlflow_server(work, backend)
        try:
            run(server, make_files(work / "model", args.files, args.size_kib * 1024), args, modes)
        finally:
            server.stop()
            drop_database(backend)


def run(server, model_dir: Path, args: argparse.Namespace, modes: list[str]) -> None:
    import mlflow
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    from hokusai_action import streamed, upload
    from hokusai_action.digest.walk import scan_model

    mlflow.set_tracking_uri(server.url)
    client = mlflow.MlflowClient(tracking_uri=server.url)
    experiment_id = client.create_experiment("upload-cpu")
    hash_ahead_from = streamed.HASH_AHEAD_FROM
    variants = [(mode, count) for mode in modes for count in (args.workers or [upload.UPLOAD_WORKERS])]
    variants = list(dict.fromkeys((mode, count if mode != "bare" else 1) for mode, count in variants))
    print(f"{args.files} files x {args.size_kib} KiB", flush=True)
    for attempt in range(args.repeat):
        for mode, workers in variants if attempt % 2 == 0 else variants[::-1]:
            logged = client.create_logged_model(experiment_id, name="m")
            repository = get_artifact_repository(logged.artifact_location, tracking_uri=server.url)
            model = scan_model(model_dir)
            profiler = cProfile.Profile() if args.profile and mode == "ours" else None
            last = attempt == args.repeat - 1 and mode == "ours"
            spies = start_spies(args.py_spy, args.spy_dir, server.process.pid) if args.py_spy and last else []
            server_before, client_before, started = process_tree_cpu(server.process.pid), own_cpu(), time.perf_counter()
            if profiler:
                profiler.enable()
            # a file big enough to be hashed ahead is hashed by its sender in "ours-in-line"
            streamed.HASH_AHEAD_FROM = hash_ahead_from if mode == "ours" else 1 << 62
            if mode != "bare":
                upload.upload_model(repository, model, workers=workers)
            else:
                repository.log_artifacts(str(model_dir))
            if profiler:
                profiler.disable()
            wall = time.perf_counter() - started
            stop_spies(spies)
            server_after = process_tree_cpu(server.process.pid)
            client_cpu = own_cpu() - client_before
            by_pid = {pid: cpu - server_before.get(pid, 0.0) for pid, cpu in server_after.items()}
            server_cpu = sum(by_pid.values())
            busiest = sorted((cpu for cpu in by_pid.values() if cpu >= 0.05), reverse=True)
            per = 1000 / args.files
            label = f"{mode} x{workers}" if mode != "bare" else mode
            print(
                f"  {label:15} wall {wall:6.2f} s ({wall * per:.2f} ms/file)  client CPU {client_cpu:6.2f} s "
                f"({client_cpu * per:.2f} ms/file)  server CPU {server_cpu:6.2f} s ({server_cpu * per:.2f} ms/file; "
                f"by process {' + '.join(f'{cpu:.2f}' for cpu in busiest)} s)",
                flush=True,
            )
            if profiler:
                profiler.dump_stats(args.profile)
            if args.settle:
                settle(server, experiment_id)


def settle(server, experiment_id: str) -> None:
    """Leave the next attempt the machine this one found: delete what the server stored, then flush.

    A stored upload's pages (gigabytes, for a big file) are still being written back to disk when the
    next attempt starts; the server's writes then cost it 2-3 times the CPU (measured here: 3.3 s of
    server CPU for the first 2 GiB upload, 6-9 s for the next ones), whoever the client is.
    """
    import shutil

    if isinstance(server.artifacts, Path):
        shutil.rmtree(server.artifacts / experiment_id, ignore_errors=True)
    os.sync()


def start_spies(py_spy: Path, folder: Path, server_pid: int) -> list:
    import subprocess

    folder.mkdir(parents=True, exist_ok=True)
    common = [str(py_spy), "record", "--nonblocking", "--format", "raw", "--rate", "250"]
    spies = [
        # --gil: only the thread holding the GIL, i.e. where the client's Python time goes
        subprocess.Popen([*common, "--gil", "-o", str(folder / "client.txt"), "-p", str(os.getpid())]),
        subprocess.Popen([*common, "--gil", "--subprocesses", "-o", str(folder / "server.txt"), "-p", str(server_pid)]),
    ]
    time.sleep(1.0)  # py-spy attaches
    return spies


def stop_spies(spies: list) -> None:
    import signal

    for spy in spies:
        spy.send_signal(signal.SIGINT)
    for spy in spies:
        spy.wait(timeout=60)


if __name__ == "__main__":
    main()
