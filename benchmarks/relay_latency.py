"""Latency from an event's commit to its webhook delivery by `events relay --follow` (a measurement,
never a timed test).

    .venv/bin/python benchmarks/relay_latency.py [--events 20] [--interval 5] [--python .venv-cli/bin/python]

One `events relay --follow --interval N` process per mode, a loopback HTTP receiver, and this
process committing one event at a time (as a registration's final transaction does, through
`outbox.add_event`) at random gaps of 0.3-1.5 s (seeded). Prints the median, p95 and max of
(arrival at the receiver - return of the commit) for:

1. postgresql-listen: the relay LISTENs and the commit's NOTIFY wakes it;
2. postgresql-poll: the same relay with LISTEN switched off (benchmark-only: the relay process
   is started through a wrapper that says LISTEN is unsupported), so it polls with backoff;
3. sqlite-poll: the embedded default, which polls with backoff (0.1 s after a delivery, doubling
   while idle up to --interval).

Needs the machine's PostgreSQL (127.0.0.1:5432, trust auth).
"""

from __future__ import annotations

import argparse
import base64
import http.server
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import ClassVar

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from hokusai_action.db import outbox  # noqa: E402
from hokusai_action.db.schema import tokens  # noqa: E402
from hokusai_action.db.store import Database, insert_token  # noqa: E402
from hokusai_action.domain.event import CloudEventRecord  # noqa: E402
from tests.services import create_database, drop_database  # noqa: E402

# the relay process without LISTEN: the polling path on PostgreSQL, for comparison only
POLL_ONLY = (
    "import sys; from hokusai_action.db import outbox; "
    "outbox.Notifications.supported = property(lambda self: False); "
    "from hokusai_action.cli import main; sys.argv[0] = 'hokusai-ml-platform'; main()"
)


class Arrivals(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[dict[str, float]] = {}
    lock = threading.Lock()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        arrived = time.monotonic()
        with self.lock:
            self.seen.setdefault(json.loads(body)["id"], arrived)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        return None


def measure(mode: str, url: str, *, python: str, events: int, interval: float, work: Path) -> list[float]:
    database = Database(url, timeout=10)
    database.upgrade()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Arrivals)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Arrivals.seen = {}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "HOKUSAI_", "PUBSUB_"))}
    env.update(
        PYTHONPATH=str(REPO),
        HOKUSAI_DATABASE_URL=url,
        HOKUSAI_EVENT_SINKS="webhook,database",
        HOKUSAI_WEBHOOK_URL=f"http://127.0.0.1:{server.server_port}/hook",
        HOKUSAI_WEBHOOK_SECRET="whsec_" + base64.b64encode(os.urandom(32)).decode(),
        HOKUSAI_HOME=str(work / ".hokusai"),
    )
    relay_args = ["events", "relay", "--follow", "--interval", str(interval)]
    if mode == "postgresql-poll":
        command = [python, "-c", POLL_ONLY, *relay_args]
    else:
        command = [python, "-m", "hokusai_action", *relay_args]
    relay = subprocess.Popen(command, env=env, cwd=work, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rng = random.Random(7)
    latencies = []
    try:
        time.sleep(3)  # the relay's start-up and first pass
        for n in range(events + 1):  # the first one warms up the relay's connections
            token = f"LAT{uuid.uuid4().hex[:8]}".upper()
            event = CloudEventRecord(id=str(uuid.uuid4()), source="bench", time="2026-01-01T00:00:00Z", subject=token)
            with database.unit_of_work() as uow:
                insert_token(uow, token)
                # what a registration's commit writes: the token holds this event (a relay sends no other)
                held = {"model_status": "registered", "event_id": event.id}
                uow.execute(tokens.update().where(tokens.c.token_id == token).values(**held))
                outbox.add_event(uow, event, token_id=token, sinks=("webhook", "database"))
                uow.commit()
            committed = time.monotonic()
            deadline = committed + interval + 30
            while event.id not in Arrivals.seen:
                if time.monotonic() > deadline or relay.poll() is not None:
                    raise SystemExit(f"{mode}: event {n} not delivered; relay said:\n{relay.stderr.read()[-2000:]}")
                time.sleep(0.001)
            if n:
                latencies.append(Arrivals.seen[event.id] - committed)
            time.sleep(rng.uniform(0.3, 1.5))
    finally:
        relay.send_signal(signal.SIGTERM)
        relay.communicate(timeout=60)
        server.shutdown()
        database.dispose()
    if relay.returncode != 0:
        raise SystemExit(f"{mode}: the relay exited {relay.returncode} on SIGTERM")
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--interval", type=float, default=5.0, help="the relay's --interval (its default: 5)")
    parser.add_argument("--python", default=sys.executable, help="interpreter that runs the relay")
    parser.add_argument("--modes", default="postgresql-listen,postgresql-poll,sqlite-poll")
    args = parser.parse_args()
    print(f"commit -> webhook delivery, {args.events} events at 0.3-1.5 s gaps, --interval {args.interval:g}")
    for mode in args.modes.split(","):
        with tempfile.TemporaryDirectory(prefix="hokusai-latency-") as folder:
            work = Path(folder)
            url = f"sqlite:///{work / 'site.db'}" if mode == "sqlite-poll" else create_database("hokusai_latency")
            try:
                found = measure(mode, url, python=args.python, events=args.events, interval=args.interval, work=work)
            finally:
                if not url.startswith("sqlite"):
                    drop_database(url)
        ms = sorted(value * 1000 for value in found)
        p95 = ms[max(0, round(0.95 * len(ms)) - 1)]
        print(
            f"  {mode:18} median {statistics.median(ms):7.1f} ms   p95 {p95:7.1f} ms   max {ms[-1]:7.1f} ms",
            flush=True,
        )


if __name__ == "__main__":
    main()
