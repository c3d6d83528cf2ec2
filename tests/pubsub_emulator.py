"""Google's Pub/Sub emulator for the tests: start, stop, restart, topics, subscriptions, pulls.

Loaded as a pytest plugin (``pytest_plugins = ["tests.pubsub_emulator"]`` in ``tests/conftest.py``,
or ``-p tests.pubsub_emulator``). Fixtures:

- ``pubsub_emulator`` (session): a running emulator on a free loopback port, with
  ``PUBSUB_EMULATOR_HOST`` set for the whole session (restored afterwards). Skips, with the reason,
  where the emulator or Java is missing.
- ``pubsub_topic`` (function): a fresh topic plus an ordered subscription on it.

How the emulator is run (DESIGN.md, "Real components in tests"): the SDK root comes from
``gcloud info --format='value(installation.sdk_root)'``; its ``platform/pubsub-emulator/bin/
cloud-pubsub-emulator`` script is started directly in its own process group (not through
``gcloud beta emulators``, whose Java child outlives it) and stopped by that group's id. The script
``exec``s Java, so the script's PID is the JVM's; we still signal the whole group and then check that
no process of it is left.

The emulator keeps everything in memory: a restart forgets topics and subscriptions, so
``start()`` re-creates those made through this module. It also binds its port with SO_REUSEPORT, so a
second emulator can silently share a port with a stray first one: ``start()`` refuses a port that is
still taken.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pytest

from tests import session_reports

EMULATOR_SCRIPT = Path("platform/pubsub-emulator/bin/cloud-pubsub-emulator")
EMULATOR_PROJECT = "hokusai-test"
START_TIMEOUT_SECONDS = 90.0  # a cold JVM on a busy 2-core machine; it usually answers in 2-4 s
STOP_TIMEOUT_SECONDS = 15.0
SKIP_PREFIX = "Pub/Sub emulator unavailable, Pub/Sub tests skipped"

ADMIN_CALL_SECONDS = 30.0  # bound on each topic/subscription call (the client's default retry is 600 s)
LOOPBACK = "127.0.0.1,localhost"

# Loopback needs no proxy, whatever http_proxy says (urllib here; gRPC through no_proxy below).
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
_PR_SET_PDEATHSIG = 1


class EmulatorUnavailable(Exception):
    """The emulator cannot run on this machine (no gcloud, no emulator component, no Java)."""


def find_emulator_script() -> Path:
    """The emulator's start script under the Cloud SDK root that ``gcloud info`` reports."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        raise EmulatorUnavailable("'gcloud' is not on PATH (install the google-cloud-cli package)")
    try:
        completed = subprocess.run(
            [gcloud, "info", "--format=value(installation.sdk_root)"],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
            env={**os.environ, "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"},
        )
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        raise EmulatorUnavailable(f"'gcloud info' failed: {exc}") from exc
    sdk_root = completed.stdout.strip()
    if not sdk_root:
        raise EmulatorUnavailable("'gcloud info' printed no installation.sdk_root")
    script = Path(sdk_root) / EMULATOR_SCRIPT
    if not os.access(script, os.X_OK):
        raise EmulatorUnavailable(f"{script} is missing (install the Debian package google-cloud-cli-pubsub-emulator)")
    java_home = os.environ.get("JAVA_HOME")
    java = Path(java_home) / "bin" / "java" if java_home else shutil.which("java")
    if java is None or not os.access(java, os.X_OK):
        raise EmulatorUnavailable("Java is missing (the emulator needs a JRE, e.g. openjdk-17-jre-headless)")
    return script


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_free(port: int) -> bool:
    """Whether nothing listens on ``port``. The probe sets SO_REUSEADDR, not SO_REUSEPORT: it may
    bind past the old emulator's TIME_WAIT connections, but not next to a live listener."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGTERM when pytest dies, even by SIGKILL.

    Without it a killed test run leaves the JVM, alone in its own session, running for ever. Linux
    only (prctl PR_SET_PDEATHSIG, kept across exec); the symbol is looked up here, in the parent,
    so the child between fork and exec only makes the one call.
    """
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)

    return preexec


