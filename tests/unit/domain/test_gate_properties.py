"""Properties of the gate with margins and a champion (Hypothesis)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hokusai_action.domain.metrics import (
    Champion,
    GateFailed,
    Margin,
    enforce_gate,
    evaluate_gate,
    parse_margin,
    resolve_metric,
)
from hokusai_action.errors import InputError

pytestmark = [pytest.mark.unit]

HIGHER = resolve_metric("r2")  # unbounded below, so mirrored values stay in range
LOWER = resolve_metric("rmse")
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
small = st.floats(min_value=0, max_value=10, allow_nan=False, allow_infinity=False)
margins = st.one_of(
    st.none(),
    small.map(lambda a: Margin(absolute=a, text=repr(a))),
    st.floats(min_value=0, max_value=1).map(lambda r: Margin(relative=r, text=f"{r * 100}%")),
)
champions = st.one_of(st.none(), finite.map(lambda v: Champion(alias="champion", version="3", value=v)))


@given(value=finite, baseline=finite, margin=margins, champion=champions)
def test_direction_symmetry(value, baseline, margin, champion):
    """Lower-is-better on (v, b) decides exactly like higher-is-better on (-v, -b)."""
    mirrored_champion = None if champion is None else Champion(champion.alias, champion.version, -champion.value)
    lower = evaluate_gate(LOWER, value, baseline, margin=margin, champion=champion)
    higher = evaluate_gate(HIGHER, -value, -baseline, margin=margin, champion=mirrored_champion)
    assert lower.passed == higher.passed
    assert lower.delta == pytest.approx(higher.delta)


@given(value=finite, margin=st.none(), champion=st.none())
def test_ties_pass(value, margin, champion):
    for metric in (HIGHER, LOWER):
        assert evaluate_gate(metric, value, value, margin=margin, champion=champion).passed


@given(baseline=finite, margin=margins, champion=champions)
def test_nan_never_passes(baseline, margin, champion):
    for metric in (HIGHER, LOWER):
        gate = evaluate_gate(metric, math.nan, baseline, margin=margin, champion=champion)
        assert not gate.passed
        with pytest.raises(GateFailed):
            enforce_gate(gate)


@given(value=finite, baseline=finite, smaller=small, larger=small)
def test_margins_are_monotone(value, baseline, smaller, larger):
    """A larger margin never lets through a model that a smaller margin refused."""
    smaller, larger = sorted((smaller, larger))
    for metric in (HIGHER, LOWER):
        for kind in ("absolute", "relative"):
            loose = Margin(**{kind: smaller / 10 if kind == "relative" else smaller})
            strict = Margin(**{kind: larger / 10 if kind == "relative" else larger})
            if evaluate_gate(metric, value, baseline, margin=strict).passed:
                assert evaluate_gate(metric, value, baseline, margin=loose).passed


@given(value=finite, baseline=finite, champion=finite)
def test_beating_the_champion_implies_beating_the_baseline(value, baseline, champion):
    for metric in (HIGHER, LOWER):
        gate = evaluate_gate(metric, value, baseline, champion=Champion("champion", "1", champion))
        if gate.passed:
            assert evaluate_gate(metric, value, baseline).passed
            assert evaluate_gate(metric, value, champion).passed


def test_relative_margin_on_a_zero_reference_adds_nothing():
    gate = evaluate_gate(HIGHER, 0.0, 0.0, margin=parse_margin("5%"))
    assert gate.passed
    assert "adds nothing" in " ".join(gate.notes())


@pytest.mark.parametrize(
    ("text", "absolute", "relative"), [("0.01", 0.01, 0.0), ("2%", 0.0, 0.02), (" 0 ", 0.0, 0.0), ("1.5%", 0.0, 0.015)]
)
def test_parse_margin(text, absolute, relative):
    margin = parse_margin(text)
    assert margin is not None
    assert (margin.absolute, margin.relative) == pytest.approx((absolute, relative))


@pytest.mark.parametrize("text", ["abc", "-0.1", "nan", "inf", "%"])
def test_parse_margin_refuses_nonsense(text):
    with pytest.raises(InputError, match="--min-improvement"):
        parse_margin(text)
