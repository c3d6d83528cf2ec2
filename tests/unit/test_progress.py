"""Progress people can read: plain lines in logs and CI, a live bar on a terminal, nothing with --quiet."""

from __future__ import annotations

import fcntl
import io
import os
import pty
import re
import struct
import subprocess
import termios
import textwrap
import threading

import pytest

from hokusai_action.progress import Reporter, TaskStats, end_line, format_bytes
from tests.helpers import CLI_PYTHON

pytestmark = [pytest.mark.unit]

CONTROL = re.compile(r"[\r\x1b\x08]")
GIB = 1024**3


class Log(io.StringIO):
    def isatty(self) -> bool:
        return False


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run_task(reporter: Reporter, *, total: int, steps: int, files: int = 1) -> TaskStats:
    task = reporter.task("uploaded", total_bytes=total, total_files=files)
    for _ in range(steps):
        task.advance(total // steps)
    for _ in range(files):
        task.file_done()
    return task.close()


def test_the_end_line_says_what_moved() -> None:
    assert end_line("uploaded", TaskStats(nbytes=2 * GIB, files=1, seconds=13.1)) == (
        "uploaded 2.0 GiB in 13.1 s (156 MiB/s), 1 file"
    )
    assert end_line("uploaded", TaskStats(nbytes=10_000 * 10 * 1024, files=10_000, seconds=4.0)) == (
        "uploaded 97.7 MiB in 4.0 s (24.4 MiB/s), 10,000 files"
    )
    assert format_bytes(0) == "0 B"
    assert format_bytes(1023) == "1023 B"
    assert format_bytes(200 * 1024 * 1024) == "200 MiB"


@pytest.mark.parametrize("environ", [{}, {"CI": "true"}, {"GITHUB_ACTIONS": "true"}])
def test_in_a_log_a_plain_line_every_ten_percent(environ: dict[str, str]) -> None:
    log = Log()
    reporter = Reporter(stream=log, environ=environ, show_after=0)
    assert reporter.mode == "lines"
    run_task(reporter, total=1000 * 1024, steps=100, files=3)
    lines = log.getvalue().splitlines()
    assert not CONTROL.search(log.getvalue()), repr(log.getvalue()[:200])
    progress = [line for line in lines if line.startswith("uploading: ")]
    assert 10 <= len(progress) <= 12, lines  # 0-100 % in steps of 10, not one per advance
    assert progress[-1].startswith("uploading: 100% (1000 KiB of 1000 KiB, 0 of 3 files)")
    assert re.fullmatch(r"uploaded 1000 KiB in \d+\.\d s \(.+/s\), 3 files", lines[-1]), lines[-1]


def test_ci_gets_lines_even_on_a_terminal() -> None:
    terminal = FakeTerminal()
    reporter = Reporter(stream=terminal, environ={"CI": "true"}, show_after=0)
    run_task(reporter, total=1000, steps=10)
    assert reporter.mode == "lines"
    assert not CONTROL.search(terminal.getvalue())


def test_a_short_task_draws_nothing_but_the_upload_end_line() -> None:
    log = Log()
    reporter = Reporter(stream=log, environ={})  # the default: ~2 s before anything is drawn
    run_task(reporter, total=1000, steps=10)
    lines = log.getvalue().splitlines()
    assert len(lines) == 1 and lines[0].startswith("uploaded 1000 B in "), lines
    hashed = reporter.task("hashed", total_bytes=1000, total_files=1)
    hashed.advance(1000)
    hashed.close()
    assert log.getvalue().splitlines() == lines  # a quick hash says nothing at all


def test_quiet_prints_nothing() -> None:
    log = Log()
    reporter = Reporter(stream=log, environ={}, quiet=True, show_after=0)
    stats = run_task(reporter, total=1000, steps=10)
    assert log.getvalue() == ""
    assert stats.nbytes == 1000  # still counted for the summary


def test_a_failed_upload_has_no_end_line() -> None:
    log = Log()
    task = Reporter(stream=log, environ={}).task("uploaded", total_bytes=10, total_files=1)
    task.advance(5)
    task.close(completed=False)
    assert log.getvalue() == ""


def test_threads_report_into_one_task() -> None:
    log = Log()
    reporter = Reporter(stream=log, environ={}, quiet=True)
    task = reporter.task("uploaded", total_bytes=8 * 1000 * 100, total_files=8)

    def work() -> None:
        for _ in range(1000):
            task.advance(100)
        task.file_done()

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    stats = task.close()
    assert (stats.nbytes, stats.files) == (800_000, 8)


TTY_SCRIPT = textwrap.dedent(
    """
    import sys, time
    from hokusai_action.progress import Reporter
    reporter = Reporter(environ={}, show_after=0)
    print("mode", reporter.mode, file=sys.stderr)
    task = reporter.task("uploaded", total_bytes=64 * 1024 * 1024, total_files=2)
    for _ in range(64):
        task.advance(1024 * 1024)
        time.sleep(0.01)
    task.file_done(); task.file_done()
    task.close()
    """
)


def test_on_a_terminal_a_live_bar() -> None:
    """A real pseudo-terminal as stderr: tqdm draws its bar there, then the end line replaces it."""
    main, child = pty.openpty()
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal has a size
    environ = {k: v for k, v in os.environ.items() if k not in ("CI", "GITHUB_ACTIONS")}
    environ["PYTHONPATH"] = os.pathsep.join(filter(None, [os.getcwd(), environ.get("PYTHONPATH")]))
    # the CLI's interpreter: its tqdm is the one users get (scripts/test-lowest.sh: the oldest supported)
    process = subprocess.Popen([CLI_PYTHON, "-c", TTY_SCRIPT], stderr=child, env=environ)
    os.close(child)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    process.wait(timeout=60)
    os.close(main)
    shown = b"".join(chunks).decode(errors="replace")
    assert process.returncode == 0, shown
    assert "mode bar" in shown
    assert "\r" in shown and "uploading:" in shown, shown  # redrawn in place
    assert re.search(r"\d+%\|", shown), shown  # tqdm's bar: percent, then the bar itself
    assert "/2 files" in shown
    assert re.search(r"uploaded 64\.0 MiB in \d+\.\d s \(.+/s\), 2 files", shown), shown