def spawn_process_group(command: list[str], log: IO[bytes]) -> subprocess.Popen[bytes]:
    """Start ``command`` with its output appended to ``log``, in a process group of its own (so that
    ``stop_process_group`` reaches every child) that gets SIGTERM when pytest dies."""
    return subprocess.Popen(
        command,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        # the death signal follows the forking thread: fixtures run in pytest's main thread
        preexec_fn=_die_with_parent(),
    )


def _admin_retry() -> Any:
    from google.api_core import exceptions as gexc
    from google.api_core import retry as gretry

    return gretry.Retry(
        predicate=gretry.if_exception_type(gexc.ServiceUnavailable, gexc.DeadlineExceeded),
        initial=0.1,
        maximum=1.0,
        timeout=ADMIN_CALL_SECONDS,
    )


def group_members(pgid: int) -> list[str]:
    """``pid command`` of every live (non-zombie) process in process group ``pgid``, from ps."""
    completed = subprocess.run(["ps", "-eo", "pid=,pgid=,stat=,args="], capture_output=True, text=True, check=True)
    members = []
    for line in completed.stdout.splitlines():
        parts = line.split(None, 3)
        if len(parts) >= 3 and parts[1] == str(pgid) and not parts[2].startswith("Z"):
            members.append(f"{parts[0]} {parts[3] if len(parts) > 3 else ''}".strip())
    return members


def stop_process_group(process: subprocess.Popen[Any], *, name: str, timeout: float) -> None:
    """Stop ``process`` (started with ``start_new_session``) and its whole group; raise if any survives."""
    pgid = process.pid  # start_new_session: the leader's pid is the group id
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        process.wait(timeout=timeout)
    # The leader is reaped; children of the group (there should be none) must be gone too.
    deadline = time.monotonic() + timeout
    while (survivors := group_members(pgid)) and time.monotonic() < deadline:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
        time.sleep(0.1)
    if survivors:
        raise RuntimeError(f"{name} processes survived stop(): {survivors}")


