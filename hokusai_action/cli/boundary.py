"""The command line's side of the failure boundary (``hokusai_action.failure``): click's own usage
errors and every command's failures as one line and an exit code, with ``--output json`` also as the
one error object on stdout.

``hokusai_action.failure`` (with logging and redaction) is imported once a command runs or fails:
``--help`` and ``--version`` need none of it.
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

import click

if TYPE_CHECKING:
    from hokusai_action.failure import Failure

INTERRUPTED_HINT = "Re-run the same command: it resumes where it stopped."
USAGE_HINT = "Run '{command} --help' for the options and an example."


def fail(line: str, code: int) -> NoReturn:
    """Print ``line`` as the one ``error:`` line on stderr and exit with ``code``."""
    from hokusai_action.failure import error_line

    click.echo(error_line(line), err=True)
    sys.exit(code)


def exit_with_failure(failure: Failure, *, json_output: bool) -> NoReturn:
    """Print ``failure`` (the error object on stdout first under ``--output json``) and exit with its code."""
    if json_output:
        click.echo(json.dumps(failure.as_json(), sort_keys=True))
    fail(failure.line(), failure.exit_code)


def asks_for_json(argv: Sequence[str]) -> bool:
    """Whether a command line asks for ``--output json``: read from the raw arguments, since it must
    be known when click could not parse them (an unknown option, a bad value)."""
    asked = None
    for index, arg in enumerate(argv):
        if arg == "--":  # what follows is arguments, whatever they look like
            break
        if arg.startswith("--output="):
            asked = arg.partition("=")[2]
        elif arg == "--output" and index + 1 < len(argv):
            asked = argv[index + 1]  # given twice, the last one wins, as in click
    return asked == "json"


def handles_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn a HokusaiError into one clear line and its exit code, anything else into exit 70 (a bug)
    or 4 (a raw connection failure); tracebacks only under --debug. With ``--output json`` the
    failure is also the one JSON object on stdout (``Failure.as_json``)."""

    @click.option("--debug", is_flag=True, help="Print the (redacted) traceback of a failure.")
    @functools.wraps(command)
    def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
        from hokusai_action.failure import debug_traceback, failure_of, interrupted, start_command

        start_command(debug=debug)
        json_output = kwargs.get("output") == "json"
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            exit_with_failure(interrupted(INTERRUPTED_HINT), json_output=json_output)
        except Exception as exc:
            if debug:
                click.echo(debug_traceback(), err=True)
            exit_with_failure(failure_of(exc), json_output=json_output)

    return wrapper


class OneLineErrors(click.Group):
    """Click's own usage errors (an unknown option, a missing value) as one line and exit 2, like ours.

    Click prints usage, a hint and the error on three or four lines; a CI log reader wants the one
    line that says what failed and what to do.
    """

    # click types main with overloads on standalone_mode, which this one always sets: hence the ignore
    def main(self, args: Any = None, prog_name: str | None = None, **extra: Any) -> Any:  # type: ignore[override]
        extra.pop("standalone_mode", None)
        json_output = asks_for_json(sys.argv[1:] if args is None else list(args))
        try:
            code = super().main(args=args, prog_name=prog_name, standalone_mode=False, **extra)
        except (click.ClickException, click.Abort) as exc:
            exit_with_failure(click_failure(exc), json_output=json_output)
        sys.exit(code if isinstance(code, int) else 0)


def click_failure(exc: click.ClickException | click.Abort) -> Failure:
    """The failure of one of click's own errors: a usage error (with the command's help as the hint),
    another of its exceptions (a file option that cannot be opened), or an abort."""
    from hokusai_action.failure import Failure

    if isinstance(exc, click.UsageError):
        command = exc.ctx.command_path if exc.ctx is not None else "hokusai-ml-platform"
        return Failure(exc.exit_code, "usage", exc.format_message(), USAGE_HINT.format(command=command))
    if isinstance(exc, click.ClickException):
        return Failure(exc.exit_code, "usage", exc.format_message())
    return Failure(1, "aborted", "Aborted.")
