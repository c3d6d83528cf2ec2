"""The claim owner: which process instance holds a token, and when it is provably dead.

The processes here are real (children of the test); only other boots and other PID namespaces are
spelled by editing an owner id (tests/e2e/db/test_claim_owner.py runs a real one in another namespace).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from hokusai_action.db import owner as owner_module
from hokusai_action.db.owner import ClaimOwner, claim_owner_id, owner_is_dead_here, this_process

pytestmark = [pytest.mark.unit]

PRINT_OWNER_AND_WAIT = (
    "import sys, time; from hokusai_action.db.owner import claim_owner_id; "
    "print(claim_owner_id(), flush=True); sys.stdin.read()"
)


@pytest.fixture
def live_owner() -> Iterator[tuple[subprocess.Popen, str]]:
    """A child process that made itself a claim owner id and waits (until its stdin closes)."""
    child = subprocess.Popen(
        [sys.executable, "-c", PRINT_OWNER_AND_WAIT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    owner = child.stdout.readline().strip()
    try:
        yield child, owner
    finally:
        if child.poll() is None:
            child.kill()
        child.wait(timeout=30)
        child.stdin.close()
        child.stdout.close()


def with_field(owner: str, **changes: object) -> str:
    parsed = ClaimOwner.parse(owner)
    assert parsed is not None, owner
    run = owner.rsplit(" run=", 1)[1]
    return f"{dataclasses.replace(parsed, **changes)} run={run}"


# --------------------------------------------------------------------------------------- the id


def test_the_owner_id_names_host_pid_start_namespace_and_boot() -> None:
    owner = claim_owner_id()
    parsed = ClaimOwner.parse(owner)
    assert parsed is not None, owner
    assert len(owner) < 255  # tokens.claim_owner is VARCHAR(255)
    assert parsed.pid == os.getpid()
    assert parsed.pidns == os.stat("/proc/self/ns/pid").st_ino
    with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as handle:
        assert parsed.boot == handle.read().strip()
    with open(f"/proc/{os.getpid()}/stat", encoding="ascii") as handle:
        assert parsed.start == int(handle.read().rsplit(")", 1)[1].split()[19])
    assert owner.startswith(f"host={parsed.host} pid={os.getpid()} start=")
    assert claim_owner_id() != owner  # each registration attempt holds its own claim


def test_an_odd_hostname_is_made_safe_and_short(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(owner_module.socket, "gethostname", lambda: "runner 7=odd:host/" * 20)
    owner = claim_owner_id()
    parsed = ClaimOwner.parse(owner)
    assert parsed is not None and len(parsed.host) == 64 and " " not in parsed.host
    assert len(owner) < 255


@pytest.mark.parametrize(
    "owner",
    [
        None,
        "",
        "vm:4242:abcd",  # an older release's host:pid:random
        "host=vm pid=12 start=1 pidns=2 boot=e38012a4-293c-4b03-95fb-fe5e3ead87da",  # no run part
        "host=vm pid=x start=1 pidns=2 boot=e38012a4-293c-4b03-95fb-fe5e3ead87da run=1a2b3c4d",
        "host=vm pid=12 start=1 pidns=2 boot=e38012a4-293c-4b03-95fb-fe5e3ead87da run=1a2b3c4d\n",
    ],
)
def test_anything_else_is_not_an_owner_id(owner: str | None) -> None:
    assert ClaimOwner.parse(owner) is None
    assert owner_is_dead_here(owner) is False


def test_unknown_parts_round_trip_as_question_marks() -> None:
    owner = "host=vm pid=12 start=? pidns=? boot=? run=1a2b3c4d"
    assert ClaimOwner.parse(owner) == ClaimOwner(host="vm", pid=12, start=None, pidns=None, boot=None)
    assert f"{ClaimOwner.parse(owner)} run=1a2b3c4d" == owner
    assert owner_is_dead_here(owner) is False


# ------------------------------------------------------------------------------------ the rules


def test_this_process_is_alive() -> None:
    assert owner_is_dead_here(claim_owner_id()) is False


def test_a_running_process_is_alive(live_owner) -> None:
    _, owner = live_owner
    assert owner_is_dead_here(owner) is False


def test_a_process_that_exited_is_dead(live_owner) -> None:
    child, owner = live_owner
    child.stdin.close()
    child.wait(timeout=30)
    assert owner_is_dead_here(owner) is True


def test_a_killed_process_not_yet_reaped_is_dead(live_owner) -> None:
    child, owner = live_owner
    child.send_signal(signal.SIGKILL)
    deadline = time.monotonic() + 10
    while owner_module._process_stat(child.pid)[0] != "Z" and time.monotonic() < deadline:
        time.sleep(0.01)
    assert owner_module._process_stat(child.pid)[0] == "Z"  # a zombie: kill(pid, 0) still succeeds
    assert owner_is_dead_here(owner) is True


def test_a_pid_now_held_by_another_process_is_dead(live_owner) -> None:
    # the pid runs, but it started at another time: the owner died and its pid was reused
    _, owner = live_owner
    reused = with_field(owner, start=ClaimOwner.parse(owner).start - 1)
    assert owner_is_dead_here(reused) is True


def test_our_own_pid_with_another_start_time_is_dead() -> None:
    # a container restarted in place: the new run has the dead run's pid (often 1)
    me = this_process()
    assert owner_is_dead_here(with_field(claim_owner_id(), start=me.start + 100)) is True


def test_an_owner_in_another_pid_namespace_is_never_provably_dead(live_owner) -> None:
    child, owner = live_owner
    elsewhere = with_field(owner, pidns=ClaimOwner.parse(owner).pidns + 1)
    child.stdin.close()
    child.wait(timeout=30)
    assert owner_is_dead_here(owner) is True  # in our namespace this very pid is gone ...
    assert owner_is_dead_here(elsewhere) is False  # ... but in its own it may be running


def test_an_owner_from_another_boot_is_never_provably_dead(live_owner) -> None:
    child, owner = live_owner
    child.stdin.close()
    child.wait(timeout=30)
    assert owner_is_dead_here(with_field(owner, boot="00000000-0000-4000-8000-000000000000")) is False


def test_an_owner_whose_start_time_was_unknown_is_never_provably_dead(live_owner) -> None:
    child, owner = live_owner
    child.stdin.close()
    child.wait(timeout=30)
    assert owner_is_dead_here(with_field(owner, start=None)) is False


def test_where_we_cannot_tell_where_we_are_nothing_is_provably_dead(live_owner, monkeypatch) -> None:
    child, owner = live_owner
    child.stdin.close()
    child.wait(timeout=30)
    me = this_process()
    monkeypatch.setattr(owner_module, "this_process", lambda: dataclasses.replace(me, pidns=None))
    assert owner_is_dead_here(owner) is False
