"""Failpoints: test-only hooks that stop a registration at a phase boundary. Off unless named.

One environment variable arms at most one failpoint, read once when this module is imported:

    HOKUSAI_FAILPOINT=NAME[:ACTION]        e.g.  after_claim:kill   before_commit:sleep:8

When it is unset (always, outside the fault tests) ``failpoint(name)`` is one comparison with
``None`` and returns. It is not a setting: it is not in ``environment.py`` and no user sets it.

Each hit writes one line ``hokusai failpoint NAME: ACTION`` to file descriptor 2 first, so a test can
tell that the run really reached the point before it died.

Actions:

- ``kill`` (default): SIGKILL this process: a crash, an OOM kill, a runner that vanished.
- ``term``: SIGTERM this process once: a cancelled CI job or ``docker stop``. The CLI turns it into
  ``SystemExit`` (exit 143) and releases its claim. Sent from a worker thread, the main thread
  unwinds while the worker carries on.
- ``sleep:SECONDS``: pause this thread (at every hit), so a test can break a service meanwhile.

Names, in the order a registration passes them:

- ``after_claim``: the token is ``registering`` and claimed by this run; nothing is uploaded.
- ``mid_upload``: after each model file reaches the artifact store (a multi-file model is then
  partly uploaded; the logged model is still PENDING).
- ``after_finalize``: the logged model is READY (all bytes uploaded); no model version yet.
- ``after_version_created``: MLflow holds the version with the digest tag; the database knows nothing.
- ``before_commit``: the token update and the event row are written but not committed.
- ``after_commit``: the token is ``registered`` and the event committed; nothing delivered yet.
- ``after_publish`` / ``after_publish.SINK``: a sink (``pubsub``, ``webhook``) accepted the event;
  its delivery row is not marked yet.
- ``before_mark_delivered``: every sink of the batch was tried; the delivery rows are not committed.

Outside a registration:

- ``reset_after_read``: `token reset` has read the token and decided to reset it; nothing is written.
- ``before_send`` / ``before_send.SINK``: a relay holds a delivery's lease; it has neither checked the
  token's current registration nor sent the event yet.
"""

from __future__ import annotations

import os
import signal
import threading
import time

ENV = "HOKUSAI_FAILPOINT"
ACTIONS = ("kill", "term", "sleep")
NAMES = (
    "after_claim",
    "mid_upload",
    "after_finalize",
    "after_version_created",
    "before_commit",
    "after_commit",
    "after_publish",
    "before_mark_delivered",
    "reset_after_read",
    "before_send",
)
BAD_SPEC = f"{ENV}={{spec!r}} is not NAME[:kill|term|sleep:SECONDS] with NAME one of {', '.join(NAMES)}."


def parse(spec: str | None) -> tuple[str, str, float] | None:
    """``(name, action, seconds)`` from ``NAME[:ACTION[:SECONDS]]``; ``None`` when unset."""
    if not spec:
        return None
    name, _, rest = spec.partition(":")
    action, _, argument = (rest or "kill").partition(":")
    base = name.partition(".")[0]
    try:
        seconds = float(argument) if action == "sleep" else 0.0
    except ValueError:
        seconds = -1.0
    if base not in NAMES or action not in ACTIONS or seconds < 0 or (action != "sleep" and argument):
        # a typo must not let a fault test pass without its fault
        raise ValueError(BAD_SPEC.format(spec=spec))
    return name, action, seconds


_ARMED = parse(os.environ.get(ENV))
_term_sent = threading.Event()


def failpoint(name: str, detail: str | None = None) -> None:
    """Fire the armed action if the armed name is ``name`` or ``name.detail``."""
    if _ARMED is None:
        return
    armed, action, seconds = _ARMED
    if armed != name and armed != f"{name}.{detail}":
        return
    os.write(2, f"hokusai failpoint {armed}: {action}\n".encode())
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "term":
        if not _term_sent.is_set():
            _term_sent.set()
            os.kill(os.getpid(), signal.SIGTERM)
    else:
        time.sleep(seconds)
