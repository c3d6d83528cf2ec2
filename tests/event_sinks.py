"""The event sinks as the end-to-end tests set them up: a webhook receiver that checks signatures,
the environment that names the sinks, a registration with them, and the delivery rows it left."""

from __future__ import annotations

import base64
import json
import threading
import time

import sqlalchemy as sa
from standardwebhooks import Webhook
from werkzeug import Request, Response

from hokusai_action.db.schema import event_deliveries
from tests.canaries import CANARIES
from tests.helpers import register_args

SECRET = "whsec_" + base64.b64encode(CANARIES.webhook_key).decode()  # a canary (tests/canaries.py): never printed


class Receiver:
    """Records every POST; answers with the scripted statuses, then 200."""

    def __init__(self, httpserver, statuses=(), delay: float = 0.0) -> None:
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.statuses = list(statuses)
        self.delay = delay
        self.lock = threading.Lock()
        httpserver.expect_request("/hook", method="POST").respond_with_handler(self.handle)
        self.url = httpserver.url_for("/hook")

    def handle(self, request: Request) -> Response:
        with self.lock:
            self.requests.append((dict(request.headers), request.get_data()))
            status = self.statuses.pop(0) if self.statuses else 200
        time.sleep(self.delay)
        return Response("ok" if status < 300 else "no", status=status)

    def verified_events(self) -> list[dict]:
        verifier = Webhook(SECRET)
        out = []
        for headers, body in self.requests:
            lowered = {k.lower(): v for k, v in headers.items()}
            verifier.verify(body, lowered)  # raises on a bad signature
            out.append({"webhook-id": lowered["webhook-id"], "event": json.loads(body)})
        return out


def sink_env(pubsub_emulator, topic: str | None, webhook_url: str | None, sinks: str) -> dict[str, str]:
    env = {"HOKUSAI_EVENT_SINKS": sinks, "HOKUSAI_PUBSUB_TIMEOUT": "3", "HOKUSAI_WEBHOOK_TIMEOUT": "3"}
    if pubsub_emulator is not None:
        env["PUBSUB_EMULATOR_HOST"] = pubsub_emulator.host
    if topic:
        env["HOKUSAI_PUBSUB_TOPIC"] = topic
    if webhook_url:
        env.update(HOKUSAI_WEBHOOK_URL=webhook_url, HOKUSAI_WEBHOOK_SECRET=SECRET)
    return env


def register(run_cli, token, model, env, *extra):
    return run_cli(*register_args(token, model, "--output", "json", *extra), env=env)


def deliveries(database, event_id: str) -> dict[str, dict]:
    with database.unit_of_work() as uow:
        rows = uow.execute(sa.select(event_deliveries).where(event_deliveries.c.event_id == event_id)).all()
    return {row.sink: dict(row._mapping) for row in rows}
