"""RFC 1982 serial arithmetic."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from secondns.serial import MAX_ADD, serial_add, serial_cmp, serial_gt, serial_lt

serials = st.integers(min_value=0, max_value=2**32 - 1)
increments = st.integers(min_value=1, max_value=2**31 - 1)


def test_equal_serials_compare_equal() -> None:
    assert serial_cmp(7, 7) == 0
    assert not serial_gt(7, 7)
    assert not serial_lt(7, 7)


def test_zero_is_newer_than_max_after_wraparound() -> None:
    assert serial_gt(0, 2**32 - 1)
    assert serial_lt(2**32 - 1, 0)


def test_serials_half_the_space_apart_are_undefined() -> None:
    assert serial_cmp(0, 2**31) is None
    assert serial_cmp(2**31, 0) is None
    assert not serial_gt(0, 2**31)
    assert not serial_lt(0, 2**31)


def test_one_below_half_the_space_is_newer() -> None:
    assert serial_gt(2**31 - 1, 0)
    assert serial_lt(2**31 + 1, 0)


@given(serials, increments)
def test_adding_a_valid_increment_gives_a_newer_serial(s: int, n: int) -> None:
    later = serial_add(s, n)
    assert serial_gt(later, s)
    assert serial_lt(s, later)
    assert serial_cmp(later, s) == 1


@given(serials, serials)
def test_comparison_is_antisymmetric(a: int, b: int) -> None:
    forward = serial_cmp(a, b)
    backward = serial_cmp(b, a)
    if forward is None:
        assert backward is None
    else:
        assert backward == -forward


@given(serials)
def test_adding_zero_leaves_serial_unchanged(s: int) -> None:
    assert serial_add(s, 0) == s


def test_add_wraps_modulo_2_32() -> None:
    assert serial_add(2**32 - 1, 1) == 0
    assert serial_add(2**32 - 10, 20) == 10


def test_add_rejects_increment_of_half_the_space() -> None:
    with pytest.raises(ValueError, match="RFC 1982"):
        serial_add(1, MAX_ADD + 1)


def test_add_rejects_negative_increment() -> None:
    with pytest.raises(ValueError):
        serial_add(1, -1)


def test_serial_outside_32_bits_is_rejected() -> None:
    with pytest.raises(ValueError, match="outside"):
        serial_cmp(2**32, 0)
    with pytest.raises(ValueError, match="outside"):
        serial_add(-1, 1)