def wait_until_answering(
    process: subprocess.Popen[Any], url: str, *, name: str, deadline: float, log: Callable[[], str]
) -> None:
    """Poll ``url`` (no proxy) until it answers 200; raise, with the log, if ``process`` exits or time runs out."""
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with code {process.returncode} while starting; {log()}")
        try:
            with _NO_PROXY.open(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{name} did not answer on {url} in time; {log()}")
        time.sleep(0.05)


@dataclass
class PubSubEmulator:
    """One emulator process on ``host`` (``127.0.0.1:<port>``); restartable on the same port."""

    script: Path
    port: int
    log_path: Path
    project: str = EMULATOR_PROJECT
    startup_seconds: list[float] = field(default_factory=list)
    _process: subprocess.Popen[bytes] | None = None
    _topics: list[str] = field(default_factory=list)
    _subscriptions: dict[str, tuple[str, bool]] = field(default_factory=dict)  # -> (topic, ordered)
    _publisher: Any = None
    _subscriber: Any = None
    _channels: list[Any] = field(default_factory=list)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    # -- process ----------------------------------------------------------------------------------

    def start(self) -> float:
        """Start the emulator (same port as before), wait until it answers; return the seconds taken.

        Topics and subscriptions made through this object before a ``stop()`` are made again.
        """
        if self.running:
            raise RuntimeError(f"the Pub/Sub emulator is already running (pid {self.pid})")
        if not port_is_free(self.port):
            raise RuntimeError(f"port {self.port} is taken; a stray emulator may still be running")
        began = time.monotonic()
        with open(self.log_path, "ab") as log:
            log.write(f"\n--- start on {self.host} ---\n".encode())
            log.flush()
            self._process = spawn_process_group([str(self.script), "--host=127.0.0.1", f"--port={self.port}"], log)
        try:
            self._wait_until_answering(deadline=began + START_TIMEOUT_SECONDS)
        except BaseException:
            self.stop()
            raise
        elapsed = time.monotonic() - began
        self.startup_seconds.append(elapsed)
        self._restore_resources()
        return elapsed

    def stop(self) -> None:
        """Stop the emulator's whole process group; raise if any process of it survives."""
        self._close_admin_clients()
        process, self._process = self._process, None
        if process is None:
            return
        stop_process_group(process, name="Pub/Sub emulator", timeout=STOP_TIMEOUT_SECONDS)

    @contextlib.contextmanager
    def down(self) -> Iterator[None]:
        """Stop the emulator for the ``with`` block, and start it again however the block ends."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def _wait_until_answering(self, *, deadline: float) -> None:
        assert self._process is not None
        wait_until_answering(
            self._process,
            f"http://{self.host}/",
            name="the Pub/Sub emulator",
            deadline=deadline,
            log=lambda: f"log: {self.log_path}\n{self._log_tail()}",
        )

    def _log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    # -- topics, subscriptions, pulls -------------------------------------------------------------

    def topic_path(self, name: str) -> str:
        return f"projects/{self.project}/topics/{name}"

    def make_topic(self, name: str | None = None) -> str:
        """Create a topic (a fresh unique name unless given); return its path."""
        path = self.topic_path(name or f"events-{uuid.uuid4().hex[:12]}")
        self.publisher.create_topic(request={"name": path}, retry=_admin_retry(), timeout=ADMIN_CALL_SECONDS)
        self._topics.append(path)
        return path

    def make_subscription(self, topic: str, name: str | None = None, *, ordered: bool = True) -> str:
        """Create a pull subscription on ``topic`` (message ordering on unless ``ordered=False``)."""
        path = f"projects/{self.project}/subscriptions/{name or f'sub-{uuid.uuid4().hex[:12]}'}"
        self.subscriber.create_subscription(
            request={"name": path, "topic": topic, "enable_message_ordering": ordered},
            retry=_admin_retry(),
            timeout=ADMIN_CALL_SECONDS,
        )
        self._subscriptions[path] = (topic, ordered)
        return path

    def delete_topic(self, topic: str) -> None:
        self.publisher.delete_topic(request={"topic": topic}, retry=_admin_retry(), timeout=ADMIN_CALL_SECONDS)
        with contextlib.suppress(ValueError):
            self._topics.remove(topic)

    def pull(self, subscription: str, max_messages: int = 1, timeout: float = 10.0) -> list[Any]:
        """Pull and acknowledge messages until ``max_messages`` arrived or ``timeout`` s passed.

        Returns the ``PubsubMessage`` objects in the order received (fewer on timeout).
        """
        from google.api_core import exceptions as gexc

        received: list[Any] = []
        deadline = time.monotonic() + timeout
        while len(received) < max_messages and (remaining := deadline - time.monotonic()) > 0:
            call_seconds = min(remaining, 5.0)
            call_deadline = time.monotonic() + call_seconds
            try:
                response = self.subscriber.pull(
                    request={"subscription": subscription, "max_messages": max_messages - len(received)},
                    timeout=call_seconds,
                    retry=None,
                )
            except (gexc.DeadlineExceeded, gexc.ServiceUnavailable):
                continue
            except gexc.Cancelled:
                # a deadline that passes while the call is on the wire can end it as CANCELLED (gRPC
                # resets the stream) instead of DEADLINE_EXCEEDED; a cancel before it is not ours
                if time.monotonic() < call_deadline:
                    raise
                continue
            if response.received_messages:
                self.subscriber.acknowledge(
                    request={
                        "subscription": subscription,
                        "ack_ids": [m.ack_id for m in response.received_messages],
                    },
                    retry=_admin_retry(),
                    timeout=ADMIN_CALL_SECONDS,
                )
                received.extend(m.message for m in response.received_messages)
        return received

    @property
    def publisher(self) -> Any:
        """An admin ``PublisherClient`` bound to this emulator (independent of the environment)."""
        if self._publisher is None:
            from google.cloud import pubsub_v1
            from google.pubsub_v1.services.publisher.transports import PublisherGrpcTransport

            self._publisher = pubsub_v1.PublisherClient(transport=PublisherGrpcTransport(channel=self._channel()))
        return self._publisher

    @property
    def subscriber(self) -> Any:
        """An admin ``SubscriberClient`` bound to this emulator."""
        if self._subscriber is None:
            from google.cloud import pubsub_v1
            from google.pubsub_v1.services.subscriber.transports import SubscriberGrpcTransport

            self._subscriber = pubsub_v1.SubscriberClient(transport=SubscriberGrpcTransport(channel=self._channel()))
        return self._subscriber

    def _channel(self) -> Any:
        import grpc

        channel = grpc.insecure_channel(self.host, options=[("grpc.enable_http_proxy", 0)])
        self._channels.append(channel)
        return channel

    def _close_admin_clients(self) -> None:
        # Fresh channels after a restart, rather than ones waiting out gRPC's reconnect backoff.
        self._publisher = self._subscriber = None
        channels, self._channels = self._channels, []
        for channel in channels:
            channel.close()

    def _restore_resources(self) -> None:
        for topic in self._topics:
            self.publisher.create_topic(request={"name": topic}, retry=_admin_retry(), timeout=ADMIN_CALL_SECONDS)
        for subscription, (topic, ordered) in self._subscriptions.items():
            if topic in self._topics:
                self.subscriber.create_subscription(
                    request={"name": subscription, "topic": topic, "enable_message_ordering": ordered},
                    retry=_admin_retry(),
                    timeout=ADMIN_CALL_SECONDS,
                )


@dataclass(frozen=True)
class TopicWithSubscription:
    topic: str
    subscription: str


@pytest.fixture(scope="session")
def pubsub_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PubSubEmulator]:
    """A running Pub/Sub emulator for the session, with ``PUBSUB_EMULATOR_HOST`` pointing at it."""
    try:
        script = find_emulator_script()
    except EmulatorUnavailable as exc:
        session_reports.skip("Pub/Sub emulator", f"{SKIP_PREFIX}: {exc}")
    emulator = PubSubEmulator(
        script=script,
        port=free_port(),
        log_path=tmp_path_factory.mktemp("pubsub-emulator") / "emulator.log",
    )
    seconds = emulator.start()
    session_reports.report("Pub/Sub emulator", f"started on {emulator.host} in {seconds:.2f} s (pid {emulator.pid})")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PUBSUB_EMULATOR_HOST", emulator.host)
        # gRPC honours http_proxy; the clients the code under test builds must reach loopback directly.
        for name in ("no_proxy", "NO_PROXY"):
            patch.setenv(name, ",".join(filter(None, [os.environ.get(name), LOOPBACK])))
        try:
            yield emulator
        finally:
            emulator.stop()
            restarts = emulator.startup_seconds[1:]
            if restarts:
                session_reports.report(
                    "Pub/Sub emulator", "restarted " + ", ".join(f"{s:.2f} s" for s in restarts) + " (same port)"
                )
            session_reports.report("Pub/Sub emulator", "stopped; no emulator process left (checked with ps)")


@pytest.fixture
def pubsub_topic(pubsub_emulator: PubSubEmulator) -> TopicWithSubscription:
    """A fresh topic on the emulator and an ordered subscription that receives what it gets."""
    topic = pubsub_emulator.make_topic()
    return TopicWithSubscription(topic=topic, subscription=pubsub_emulator.make_subscription(topic))
