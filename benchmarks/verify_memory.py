"""Peak memory of `model verify` on a large signed model (a measurement, never a timed test).

    .venv/bin/python scripts/with_services.py -- .venv/bin/python benchmarks/verify_memory.py [--gib 2]

Writes a model of one random file of ``--gib`` GiB (plus metrics.json) in a temporary folder, registers
it with ``--sign key``, then runs ``model verify --public-key`` (download from the MLflow server,
digest, model-signing verification of both bundles) under ``/usr/bin/time`` and prints each process's
peak resident set size. Needs the services' variables (MLFLOW_TRACKING_URI, HOKUSAI_DATABASE_URL) and
about three times the model's size of free disk (source, server store, download).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHUNK = 8 * 1024 * 1024


def write_model(folder: Path, gib: float) -> Path:
    model = folder / "model"
    model.mkdir()
    remaining = int(gib * 1024**3)
    with open(model / "weights.bin", "wb") as handle:
        while remaining > 0:
            handle.write(os.urandom(min(CHUNK, remaining)))
            remaining -= CHUNK
    (model / "metrics.json").write_text(json.dumps({"auroc": 0.91}))
    return model


def write_key(folder: Path) -> tuple[Path, Path]:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / "key.pem", folder / "key.pub"
    private.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    public.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return private, public


def timed(python: str, *args: str) -> tuple[int, float, int, str]:
    """(exit code, seconds, peak RSS in KiB, stderr tail) of ``python -m hokusai_action ARGS``."""
    started = time.monotonic()
    done = subprocess.run(
        ["/usr/bin/time", "-f", "MAXRSS_KB=%M", python, "-m", "hokusai_action", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.monotonic() - started
    rss = next(int(line.split("=")[1]) for line in done.stderr.splitlines() if line.startswith("MAXRSS_KB="))
    return done.returncode, seconds, rss, done.stderr[-800:]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gib", type=float, default=2.0)
    parser.add_argument("--python", default=os.environ.get("HOKUSAI_TEST_CLI_PYTHON") or sys.executable)
    options = parser.parse_args()
    token = f"RSS{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="hokusai-verify-rss-") as folder:
        root = Path(folder)
        model = write_model(root, options.gib)
        private, public = write_key(root)
        for args in (("db", "upgrade"), ("token", "create", token)):
            subprocess.run([options.python, "-m", "hokusai_action", *args], check=True, capture_output=True)
        code, seconds, rss, tail = timed(
            options.python, "model", "register", "--token-id", token, "--model-path", str(model),
            "--metric", "auroc", "--baseline", "0.82", "--sign", "key", "--signing-key", str(private),
        )  # fmt: skip
        print(f"register --sign key: exit {code}, {seconds:.1f} s, peak RSS {rss / 1024:.1f} MiB")
        if code:
            print(tail)
            return code
        code, seconds, rss, tail = timed(
            options.python, "model", "verify", "--token-id", token, "--public-key", str(public), "--output", "json"
        )
        print(f"verify --public-key ({options.gib:g} GiB): exit {code}, {seconds:.1f} s, peak RSS {rss / 1024:.1f} MiB")
        if code:
            print(tail)
        return code


if __name__ == "__main__":
    sys.exit(main())
