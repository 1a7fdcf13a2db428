"""Kubernetes quantities: the grammar of apimachinery's resource.Quantity, exact values."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.api import quantity


@pytest.mark.parametrize(
    ("text", "exact"),
    [
        ("128Mi", 128 * 2**20),
        ("1Ki", 1024),
        ("2Gi", 2 * 2**30),
        ("1Ei", 2**60),
        ("1G", 10**9),
        ("1k", 1000),
        ("500m", Fraction(1, 2)),
        ("1.5", Fraction(3, 2)),
        ("2e3", 2000),
        ("1E-3", Fraction(1, 1000)),
        ("1.5Gi", 3 * 2**29),
        (".5", Fraction(1, 2)),
        ("5.", 5),
        ("+1", 1),
        ("-2", -2),
        ("100u", Fraction(1, 10**4)),
        ("3n", Fraction(3, 10**9)),
        ("0", 0),
        (7, 7),
        (0.25, Fraction(1, 4)),
    ],
)
def test_parses_exactly(text, exact):
    assert quantity.parse(text) == exact


@pytest.mark.parametrize(
    ("text", "value", "milli"),
    [("500m", 1, 500), ("1.5", 2, 1500), ("100Mi", 104857600, 104857600000), ("1n", 1, 1)],
)
def test_value_and_milli_value_round_up_like_apimachinery(text, value, milli):
    assert quantity.value(text) == value
    assert quantity.milli_value(text) == milli


@pytest.mark.parametrize(
    "text",
    ["", " 1", "1 ", "12MB", "1mi", "Mi", "1.2.3", "e3", "1e", "1Ki2", "1e3Ki", "0x10",
     "1_000", "--1", "1e+", "inf", "NaN", True, None, float("inf"), float("nan"), [1]],
)  # fmt: skip
def test_garbage_is_refused_in_apimachinerys_words(text):
    with pytest.raises(quantity.QuantityError, match="quantities must match the regular"):
        quantity.parse(text)


@pytest.mark.parametrize("text", ["1e999999999", "1e-65", "1" * 65])
def test_what_would_build_huge_numbers_is_refused(text):
    with pytest.raises(quantity.QuantityError):
        quantity.parse(text)


@given(st.integers(min_value=0, max_value=2**62), st.sampled_from(["", "k", "M", "Ki", "Mi"]))
def test_integers_with_suffixes_round_trip(number, suffix):
    scale = {"": 1, "k": 1000, "M": 10**6, "Ki": 1024, "Mi": 2**20}[suffix]
    assert quantity.value(f"{number}{suffix}") == number * scale
