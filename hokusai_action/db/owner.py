"""Who holds a claim or a delivery lease: one process instance on one kernel, and whether it is
provably dead.

An owner id reads as a user sees it in "claimed by":

    host=ci-7 pid=4242 start=912345 pidns=4026531836 boot=e38012a4-293c-4b03-95fb-fe5e3ead87da run=1a2b3c4d

A PID means something only inside its PID namespace, and only until it is reused: two containers on
one host (host network, the same hostname) each have a pid 57. So a re-run takes a claim over at once
only when the owner is provably dead: the same boot and PID namespace as ours, and its pid not running,
a zombie, or a different process (another start time). Anything else waits for the claim's lease.
Everything is read from /proc (proc(5)); what cannot be read is ``None`` and never proves a death.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
from dataclasses import dataclass

OWNER_PATTERN = re.compile(
    r"host=(?P<host>[A-Za-z0-9._-]{1,64}) pid=(?P<pid>[0-9]{1,10}) start=(?P<start>[0-9]{1,20}|\?) "
    r"pidns=(?P<pidns>[0-9]{1,20}|\?) boot=(?P<boot>[0-9a-f-]{36}|\?) run=(?P<run>[0-9a-f]{8})"
)
STAT_START_TIME = 22  # proc(5): /proc/<pid>/stat field 22, the start time in clock ticks after boot
STAT_DEAD_STATES = ("Z", "X", "x")  # zombie (killed, not reaped) or dead


@dataclass(frozen=True)
class ClaimOwner:
    """Who holds a claim; ``None`` for a part this system could not read (never provably dead then)."""

    host: str
    pid: int
    start: int | None
    pidns: int | None
    boot: str | None

    def __str__(self) -> str:
        def shown(value: object) -> str:
            return "?" if value is None else str(value)

        return (
            f"host={self.host} pid={self.pid} start={shown(self.start)} pidns={shown(self.pidns)} "
            f"boot={shown(self.boot)}"
        )

    @classmethod
    def parse(cls, owner: str | None) -> ClaimOwner | None:
        """The owner of ``claim_owner_id()``'s form; None for any other text (a bare ``host:pid`` among
        them), whose owner is then never provably dead."""
        found = OWNER_PATTERN.fullmatch(owner or "")
        if found is None:
            return None

        def known(text: str) -> str | None:
            return None if text == "?" else text

        start, pidns = known(found["start"]), known(found["pidns"])
        return cls(
            host=found["host"],
            pid=int(found["pid"]),
            start=int(start) if start is not None else None,
            pidns=int(pidns) if pidns is not None else None,
            boot=known(found["boot"]),
        )


def _process_stat(pid: int | str) -> tuple[str, int] | None:
    """(state, start time) of ``pid`` from /proc, or None when it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            text = handle.read()
        # the command name (field 2) is in parentheses and may hold spaces or ')': split after the last one
        fields = text.rsplit(")", 1)[1].split()
        return fields[0], int(fields[STAT_START_TIME - 3])
    except (OSError, IndexError, ValueError):
        return None


def _read_text(path: str) -> str | None:
    try:
        with open(path, encoding="ascii") as handle:
            return handle.read().strip() or None
    except (OSError, UnicodeDecodeError):
        return None


def this_process() -> ClaimOwner:
    """This process as a claim owner: host, pid, start time, PID namespace, boot id."""
    host = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname())[:64] or "unknown"
    pid = os.getpid()
    start: int | None = None
    pidns: int | None = None
    with contextlib.suppress(OSError, ValueError):
        # /proc/self must be this process: a /proc mounted from another PID namespace would lie about both
        if int(os.readlink("/proc/self")) == pid:
            own = _process_stat("self")
            start = own[1] if own else None
            pidns = os.stat("/proc/self/ns/pid").st_ino
    boot = _read_text("/proc/sys/kernel/random/boot_id")
    if boot is not None and not re.fullmatch(r"[0-9a-f-]{36}", boot):
        boot = None
    return ClaimOwner(host=host, pid=pid, start=start, pidns=pidns, boot=boot)


def claim_owner_id() -> str:
    """A new claim owner id for this process (under 255 characters, the column's size)."""
    return f"{this_process()} run={os.urandom(4).hex()}"


def owner_is_dead_here(owner: str | None) -> bool:
    """True only when ``owner`` is provably dead: a process of this boot and PID namespace that is gone.

    Gone means its pid is not running, is a zombie, or now belongs to another process (another start
    time). An owner from another container, machine or boot, or in an older format, is never provably
    dead: its claim is taken only when its lease expires (``try_claim``).
    """
    claimed = ClaimOwner.parse(owner)
    if claimed is None or claimed.start is None:
        return False
    me = this_process()
    if me.boot is None or me.pidns is None or me.start is None:
        return False  # we cannot tell where we are, so we cannot tell that it is dead
    if (claimed.boot, claimed.pidns) != (me.boot, me.pidns):
        return False  # its PIDs are not ours to look at
    if claimed.pid == me.pid:
        return claimed.start != me.start  # our pid, reused from a dead run (a container restarted in place)
    seen = _process_stat(claimed.pid)
    if seen is None:
        try:
            os.kill(claimed.pid, 0)
        except ProcessLookupError:
            return True
        except OSError:
            return False
        return False  # it runs, but /proc hides it (hidepid): assume it is the owner
    state, start = seen
    return state in STAT_DEAD_STATES or start != claimed.start
