"""GitHub's runner: how it runs the action's ``entrypoint.py``, and how it reads back what the action
wrote (the ``$GITHUB_OUTPUT`` file and ``::command::`` lines). Shared by the unit tests of
``hokusai_action/github.py`` and the end-to-end tests of the action."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import REPO
from tests.helpers import CLI_PYTHON, run_captured

# the database password of ``base_inputs``: trust auth ignores it, and it must never be printed
CANARY = "canary-db-password-9f3"


def run_entrypoint(cli_env, services, workspace: Path, inputs: dict[str, str], *args: str, github: bool = True):
    env = {k: v for k, v in cli_env.items() if k not in ("MLFLOW_TRACKING_URI", "HOKUSAI_DATABASE_URL")}
    outputs, summary = workspace / "github_output", workspace / "step_summary"
    outputs.write_text("")
    summary.write_text("")
    if github:
        env.update(
            GITHUB_ACTIONS="true",
            GITHUB_OUTPUT=str(outputs),
            GITHUB_STEP_SUMMARY=str(summary),
            GITHUB_WORKSPACE=str(workspace),
        )
        # the runner exports every declared input, upper-cased with hyphens kept; unset ones are empty
        defaults = {
            "config": "hokusai.yaml",
            "dry-run": "false",
            "debug": "false",
            "metric-value": "",
            "webhook-url": "",
        }
        for name, value in {**defaults, **inputs}.items():
            env[f"INPUT_{name.upper()}"] = value
    done = run_captured([CLI_PYTHON, str(REPO / "entrypoint.py"), *args], env=env, cwd=workspace)
    return done, outputs.read_text(), summary.read_text()


def base_inputs(services, token: str, model: Path) -> dict[str, str]:
    return {
        "token-id": token,
        "model-path": str(model.name),
        "metric": "auroc",
        "baseline": "0.82",
        "mlflow-tracking-uri": services.mlflow_url,
        # trust auth ignores the password: it is a canary that must never be printed
        "database-url": services.database_url.replace("postgres@", f"postgres:{CANARY}@"),
    }


# ----------------------------------------------------------------------- parsers, as the runner reads


def parse_output_file(text: str) -> dict[str, str]:
    """Read a ``$GITHUB_OUTPUT`` file the way the runner does.

    Each line is ``name=value`` when ``=`` comes before any ``<<``; otherwise it opens a heredoc
    ``name<<DELIMITER`` whose value is every following line up to one equal to the delimiter. The
    runner reads lines with .NET ``ReadLine`` (CR, LF and CRLF all end a line) and joins heredoc
    lines with LF.
    """
    lines = re.split(r"\r\n|\r|\n", text)
    if lines and lines[-1] == "":
        lines.pop()
    values: dict[str, str] = {}
    index = 0
    while index < len(lines):
        line = lines[index]
        index += 1
        if not line:
            continue
        equals, heredoc = line.find("="), line.find("<<")
        if equals >= 0 and (heredoc < 0 or equals < heredoc):
            name, value = line[:equals], line[equals + 1 :]
        elif heredoc >= 0:
            name, delimiter = line[:heredoc], line[heredoc + 2 :]
            assert name and delimiter, f"invalid heredoc header {line!r}"
            body: list[str] = []
            while True:
                assert index < len(lines), f"matching delimiter {delimiter!r} not found"
                current = lines[index]
                index += 1
                if current == delimiter:
                    break
                body.append(current)
            value = "\n".join(body)
        else:
            raise AssertionError(f"invalid format {line!r}")
        assert name, f"empty name in {line!r}"
        values[name] = value
    return values


def _unescape_data(text: str) -> str:
    return text.replace("%0D", "\r").replace("%0A", "\n").replace("%25", "%")


def _unescape_property(text: str) -> str:
    return _unescape_data(text.replace("%3A", ":").replace("%2C", ","))


def parse_command(line: str) -> tuple[str, dict[str, str], str]:
    """Parse one ``::command k=v,k=v::data`` line as the runner does, unescaping as it does."""
    assert line.startswith("::"), line
    end = line.index("::", 2)
    head, data = line[2:end], line[end + 2 :]
    command, _, props_text = head.partition(" ")
    properties: dict[str, str] = {}
    for pair in filter(None, props_text.split(",")):
        key, _, value = pair.partition("=")
        properties[key] = _unescape_property(value)
    return command, properties, _unescape_data(data)
