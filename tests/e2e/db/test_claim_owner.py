"""Claims across PID namespaces: a live run in another container is never mistaken for a dead one.

Two containers on one host with host networking share the hostname, and each has its own PIDs. The
run holding the claim here lives in a real other PID namespace (``unshare --pid --fork --mount-proc``,
root only), at a pid that is free in ours, exactly what made an older release take the claim over.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hokusai_action.db.owner import ClaimOwner
from hokusai_action.db.schema import tokens
from tests.helpers import register_args

pytestmark = [pytest.mark.e2e]

# claims the token in the database named on the command line for an hour, prints its owner id, waits
HOLD_CLAIM = """
import sys, time
from hokusai_action.db.owner import claim_owner_id
from hokusai_action.db.store import Database, try_claim
url, token = sys.argv[1], sys.argv[2]
owner = claim_owner_id()
database = Database(url)
with database.unit_of_work() as uow:
    assert try_claim(uow, token, owner=owner, ttl_seconds=3600), "the token was not draft"
    uow.commit()
database.dispose()
print(owner, flush=True)
time.sleep(3600)  # a long upload
"""


def unshare_works() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    done = subprocess.run(
        ["unshare", "--pid", "--fork", "--mount-proc", "true"], capture_output=True, timeout=30, check=False
    )
    return done.returncode == 0


needs_unshare = pytest.mark.skipif(not unshare_works(), reason="needs root and unshare(1) for a PID namespace")


def free_pid_here() -> int:
    """A pid no process of ours has, below the last one handed out (so not handed out again soon)."""
    with open("/proc/sys/kernel/ns_last_pid", encoding="ascii") as handle:
        last = int(handle.read())
    taken = {int(name) for name in os.listdir("/proc") if name.isdigit()}
    return next(pid for pid in range(last - 1, 300, -1) if pid not in taken)


class Holder:
    """A process holding the claim on a token until ``stop()``."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, text=True, start_new_session=True)
        self.owner = self.process.stdout.readline().strip()
        assert ClaimOwner.parse(self.owner) is not None, (self.owner, self.process.poll())

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=30)
        self.process.stdout.close()


@pytest.fixture
def holders() -> Iterator[list[Holder]]:
    started: list[Holder] = []
    yield started
    for holder in started:
        holder.stop()


def register(run_cli, token: str, model: Path):
    return run_cli(*register_args(token, model, "--metric-value", "0.91", "--output", "json"))


def expire_claim(database, token: str) -> None:
    """What an hour of waiting does to the claim's lease."""
    with database.unit_of_work() as uow:
        uow.execute(
            tokens.update()
            .where(tokens.c.token_id == token)
            .values(claim_expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
        uow.commit()


@needs_unshare
@pytest.mark.slow
def test_a_live_run_in_another_pid_namespace_keeps_its_claim(
    run_cli, cli_env, services, database, make_token, make_model, snapshot, holders
):
    token = make_token()
    # The holder's pid must be free in our namespace (an older release then called it dead). pids wrap
    # (pid_max is 32768 here and a suite run starts thousands of processes), so one picked free may be
    # handed to a process of ours before we look: then try another.
    for _ in range(5):
        pid = free_pid_here()
        # inside the namespace: make the next pid handed out the one free here, then start the holder
        script = f'echo {pid - 1} > /proc/sys/kernel/ns_last_pid || exit 1; "$0" -c "$1" "$2" "$3" & wait $!'
        holder = Holder(
            ["unshare", "--pid", "--fork", "--mount-proc", "sh", "-c", script,
             sys.executable, HOLD_CLAIM, services.database_url, token],
            env=cli_env,
        )  # fmt: skip
        holders.append(holder)
        claimed = ClaimOwner.parse(holder.owner)
        assert claimed.pid == pid  # the same pid as the one free here
        assert claimed.pidns != os.stat("/proc/self/ns/pid").st_ino
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break  # still free here
        holder.stop()  # the pid was handed out here meanwhile: the scenario is not the one to test
        expire_claim(database, token)
    else:
        pytest.fail("no pid stayed free in this namespace for the holder in 5 tries")
    before = snapshot(token)

    result = register(run_cli, token, make_model())

    assert result.code == 3, (result.stdout, result.stderr)
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, result.stderr
    assert f"Token {token} is being registered by another run ({holder.owner}, claim expires" in error_lines[0]
    assert snapshot(token) == before

    # once that run is gone its claim is still not provably dead from here: it is taken after its lease
    holder.stop()
    assert register(run_cli, token, make_model()).code == 3
    expire_claim(database, token)
    after = register(run_cli, token, make_model())
    assert after.code == 0, after.stderr
    assert snapshot(token).token["model_status"] == "registered"


@pytest.mark.slow
@pytest.mark.parametrize("reaped", [True, False], ids=["exited", "zombie"])
def test_a_dead_run_in_our_pid_namespace_is_taken_over_at_once(
    run_cli, cli_env, services, make_token, make_model, snapshot, holders, reaped
):
    token = make_token()
    holder = Holder([sys.executable, "-c", HOLD_CLAIM, services.database_url, token], env=cli_env)
    holders.append(holder)
    holder.process.send_signal(signal.SIGKILL)  # killed mid-registration, no chance to give the claim back
    if reaped:
        holder.process.wait(timeout=30)
    assert snapshot(token).token["claim_owner"] == holder.owner

    result = register(run_cli, token, make_model())

    assert result.code == 0, result.stderr
    assert f"took over the claim of {token} from a dead run ({holder.owner})" in result.stderr
    after = snapshot(token)
    assert after.token["model_status"] == "registered"
    assert after.versions == ("1",)
