"""Run a command with a fresh PostgreSQL database and a real `mlflow server` on loopback.

    .venv/bin/python scripts/with_services.py -- scripts/image-smoke.sh

The command sees MLFLOW_TRACKING_URI and HOKUSAI_DATABASE_URL; both services are removed after it
ends, whatever its exit code, which is passed on. The same helpers start the services for pytest.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.services import create_database, drop_database, start_mlflow_server


def main(argv: list[str]) -> int:
    if "--" in argv:
        argv = argv[argv.index("--") + 1 :]
    if not argv:
        print("usage: with_services.py -- COMMAND [ARGS...]", file=sys.stderr)
        return 2
    database_url = create_database("hokusai_smoke")
    mlflow_backend = create_database("hokusai_smoke_mlflow")
    with tempfile.TemporaryDirectory(prefix="hokusai-services-") as workdir:
        server = start_mlflow_server(Path(workdir), mlflow_backend)
        try:
            env = {**os.environ, "MLFLOW_TRACKING_URI": server.url, "HOKUSAI_DATABASE_URL": database_url}
            return subprocess.run(argv, env=env, check=False).returncode
        finally:
            server.stop()
            drop_database(database_url)
            drop_database(mlflow_backend)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
