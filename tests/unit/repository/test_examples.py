"""The files under examples/: the training script, the sample hokusai.yaml and the CI workflows.

What a user copying them would check: training writes a model that beats the documented baseline,
the same seed gives the same bytes (so a re-run registration is idempotent), the metric in
metrics.json is what an independent implementation measures, and the config and workflows are
valid for the tools that read them.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
import resource
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

pytestmark = [pytest.mark.unit]

REPO_ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = REPO_ROOT / "examples"
DOCS_BASELINE = 0.82  # the baseline the README and the example workflows use
TRAIN_CPU_BUDGET_SECONDS = 2.0
CHECK_JSONSCHEMA = Path(sys.executable).with_name("check-jsonschema")
WORKFLOWS = [
    pytest.param("github-workflow.yml", "vendor.github-workflows", id="github"),
    pytest.param("gitlab-ci.yml", "vendor.gitlab-ci", id="gitlab"),
]


def _run_train(out: Path) -> float:
    """Run examples/train.py as a user would; return the CPU seconds it used (load-independent)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [sys.executable, str(EXAMPLES / "train.py"), "--out", str(out)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    out = tmp_path_factory.mktemp("train") / "checkpoints" / "final"
    return out, _run_train(out)


@pytest.fixture(scope="module")
def example_modules() -> Iterator[tuple[ModuleType, ModuleType]]:
    """(train, predict) imported from examples/ the way `python examples/train.py` sees them."""
    saved = {name: sys.modules.pop(name) for name in ("predict",) if name in sys.modules}
    modules = []
    try:
        for name in ("predict", "train"):
            spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
            assert spec is not None and spec.loader is not None
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module  # train.py does `from predict import ...`
            spec.loader.exec_module(module)
            modules.append(module)
        yield modules[1], modules[0]
    finally:
        for name in ("predict", "train"):
            sys.modules.pop(name, None)
        sys.modules.update(saved)


# --------------------------------------------------------------------------------- train.py


def test_train_writes_model_metrics_and_card(trained: tuple[Path, float]) -> None:
    out, _ = trained
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "metrics.json", "model.json"]
    model = json.loads((out / "model.json").read_text(encoding="utf-8"))
    assert len(model["weights"]) == len(model["feature_names"]) == 5
    assert model["training"]["rows"] == 2000
    assert model["training"]["test_rows"] == 500  # 25% held out
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert set(metrics) == {"auroc", "accuracy"}
    card = (out / "README.md").read_text(encoding="utf-8")
    assert str(metrics["auroc"]) in card
    assert "not for clinical use" in card


def test_train_beats_the_documented_baseline_comfortably(trained: tuple[Path, float]) -> None:
    out, _ = trained
    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["auroc"] > DOCS_BASELINE + 0.05
    assert metrics["accuracy"] > 0.8


def test_train_is_fast(trained: tuple[Path, float]) -> None:
    # CPU time, not wall time: a busy CI machine must not make this flaky
    _, cpu_seconds = trained
    assert cpu_seconds < TRAIN_CPU_BUDGET_SECONDS


def test_train_same_seed_gives_byte_identical_files(trained: tuple[Path, float], tmp_path: Path) -> None:
    first, _ = trained
    second = tmp_path / "again"
    _run_train(second)
    for name in ("model.json", "metrics.json", "README.md"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_metrics_match_an_independent_computation(
    trained: tuple[Path, float], example_modules: tuple[ModuleType, ModuleType]
) -> None:
    from sklearn.metrics import accuracy_score, roc_auc_score

    train, predict = example_modules
    out, _ = trained
    model = predict.load_model(out)
    config = model["training"]
    data = train.make_dataset(seed=config["seed"], rows=config["rows"], prevalence=config["prevalence"])
    _, held_out = train.split(data, seed=config["seed"], test_fraction=config["test_fraction"])
    rows = [features for features, _ in held_out]
    labels = [label for _, label in held_out]

    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["auroc"] == pytest.approx(roc_auc_score(labels, predict.predict_proba(model, rows)), abs=1e-6)
    assert metrics["accuracy"] == pytest.approx(accuracy_score(labels, predict.predict(model, rows)), abs=1e-6)


def test_auroc_handles_ties_like_sklearn(example_modules: tuple[ModuleType, ModuleType]) -> None:
    from sklearn.metrics import roc_auc_score

    train, _ = example_modules
    assert train.auroc([0, 0, 1, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0.5)
    assert train.auroc([0, 1, 0, 1], [0.1, 0.4, 0.4, 0.9]) == pytest.approx(
        roc_auc_score([0, 1, 0, 1], [0.1, 0.4, 0.4, 0.9])
    )
    rng = random.Random(3)
    labels = [rng.randint(0, 1) for _ in range(300)]
    scores = [rng.randint(0, 9) / 10 + 0.2 * label for label in labels]  # many ties
    assert train.auroc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)


def test_predict_script_scores_a_patient(trained: tuple[Path, float]) -> None:
    out, _ = trained
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "predict.py"), "--model", str(out)],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    )
    result = json.loads(done.stdout)
    assert 0.0 <= result["probability"] <= 1.0
    assert isinstance(result["finding"], bool)


