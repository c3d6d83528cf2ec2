"""Fuzz the two ways input arrives: ``hokusai.yaml`` documents and ``model register`` argument lists.

Every case must end like a user error, never like a bug: exit 0-5, no traceback, never exit 70, and
on failure exactly one ``error:`` line on stderr and nothing on stdout.

Runs in-process (click's CliRunner) to stay fast. No case can register anything: the database is a
fresh SQLite file holding the schema and no token (so a registration stops at "token missing", exit
3, before MLflow is written to), MLflow is a closed loopback port with a 0.5 s budget, and every
path-like value is either a small model made here or a name that does not exist (a fuzzer must not
hash ``/`` or read ``/dev/zero``).
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from hokusai_action.cli import main
from hokusai_action.cli.boundary import asks_for_json
from hokusai_action.domain.tokens import (
    TOKEN_PATTERN,
    normalise_token_id,
)
from hokusai_action.errors import InputError
from tests.helpers import assert_json_failure
from tests.services import free_port

pytestmark = [pytest.mark.unit, pytest.mark.slow]

CASES = {"yaml": 0, "argv": 0}
CLICK_USAGE_ERRORS: list[str] = []
FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,  # no .hypothesis folder in the repository; failures print their reproducer
)


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    from hokusai_action.db.store import Database

    root = tmp_path_factory.mktemp("fuzz")
    model = root / "model"
    model.mkdir()
    (model / "weights.bin").write_bytes(b"\x01" * 4096)
    (model / "metrics.json").write_text(json.dumps({"auroc": 0.9, "rmse": 0.2}))
    (root / "metrics.yaml").write_text("auroc: 0.8\naccuracy: 0.7\n")
    (root / "preds.csv").write_text("label,score\n1,0.9\n0,0.2\n1,0.7\n0,0.4\n")
    database_url = f"sqlite:///{(root / 'site.db').as_posix()}"
    database = Database(database_url)
    database.upgrade()
    database.dispose()
    env = {
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
        "HOKUSAI_MLFLOW_TIMEOUT": "0.5",
        "HOKUSAI_DATABASE_URL": database_url,
        "HOKUSAI_DATABASE_TIMEOUT": "1",
        "HOKUSAI_HOME": str(root / ".hokusai"),
        "HOKUSAI_GIT_SHA": "0123456789abcdef0123456789abcdef01234567",
        "HOKUSAI_EVENT_SINKS": None,
        "HOKUSAI_PUBSUB_TOPIC": None,
        "HOKUSAI_WEBHOOK_URL": None,
        "HOKUSAI_WEBHOOK_SECRET": None,
        "PUBSUB_EMULATOR_HOST": None,
        "GITHUB_ACTIONS": None,
    }
    sigterm = signal.getsignal(signal.SIGTERM)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        yield {"root": root, "env": env, "database_url": database_url}
    signal.signal(signal.SIGTERM, sigterm)  # handles_errors installs its own
    print(f"\nfuzz cases run: {CASES}; click usage errors among them: {len(CLICK_USAGE_ERRORS)}")


def assert_user_error(result: Any, case: Any) -> None:
    """Exit 0-5, no traceback, and a failure is one ``error:`` line on stderr with stdout empty (with
    ``--output json``: the one JSON object of the failure)."""
    output = result.stdout + result.stderr
    event(f"exit {result.exit_code}")  # shown by --hypothesis-show-statistics
    assert result.exception is None or isinstance(result.exception, SystemExit), (case, result.exc_info)
    assert "Traceback" not in output, (case, output)
    assert 0 <= result.exit_code <= 5, (case, result.exit_code, output)
    if result.exit_code != 0:
        lines = result.stderr.splitlines()
        if asks_for_json(case):
            assert_json_failure(result.stdout, result.exit_code)
        else:
            assert result.stdout == "", (case, result.stdout)
        if result.exit_code == 2 and lines and lines[0].startswith("Usage: "):
            # click's own usage error (an option's type, e.g. --config naming a directory): its
            # standard three lines, the last one saying what is wrong
            assert lines[-1].startswith("Error: ") and len(lines) <= 4, (case, result.stderr)
            CLICK_USAGE_ERRORS.append(lines[-1])
            return
        assert len(lines) == 1 and lines[0].startswith("error: "), (case, result.exit_code, result.stderr)


# ------------------------------------------------------------------------------------------- values

SAFE_PATHS = ["model", "model/weights.bin", "model/metrics.json", "metrics.yaml", "preds.csv", "nx-missing"]
PATH_KEYS = {"model_path", "metrics_file", "predictions", "config"}

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=10**300, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(["auroc", "rmse", "0.82", "1e999", "nan", "-inf", "latest", "V3", "XRAY\n", "database"]),
)
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=12,
)

SECTIONS = {
    "mlflow": ["tracking_uri", "experiment", "timeout"],
    "database": ["url_env", "url", "timeout"],
    "events": ["sinks", "source", "pubsub", "webhook"],
}
TOP_KEYS = [
    "token_id",
    "model_path",
    "metric",
    "baseline",
    "metric_value",
    "metrics_file",
    "predictions",
    "label_column",
    "score_column",
    "positive_label",
    "mlflow_run_id",
    "min_improvement",
    "compare_to",
    "set_alias",
    "dry_run",
    *SECTIONS,
]


def safe_path_value(draw: Any) -> Any:
    """A path-like value that cannot reach outside the sandbox: a known file, or a missing name."""
    return draw(st.sampled_from(SAFE_PATHS) | st.text(max_size=20).map(lambda t: "nx-" + t.replace("/", "_")))


def make_safe(document: Any, draw: Any) -> Any:
    if isinstance(document, dict):
        return {
            key: safe_path_value(draw) if key in PATH_KEYS and isinstance(value, str) else make_safe(value, draw)
            for key, value in document.items()
        }
    if isinstance(document, list):
        return [make_safe(item, draw) for item in document]
    return document


@st.composite
def hokusai_documents(draw: Any) -> str:
    """YAML text: mostly mappings of known and unknown keys with random values, some raw text."""
    kind = draw(st.sampled_from(["mapping", "mapping", "mapping", "plausible", "raw", "yamlish", "anchors"]))
    if kind == "raw":
        return draw(st.text(max_size=200))
    if kind == "yamlish":  # YAML's own syntax: anchors, merges, tags, complex keys, flow collections
        pieces = st.sampled_from(
            [
                "token_id: ",
                "mlflow:\n  ",
                "events: {sinks: ",
                "&a ",
                "*a",
                "<<: *a",
                "!!binary aGk=",
                "!!set {a}",
                "!!timestamp 2001-12-14",
                "!!python/object:os.system",
                "? [k]\n: v",
                "- ",
                "[",
                "]",
                "{",
                "}",
                ", ",
                "\n",
                "  ",
                "'q'",
                '"\\0"',
                "---\n",
                "%YAML 1.1\n",
                ".nan",
                "1e999",
            ]
        )
        return "".join(draw(st.lists(pieces | st.text(max_size=5), max_size=25)))
    if kind == "anchors":
        depth = draw(st.integers(min_value=1, max_value=12))
        width = draw(st.integers(min_value=1, max_value=12))
        lines = ["a0: &a0 [x]"] + [f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * width)}]" for n in range(1, depth)]
        return "\n".join(lines) + "\n"
    document: dict[Any, Any] = {}
    if kind == "plausible":  # a document close to a valid one, so the later checks run too
        document = {"token_id": "FUZZ", "model_path": "model", "metric": "auroc", "baseline": 0.5}
    keys = st.sampled_from(TOP_KEYS) | st.text(max_size=12)
    for key in draw(st.lists(keys, max_size=6)):
        if key in SECTIONS and draw(st.booleans()):
            sub = st.sampled_from(SECTIONS[key]) | st.text(max_size=8)
            document[key] = draw(st.dictionaries(sub, values, max_size=4))
        else:
            document[key] = draw(values)
    document = make_safe(document, draw)
    return yaml.safe_dump(document, allow_unicode=draw(st.booleans()), default_flow_style=draw(st.booleans()))


@given(text=hokusai_documents())
@FUZZ
def test_any_hokusai_yaml_ends_in_a_clear_user_error(sandbox: dict[str, Any], text: str) -> None:
    config = sandbox["root"] / "fuzz.yaml"
    config.write_text(text, encoding="utf-8")
    result = CliRunner().invoke(main, ["model", "register", "--config", str(config)], env=sandbox["env"])
    CASES["yaml"] += 1
    assert_user_error(result, text)


# ------------------------------------------------------------------------------------ argument lists

# argv cannot hold NUL (execve refuses it) and the OS gives Python text, not lone surrogates, for
# valid UTF-8; everything else a shell can pass is fair game
argv_text = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"), max_size=30)
numbers = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers().map(str),
    st.sampled_from(["1e999", "-1e999", "NaN", "nan", "inf", "0x10", "1_000", "١٢", " 0.9 ", "0.82\n", "1" * 5000]),
    argv_text,
)
OPTIONS: dict[str, Any] = {
    "--token-id": st.sampled_from(["FUZZ", "fuzz", "XRAY\n", "-X", "a" * 65, ""]) | argv_text,
    "--metric": st.sampled_from(["auroc", "roc-auc", "RMSE", "r2", "f1 score"]) | argv_text,
    "--baseline": numbers,
    "--metric-value": numbers,
    "--min-improvement": st.sampled_from(["2%", "0.01", "-1", "%", "nan%", "1e999%"]) | numbers,
    "--compare-to": st.sampled_from(["champion", "latest", "v3", "a b", "x" * 256]) | argv_text,
    "--set-alias": st.sampled_from(["champion", "latest", "V3", "champion\n"]) | argv_text,
    "--label-column": argv_text,
    "--score-column": argv_text,
    "--positive-label": argv_text,
    "--mlflow-run-id": st.sampled_from(["0123456789abcdef", "../../etc"]) | argv_text,
    "--event-sinks": st.sampled_from(["database", "pubsub", "webhook", "database,database", ",", "kafka"]) | argv_text,
    "--mlflow-tracking-uri": st.sampled_from(["http://127.0.0.1:9", "http://[::1", "ftp://x", "nx-store"]),
    "--database-url": st.sampled_from(["not a url", "sqlite:///nx-dir/fresh.db", "postgresql://h:notaport/db"]),
    "--output": st.sampled_from(["text", "json"]),
}
PATH_OPTIONS = ["--model-path", "--metrics-file", "--predictions", "--config"]


@st.composite
def register_arguments(draw: Any) -> list[str]:
    args = ["model", "register"]
    if draw(st.booleans()):  # mostly a complete, valid base, so later checks are reached
        args += ["--token-id", "FUZZ", "--model-path", "model", "--metric", "auroc", "--baseline", "0.5"]
    names = draw(st.lists(st.sampled_from([*OPTIONS, *PATH_OPTIONS, "--dry-run"]), max_size=6))
    for name in names:
        if name == "--dry-run":
            args.append(name)
            continue
        if name in PATH_OPTIONS:
            value = draw(st.sampled_from(SAFE_PATHS) | argv_text.map(lambda t: "nx-" + t.replace("/", "_")))
        else:
            value = draw(OPTIONS[name])
        # "--opt=value" keeps a value that starts with "-" a value, as a careful user writes it
        args += [f"{name}={value}"] if value.startswith("-") or not value else [name, value]
    return args


@given(args=register_arguments())
@FUZZ
def test_any_register_arguments_end_in_a_clear_user_error(sandbox: dict[str, Any], args: list[str]) -> None:
    result = CliRunner().invoke(main, args, env=sandbox["env"])
    CASES["argv"] += 1
    assert_user_error(result, args)


# ---------------------------------------------------------------------------------- token ids

ALNUM = set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")


@given(raw=st.text(max_size=70))
@settings(max_examples=300, deadline=None, database=None)
def test_a_token_id_is_accepted_exactly_when_it_fully_matches_the_documented_pattern(raw: str) -> None:
    documented = (
        0 < len(raw) <= 64 and raw[0] in ALNUM and all(ch in ALNUM or ch in "_-" for ch in raw) and raw.isascii()
    )
    try:
        normalise_token_id(raw)
        accepted = True
    except InputError:
        accepted = False
    assert accepted == documented, repr(raw)
    assert bool(TOKEN_PATTERN.fullmatch(raw)) == documented
