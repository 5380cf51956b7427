"""The one rule for options: integers are ints (numpy's too) but not bools; reals are finite numbers in range."""

from __future__ import annotations

import numpy as np
import pytest

from seqgen import SeqgenError
from seqgen.checks import SEED_MAX, integer, real, seed


@pytest.mark.parametrize("value", [3, np.int64(3), np.uint8(3)])
def test_integer_accepts_python_and_numpy_integers(value: object) -> None:
    assert integer("k", value, 1) == 3 and type(integer("k", value, 1)) is int


@pytest.mark.parametrize("value", [True, 3.0, np.float64(3), "3", None, 1 + 0j, 0, 101])
def test_integer_refuses_other_types_and_out_of_range(value: object) -> None:
    with pytest.raises(SeqgenError, match="k must be an integer"):
        integer("k", value, 1, 100)


@pytest.mark.parametrize("value", [0.5, 1, np.float32(0.5), np.int64(1)])
def test_real_accepts_numbers(value: object) -> None:
    assert real("top_p", value, 0, 1, above=True) == float(value)


@pytest.mark.parametrize("value", [True, "0.5", None, float("nan"), float("inf"), 10**400, 0, 1.5, 1j])
def test_real_refuses_bools_text_nonfinite_and_out_of_range(value: object) -> None:
    with pytest.raises(SeqgenError, match="top_p must be a"):
        real("top_p", value, 0, 1, above=True)


def test_seed_range() -> None:
    assert seed(None) is None and seed(0) == 0 and seed(SEED_MAX) == SEED_MAX
    for bad in (-1, SEED_MAX + 1, 1.5, True):
        with pytest.raises(SeqgenError, match="seed must be an integer in"):
            seed(bad)