# ----------------------------------------------------------------------------- hokusai.yaml


def test_example_config_loads() -> None:
    from hokusai_action.settings.loader import load_config_file

    config = load_config_file(EXAMPLES / "hokusai.yaml")
    assert config.values["token_id"] == "XRAY"
    assert config.values["metric"] == "auroc"
    assert config.values["baseline"] == DOCS_BASELINE
    assert config.values["database"] == {"url_env": "HOKUSAI_DATABASE_URL", "timeout": 10}
    assert config.values["events"]["sinks"] == ["database"]


def test_example_config_commented_sections_are_valid_when_uncommented(tmp_path: Path) -> None:
    from hokusai_action.settings.loader import load_config_file

    text = (EXAMPLES / "hokusai.yaml").read_text(encoding="utf-8")
    # "  # pubsub:" -> "  pubsub:", "  #   topic: ..." -> "    topic: ..."; prose comments stay comments
    text = re.sub(r"^  # (pubsub|webhook):", r"  \1:", text, flags=re.MULTILINE)
    text = re.sub(r"^  #   (\w+):", r"    \1:", text, flags=re.MULTILINE)
    text = re.sub(r"^  # (tracking_uri):", r"  \1:", text, flags=re.MULTILINE)
    path = tmp_path / "hokusai.yaml"
    path.write_text(text, encoding="utf-8")

    events = load_config_file(path).values["events"]
    assert events["pubsub"]["topic"] == "projects/hokusai/topics/token-events"
    assert events["webhook"]["secret_env"] == "HOKUSAI_WEBHOOK_SECRET"


def test_example_config_model_path_is_where_train_writes(
    example_modules: tuple[ModuleType, ModuleType],
) -> None:
    train, _ = example_modules
    model_path = yaml.safe_load((EXAMPLES / "hokusai.yaml").read_text(encoding="utf-8"))["model_path"]
    assert (EXAMPLES / model_path).resolve() == train.DEFAULT_OUT  # paths are relative to the file


# -------------------------------------------------------------------------------- workflows


@pytest.mark.parametrize(("name", "schema"), WORKFLOWS)
def test_workflow_is_valid_for_its_ci(name: str, schema: str) -> None:
    if not CHECK_JSONSCHEMA.exists():
        pytest.skip(f"{CHECK_JSONSCHEMA} is not installed (pip install -e '.[test]')")
    done = subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", schema, str(EXAMPLES / name)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr


BROKEN = [
    # a typo a user could make: each CI's schema must reject it
    pytest.param("github-workflow.yml", "vendor.github-workflows", "runs-on:", "run-on:", id="github"),
    pytest.param("gitlab-ci.yml", "vendor.gitlab-ci", "resource_group:", "resource-group:", id="gitlab"),
]


