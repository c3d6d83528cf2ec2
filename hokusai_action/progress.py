"""Progress people can read: long hashing and uploads shown on stderr.

Built in ``wiring`` and handed to the core, which opens one task per phase (``hashed``, ``uploaded``);
the digest and the uploader call ``advance(nbytes)`` and ``file_done()`` from any thread.

- On a terminal: a live tqdm bar (bytes, files, rate, ETA), drawn once the task has run ~2 s.
- Without a terminal, or in CI (``CI=true``, ``GITHUB_ACTIONS=true``): a plain line every 10 % or
  10 s once the task has run ~2 s; never a carriage return or an escape sequence in a log.
- ``--quiet`` (action input ``quiet``): nothing at all.
- stdout is never touched: ``--output json`` keeps it for the result.

Each upload ends with one line saying what moved, e.g. ``uploaded 2.0 GiB in 13.1 s (156 MiB/s), 1 file``;
a hash ends with one only when it was long enough to show progress.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO

SHOW_AFTER_SECONDS = 2.0  # shorter tasks draw nothing: a quick registration stays a few lines
LINE_EVERY_SECONDS = 10.0
LINE_EVERY_PERCENT = 10
CI_VARIABLES = ("CI", "GITHUB_ACTIONS")
PRESENT = {"hashed": "hashing", "uploaded": "uploading"}


@dataclass(frozen=True)
class TaskStats:
    """What one hashing or upload moved: the end line, the step summary and the JSON result show it."""

    nbytes: int
    files: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return {"bytes": self.nbytes, "files": self.files, "seconds": round(self.seconds, 3)}


def format_bytes(nbytes: float) -> str:
    """``2.0 GiB``, ``156 MiB``, ``10.0 KiB``, ``12 B``: binary units, three significant figures."""
    value = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            if unit == "B":
                return f"{int(value)} B"
            return f"{value:.0f} {unit}" if abs(value) >= 100 else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def format_files(count: int) -> str:
    return f"{count:,} file" + ("" if count == 1 else "s")


def end_line(verb: str, stats: TaskStats) -> str:
    """``uploaded 2.0 GiB in 13.1 s (156 MiB/s), 1 file``"""
    rate = stats.nbytes / stats.seconds if stats.seconds > 0 else 0.0
    return (
        f"{verb} {format_bytes(stats.nbytes)} in {stats.seconds:.1f} s ({format_bytes(rate)}/s), "
        f"{format_files(stats.files)}"
    )


def in_ci(environ: Mapping[str, str]) -> bool:
    return any(environ.get(name, "").strip().lower() in ("true", "1") for name in CI_VARIABLES)


class Reporter:
    """Opens tasks; decides once how they are drawn (bar, lines, nothing)."""

    def __init__(
        self,
        *,
        quiet: bool = False,
        stream: TextIO | None = None,
        environ: Mapping[str, str] | None = None,
        show_after: float = SHOW_AFTER_SECONDS,
    ) -> None:
        self._stream = stream
        self.quiet = quiet
        environ = os.environ if environ is None else environ
        target = stream if stream is not None else sys.stderr
        self.mode = "quiet" if quiet else ("bar" if _isatty(target) and not in_ci(environ) else "lines")
        self._show_after = show_after

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr  # whatever stderr is at the time

    def task(self, verb: str, *, total_bytes: int, total_files: int) -> Task:
        return Task(self, verb, total_bytes=total_bytes, total_files=total_files)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Task:
    """One phase's progress. Thread-safe: upload threads report into it side by side."""

    def __init__(self, reporter: Reporter, verb: str, *, total_bytes: int, total_files: int) -> None:
        self._reporter = reporter
        self.verb = verb
        self.total_bytes = total_bytes
        self.total_files = total_files
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._bytes = 0
        self._files = 0
        self._shown = False  # past SHOW_AFTER_SECONDS: something was drawn
        self._last_line_at = 0.0
        self._last_bucket = -1
        self._bar: Any = None
        self._closed = False

    # ---------------------------------------------------------------- reported by the work

    def advance(self, nbytes: int) -> None:
        with self._lock:
            self._bytes += nbytes
            self._draw(nbytes)

    def file_done(self) -> None:
        with self._lock:
            self._files += 1
            self._draw(0)

    # --------------------------------------------------------------------------- drawing

    def _draw(self, nbytes: int) -> None:
        mode = self._reporter.mode
        if mode == "quiet":
            return
        now = time.monotonic()
        if not self._shown and now - self._started < self._reporter._show_after:
            return
        if mode == "bar":
            self._draw_bar(nbytes)
        else:
            self._draw_line(now)

    def _draw_bar(self, nbytes: int) -> None:
        if self._bar is None:
            from tqdm import tqdm

            self._shown = True
            self._bar = tqdm(
                total=self.total_bytes,
                initial=self._bytes,
                desc=PRESENT.get(self.verb, self.verb),
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                file=self._reporter.stream,
                leave=False,  # the end line replaces it
                dynamic_ncols=True,
                mininterval=0.2,
                postfix=self._files_text(),
            )
            return
        if nbytes:
            self._bar.update(nbytes)
        else:
            self._bar.set_postfix_str(self._files_text(), refresh=False)

    def _files_text(self) -> str:
        return f"{self._files:,}/{self.total_files:,} files"

    def _draw_line(self, now: float) -> None:
        percent = 100 * self._bytes // self.total_bytes if self.total_bytes else 100
        bucket = int(percent // LINE_EVERY_PERCENT)
        if self._shown and bucket == self._last_bucket and now - self._last_line_at < LINE_EVERY_SECONDS:
            return
        self._shown = True
        self._last_bucket, self._last_line_at = bucket, now
        elapsed = now - self._started
        rate = self._bytes / elapsed if elapsed > 0 else 0.0
        left = self.total_bytes - self._bytes
        eta = f", about {left / rate:.0f} s left" if rate > 0 and left > 0 else ""
        self._write(
            f"{PRESENT.get(self.verb, self.verb)}: {percent:.0f}% "
            f"({format_bytes(self._bytes)} of {format_bytes(self.total_bytes)}, "
            f"{self._files:,} of {format_files(self.total_files)}), {format_bytes(rate)}/s{eta}"
        )

    def _write(self, line: str) -> None:
        stream = self._reporter.stream
        stream.write(line + "\n")
        stream.flush()

    # ------------------------------------------------------------------------------ end

    def close(self, *, completed: bool = True) -> TaskStats:
        """Stop drawing; after a completed upload (or a hash that showed progress) print the end line."""
        with self._lock:
            stats = TaskStats(nbytes=self._bytes, files=self._files, seconds=time.monotonic() - self._started)
            if self._closed:
                return stats
            self._closed = True
            if self._bar is not None:
                self._bar.close()
            if completed and self._reporter.mode != "quiet" and (self.verb == "uploaded" or self._shown):
                self._write(end_line(self.verb, stats))
        return stats
