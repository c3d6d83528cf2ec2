"""CPU time of live processes, read from /proc (Linux): what the benchmarks compare besides wall time.

``/proc/PID/stat`` fields after the command name: 4 ppid, 5 pgrp, 14 utime, 15 stime (clock ticks).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NamedTuple

TICKS = os.sysconf("SC_CLK_TCK")


class ProcessCpu(NamedTuple):
    pid: int
    parent: int
    group: int
    seconds: float  # user + system


def live_processes() -> Iterator[ProcessCpu]:
    """Every live process's parent, process group and CPU seconds so far (gone ones are skipped)."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                fields = handle.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        yield ProcessCpu(int(entry), int(fields[1]), int(fields[2]), (int(fields[11]) + int(fields[12])) / TICKS)