@pytest.mark.parametrize(("name", "schema", "good", "typo"), BROKEN)
def test_workflow_validation_catches_a_typo(name: str, schema: str, good: str, typo: str, tmp_path: Path) -> None:
    # proves the check above applies a real schema rather than passing anything
    if not CHECK_JSONSCHEMA.exists():
        pytest.skip(f"{CHECK_JSONSCHEMA} is not installed (pip install -e '.[test]')")
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    assert text.count(good) == 1
    broken = tmp_path / name
    broken.write_text(text.replace(good, typo), encoding="utf-8")
    done = subprocess.run(
        [str(CHECK_JSONSCHEMA), "--builtin-schema", schema, str(broken)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1, done.stdout + done.stderr


def test_github_workflow_uses_only_declared_inputs_and_outputs() -> None:
    action = yaml.safe_load((REPO_ROOT / "action.yml").read_text(encoding="utf-8"))
    text = (EXAMPLES / "github-workflow.yml").read_text(encoding="utf-8")
    steps = yaml.safe_load(text)["jobs"]["train-and-register"]["steps"]
    register = next(step for step in steps if step.get("id") == "register")
    assert register["uses"] == "hokusai/hokusai-ml-platform@v1"
    assert set(register["with"]) <= set(action["inputs"])
    assert register["with"]["baseline"] == str(DOCS_BASELINE)
    used_outputs = set(re.findall(r"steps\.register\.outputs\.([\w-]+)", text))
    assert used_outputs == {"mlflow-run-id", "model-version", "status", "event-id"}
    assert used_outputs <= set(action["outputs"])
    # secrets only from the secret store, never written inline
    assert register["with"]["database-url"] == "${{ secrets.HOKUSAI_DATABASE_URL }}"
    assert register["with"]["mlflow-tracking-token"] == "${{ secrets.MLFLOW_TRACKING_TOKEN }}"


def test_gitlab_job_uses_only_real_cli_options() -> None:
    job = yaml.safe_load((EXAMPLES / "gitlab-ci.yml").read_text(encoding="utf-8"))["register-model"]
    assert job["image"]["entrypoint"] == [""]
    assert "@sha256:" in job["image"]["name"]  # pinned by digest
    command = next(line for line in job["script"] if line.startswith("hokusai-ml-platform "))
    used = {word.split("=")[0] for word in shlex.split(command) if word.startswith("--")}
    help_text = subprocess.run(
        [sys.executable, "-m", "hokusai_action", "model", "register", "--help"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    assert used, command
    for option in used:
        assert re.search(rf"^\s+{re.escape(option)}\b", help_text, flags=re.MULTILINE), option


# ------------------------------------------------------------------------- deploy_consumer.py
# The decisions of the deploy side, in process: what the producer's sinks send parses, and each
# answer of `model verify` (its JSON contract and exit code) leads to deploy, refuse or retry. The
# consumer against the real CLI, emulator and servers is tests/e2e/events/test_deploy_consumer.py.

DIGEST = "sha256:" + "1f" * 32


@pytest.fixture(scope="module")
def consumer_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("deploy_consumer", EXAMPLES / "deploy_consumer.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["deploy_consumer"] = module  # dataclasses look their module up while the class is made
    try:
        spec.loader.exec_module(module)
    finally:
        sys.modules.pop("deploy_consumer", None)
    return module


EVENT_ID = "9b0e7c52-0000-5000-8000-000000000001"


def registration_event(event_id: str = EVENT_ID, **data_overrides: Any):
    from hokusai_action.domain.event import CloudEventRecord

    data = {
        "token_id": "XRAY",
        "model_name": "hokusai-XRAY",
        "model_version": "3",
        "model_uri": "models:/hokusai-XRAY/3",
        "artifact_digest": DIGEST,
        **data_overrides,
    }
    return CloudEventRecord(
        id=event_id, source="https://github.com/hokusai/example", time="2026-11-26T15:00:00Z", subject="XRAY", data=data
    )


def verify_result(*, verified: bool = True, failed: dict | None = None, **overrides: Any) -> dict:
    """A `model verify --output json` answer, as the CLI's contract describes it."""
    checks = [{"name": "artifact_digest", "ok": True, "detail": "matches the version tag"}]
    if failed:
        checks.append({"ok": False, **failed})
    return {
        "token_id": "XRAY",
        "model_name": "hokusai-XRAY",
        "model_version": "3",
        "model_uri": "models:/hokusai-XRAY/3",
        "event_id": EVENT_ID,  # the event of the registration the token holds now
        "artifact_digest": DIGEST,
        "verified": verified,
        "checks": checks,
        "signature": None,
        "error": None,
        **overrides,
    }


class ScriptedVerifier:
    """Answers each `model verify` call with the next (exit code, JSON) and records the calls."""

    def __init__(self, module: ModuleType, *answers: tuple[int, dict | None]) -> None:
        self.module = module
        self.answers = list(answers)
        self.calls: list[tuple[str, str]] = []

    def __call__(self, *, token_id: str, version: str):
        self.calls.append((token_id, version))
        code, result = self.answers.pop(0)
        return self.module.Verification(code, result, "" if code in (0, 1) else "error: MLflow did not answer")


def make_consumer(module: ModuleType, state: Path, verifier: ScriptedVerifier, deployed: list, reports: list):
    return module.Consumer(
        module.ProcessedEvents(state), verifier, report=reports.append, deployer=lambda o: deployed.append(o.model_uri)
    )


def parsed(module: ModuleType, record) -> Any:
    from hokusai_action.events.pubsub import to_pubsub_message

    message = to_pubsub_message(record)  # exactly what the Pub/Sub sink publishes
    return module.parse_event(message.attributes, message.data)


def test_consumer_parses_what_both_sinks_send(consumer_module: ModuleType) -> None:
    record = registration_event()
    binary = parsed(consumer_module, record)
    structured = consumer_module.parse_event(
        {"content-type": "application/cloudevents+json", "webhook-id": record.id}, record.structured_bytes()
    )
    for event in (binary, structured):
        assert event.get_id() == record.id
        assert event.get_type() == "token_ready_for_deploy"
        assert event.get_subject() == "XRAY"
        assert event.get_data() == record.data


def test_consumer_deploys_a_verified_model_once_even_after_a_restart(consumer_module: ModuleType, tmp_path: Path):
    deployed: list[str] = []
    reports: list = []
    verifier = ScriptedVerifier(consumer_module, (0, verify_result()))
    event = parsed(consumer_module, registration_event())

    first = make_consumer(consumer_module, tmp_path / "state.sqlite", verifier, deployed, reports).handle(event)
    # a new process on the same state file: the redelivery is acknowledged, nothing runs
    again = make_consumer(consumer_module, tmp_path / "state.sqlite", verifier, deployed, reports).handle(event)

    assert (first.outcome, again.outcome) == ("deployed", "duplicate")
    assert again.detail == "already deployed"
    assert deployed == ["models:/hokusai-XRAY/3"]
    assert verifier.calls == [("XRAY", "3")]
    assert [consumer_module.ACK[o.outcome] for o in reports] == [True, True]


def test_consumer_refuses_a_mismatch_for_good_and_names_it(consumer_module: ModuleType, tmp_path: Path) -> None:
    deployed: list[str] = []
    failed = {"name": "file weights.bin", "detail": "bytes differ from the registered digest"}
    verifier = ScriptedVerifier(consumer_module, (1, verify_result(verified=False, failed=failed)))
    consumer = make_consumer(consumer_module, tmp_path / "state.sqlite", verifier, deployed, [])
    event = parsed(consumer_module, registration_event())

    refused = consumer.handle(event)
    again = consumer.handle(event)

    assert refused.outcome == "refused"
    assert refused.detail == "file weights.bin: bytes differ from the registered digest"  # no error: the check
    assert (again.outcome, again.detail) == ("duplicate", "already refused")
    assert deployed == []
    assert consumer_module.ACK["refused"] is True
    assert consumer_module.HTTP_STATUS["refused"] == 422  # a 4xx the webhook sink does not retry


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        pytest.param((0, verify_result(verified=False)), "not verified", id="exit-0-not-verified"),
        pytest.param(
            (0, verify_result(artifact_digest="sha256:" + "00" * 32)), "artifact_digest", id="digest-differs-from-event"
        ),
        pytest.param((0, verify_result(model_version="4")), "model_version", id="other-version-verified"),
        pytest.param(
            (0, verify_result(event_id="9b0e7c52-0000-5000-8000-000000000002")), "id", id="not-the-current-event"
        ),
    ],
)
def test_consumer_never_deploys_what_does_not_match_the_event(
    consumer_module: ModuleType, tmp_path: Path, answer: tuple, why: str
) -> None:
    deployed: list[str] = []
    consumer = make_consumer(
        consumer_module, tmp_path / "s.sqlite", ScriptedVerifier(consumer_module, answer), deployed, []
    )
    outcome = consumer.handle(parsed(consumer_module, registration_event()))
    assert outcome.outcome == "refused"
    assert why in outcome.detail
    assert deployed == []


def test_consumer_reports_verifys_error_line_first(consumer_module: ModuleType, tmp_path: Path) -> None:
    failed = {"name": "model bytes", "detail": "the model bytes changed"}
    answer = verify_result(verified=False, failed=failed, error="weights.bin: bytes changed")
    verifier = ScriptedVerifier(consumer_module, (1, answer))
    consumer = make_consumer(consumer_module, tmp_path / "s.sqlite", verifier, [], [])
    assert consumer.handle(parsed(consumer_module, registration_event())).detail == "weights.bin: bytes changed"


def test_consumer_retries_when_verification_cannot_run(consumer_module: ModuleType, tmp_path: Path) -> None:
    deployed: list[str] = []
    verifier = ScriptedVerifier(consumer_module, (4, None), (0, verify_result()))
    consumer = make_consumer(consumer_module, tmp_path / "state.sqlite", verifier, deployed, [])
    event = parsed(consumer_module, registration_event())

    retry = consumer.handle(event)
    later = consumer.handle(event)  # redelivered after the outage: verified now

    assert (retry.outcome, retry.detail) == ("retry", "error: MLflow did not answer")
    assert consumer_module.ACK["retry"] is False
    assert consumer_module.HTTP_STATUS["retry"] == 503  # the webhook sink retries it
    assert later.outcome == "deployed"
    assert deployed == ["models:/hokusai-XRAY/3"]


def test_consumer_skips_other_event_types_and_rejects_incomplete_data(
    consumer_module: ModuleType, tmp_path: Path
) -> None:
    import dataclasses

    verifier = ScriptedVerifier(consumer_module)  # no answer: verify must not be called
    consumer = make_consumer(consumer_module, tmp_path / "state.sqlite", verifier, [], [])
    other = dataclasses.replace(registration_event(), type="token_archived")
    incomplete = registration_event(model_uri="")

    assert consumer.handle(parsed(consumer_module, other)).outcome == "ignored"
    assert consumer.handle(parsed(consumer_module, incomplete)).outcome == "rejected"
    assert verifier.calls == []


def test_consumer_runs_the_cli_with_the_contracts_arguments(consumer_module: ModuleType, tmp_path: Path) -> None:
    # a stand-in executable that records its argv and answers per the contract, exit 1
    fake = tmp_path / "fake-cli"
    fake.write_text(
        "#!/usr/bin/env python3\n"
        "import json, sys\n"
        f"open({str(tmp_path / 'argv.json')!r}, 'w').write(json.dumps(sys.argv[1:]))\n"
        f"print(json.dumps({verify_result(verified=False)!r}))\n"
        "sys.exit(1)\n",
        encoding="utf-8",
    )
    fake.chmod(0o755)
    result = consumer_module.run_verify(
        [str(fake)], token_id="XRAY", version="3", public_key="keys/deploy.pub", timeout=30
    )
    assert json.loads((tmp_path / "argv.json").read_text()) == [
        "model", "verify", "--token-id", "XRAY", "--version", "3", "--output", "json", "--public-key", "keys/deploy.pub"
    ]  # fmt: skip
    assert (result.exit_code, result.result["verified"]) == (1, False)


@pytest.mark.parametrize("given", ["nan", "inf", "-inf", "0", "-1", "soon"])
def test_consumer_refuses_seconds_that_are_not_a_finite_positive_number(
    consumer_module: ModuleType, given: str, capsys: pytest.CaptureFixture[str]
) -> None:
    for args in (["webhook", f"--verify-timeout={given}"], ["pubsub", "--subscription", "s", f"--max-idle={given}"]):
        with pytest.raises(SystemExit) as stopped:
            consumer_module.build_parser().parse_args(args)
        assert stopped.value.code == 2
        assert "seconds" in capsys.readouterr().err
