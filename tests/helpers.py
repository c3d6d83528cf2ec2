"""Small helpers shared by the end-to-end tests and the benchmark."""

from __future__ import annotations

from pathlib import Path


def register_args(
    token: str, model: Path | str, *extra: str, metric: str = "auroc", baseline: str | None = "0.82"
) -> list[str]:
    """The arguments of `hokusai-ml-platform model register` as a user types them."""
    args = ["model", "register", "--token-id", token, "--model-path", str(model), "--metric", metric]
    if baseline is not None:
        args += ["--baseline", baseline]
    return [*args, *extra]
