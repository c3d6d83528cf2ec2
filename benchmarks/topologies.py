"""Registration on each artifact topology, side by side with the bare mlflow-skinny script, in one run.

    .venv/bin/python benchmarks/topologies.py [--runs 1] [--size-mb 200] [--files 20] [--multipart-mb 300]

Topologies (tests/services.py starts each the way a team deploys it; GCS is fake-gcs-server from the
test extra, tests/gcs_emulator.py):

- local disk: ``mlflow server --serve-artifacts`` writing to its own disk (the suite's default);
- proxied GCS: ``--serve-artifacts --artifacts-destination gs://B/proxied``; the client sends HTTP
  to the server, which writes the bucket;
- direct GCS: ``--no-serve-artifacts --default-artifact-root gs://B/direct``; the client (ours and
  the bare script alike) writes the bucket itself through google-cloud-storage.

Each topology gets its own MLflow server (PostgreSQL backend) and a model of the same shape
(``--size-mb`` in ``--files`` files of fresh random bytes); the pairs, their order and the re-run are
``benchmarks/run.py``'s. ``--multipart-mb N`` then uploads one N MB file to the proxied GCS server
with MLflow's proxy multipart upload off and on (``MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD``) and says
whether each worked and downloaded byte-identical. ``--python`` picks the runtime interpreter
(default: benchmarks/run.py's ``.bench-venv``); this checkout goes first on its ``PYTHONPATH``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.run import bench_registration, make_model, production_venv  # noqa: E402
from tests.gcs_emulator import start_gcs_emulator  # noqa: E402
from tests.helpers import register_args  # noqa: E402
from tests.services import create_database, drop_database, start_mlflow_server  # noqa: E402

TOPOLOGIES = ("local disk", "proxied GCS", "direct GCS")
MULTIPART_CHUNK_MB = 32
MULTIPART = {
    "MLFLOW_ENABLE_PROXY_MULTIPART_UPLOAD": "true",
    "MLFLOW_MULTIPART_UPLOAD_CHUNK_SIZE": str(MULTIPART_CHUNK_MB * 1024 * 1024),
    "MLFLOW_MULTIPART_UPLOAD_MINIMUM_FILE_SIZE": str(100 * 1024 * 1024),
}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(8 * 1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


def bench_multipart(python: Path, env: dict[str, str], work: Path, server_url: str, size_mb: int) -> None:
    """One big file through the proxied GCS server, multipart off then on: wall time, outcome, bytes."""
    import mlflow
    from mlflow.artifacts import download_artifacts

    mlflow.set_tracking_uri(server_url)
    mlflow.set_registry_uri(server_url)  # models:/ resolves through the global registry URI
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # no bar in the printed results
    model = make_model(work / "big-model", size_mb, 1)
    source = {p.name: sha256_of(p) for p in model.iterdir()}
    cli = [str(python), "-m", "hokusai_action"]
    print(f"\nproxy multipart upload: one {size_mb} MB file, proxied GCS, {MULTIPART_CHUNK_MB} MB chunks", flush=True)
    for label, extra in (("off", {}), ("on", MULTIPART)):
        token = f"MPU{uuid.uuid4().hex[:8]}".upper()
        subprocess.run([*cli, "token", "create", token], env=env, cwd=work, check=True, capture_output=True)
        started = time.perf_counter()
        done = subprocess.run(
            [*cli, *register_args(token, str(model), "--output", "json")],
            env={**env, **extra},
            cwd=work,
            capture_output=True,
            text=True,
            check=False,
        )
        elapsed = time.perf_counter() - started
        if done.returncode != 0:
            errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
            print(f"  multipart {label}: exit {done.returncode} after {elapsed:.2f} s: {(errors or ['?'])[-1][:300]}")
            continue
        into = work / f"download-{token}"
        download_artifacts(artifact_uri=f"models:/hokusai-{token}/1", dst_path=str(into), tracking_uri=server_url)
        identical = {p.name: sha256_of(p) for p in into.iterdir()} == source
        print(
            f"  multipart {label}: exit 0 in {elapsed:.2f} s "
            f"({size_mb / elapsed:.0f} MB/s), download byte-identical: {identical}",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1, help="pairs per topology (the machine is shared)")
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--multipart-mb", type=int, default=300, help="0 skips the multipart measurement")
    parser.add_argument("--python", type=Path, help="interpreter with the runtime dependencies only")
    args = parser.parse_args()

    python = args.python.absolute() if args.python else production_venv()
    database_url = create_database("hokusai_bench")
    backends = {name: create_database("hokusai_bench_mlflow") for name in TOPOLOGIES}
    results = {}
    with tempfile.TemporaryDirectory(prefix="hokusai-topologies-") as tmp:
        work = Path(tmp)
        emulator = start_gcs_emulator(work)
        base_env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HOKUSAI_", "GOOGLE_"))}
        base_env.pop("STORAGE_EMULATOR_HOST", None)
        base_env.update(
            HOKUSAI_DATABASE_URL=database_url,
            HOKUSAI_HOME=str(work / ".hokusai"),
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        )
        server_env = {"STORAGE_EMULATOR_HOST": emulator.url}
        store = {
            "local disk": (None, True),
            "proxied GCS": (emulator.artifact_uri("proxied"), True),
            "direct GCS": (emulator.artifact_uri("direct"), False),
        }
        try:
            for name in TOPOLOGIES:
                artifact_store, proxied = store[name]
                topology_work = work / name.replace(" ", "-")
                topology_work.mkdir()
                server = start_mlflow_server(
                    topology_work, backends[name], artifact_store=artifact_store, proxied=proxied, env=server_env
                )
                env = {**base_env, "MLFLOW_TRACKING_URI": server.url}
                if not proxied:
                    env["STORAGE_EMULATOR_HOST"] = emulator.url  # the client writes the bucket
                try:
                    print(f"{name}: {args.size_mb} MB in {args.files} files, {args.runs} pair(s)", flush=True)
                    ratios, ours, bare, reruns = bench_registration(
                        python, env, topology_work, args.runs, args.size_mb, args.files
                    )
                    results[name] = (
                        statistics.median(ours),
                        statistics.median(bare),
                        statistics.median(ratios),
                        statistics.median(r * o for r, o in zip(reruns, ours, strict=True)),
                    )
                    if name == "proxied GCS" and args.multipart_mb:
                        bench_multipart(python, env, topology_work, server.url, args.multipart_mb)
                finally:
                    server.stop()
        finally:
            emulator.stop()
            drop_database(database_url)
            for backend in backends.values():
                drop_database(backend)

    print(f"\nresults: {args.size_mb} MB in {args.files} files, median of {args.runs} pair(s) per topology")
    print(f"  {'topology':<12} {'hokusai':>9} {'bare':>9} {'ratio':>7} {'re-run':>8}   vs local disk (hokusai)")
    local = results["local disk"][0]
    for name, (ours, bare, ratio, rerun) in results.items():
        print(f"  {name:<12} {ours:>7.2f} s {bare:>7.2f} s {ratio:>7.3f} {rerun:>6.2f} s   {ours / local:.2f}x")


if __name__ == "__main__":
    main()
