"""Fixtures of the unit tests."""

from __future__ import annotations

import pytest

from hokusai_action import redact as redact_module


@pytest.fixture
def fresh_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    """redact keeps the secrets it masks in a module-level set: give the test its own, empty."""
    monkeypatch.setattr(redact_module, "_secrets", set())
