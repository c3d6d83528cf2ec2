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

import pytest
import yaml

pytestmark = [pytest.mark.unit]

REPO_ROOT = Path(__file__).resolve().parents[2]
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
    from hokusai_action.settings import load_config_file

    config = load_config_file(EXAMPLES / "hokusai.yaml")
    assert config.values["token_id"] == "XRAY"
    assert config.values["metric"] == "auroc"
    assert config.values["baseline"] == DOCS_BASELINE
    assert config.values["database"] == {"url_env": "HOKUSAI_DATABASE_URL", "timeout": 10}
    assert config.values["events"]["sinks"] == ["database"]


def test_example_config_commented_sections_are_valid_when_uncommented(tmp_path: Path) -> None:
    from hokusai_action.settings import load_config_file

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
