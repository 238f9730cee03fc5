"""``services.fastjson.compact`` is ``json.dumps(..., separators=(",", ":"),
ensure_ascii=False).encode()``: the same bytes or the same exception, for any value, and it
takes ``orjson`` for plain ones."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest
from hypothesis import given, settings

from services import fastjson
from tests.services.test_jcs import (
    MAX,
    Name,
    Number,
    every_bmp_character,
    near_plain_values,
    plain_values,
    values,
)


def reference(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def outcome(value: object) -> tuple[str, bytes | type]:
    try:
        return "bytes", fastjson.compact(value)
    except Exception as exc:
        return "raised", type(exc)


def expected(value: object) -> tuple[str, bytes | type]:
    try:
        return "bytes", reference(value)
    except Exception as exc:
        return "raised", type(exc)


def _refuse(*args: object, **kwargs: object) -> str:
    raise AssertionError(f"fell back to json.dumps for {args!r}")


@pytest.fixture
def orjson_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any fall-back to ``json.dumps`` fail the test."""
    monkeypatch.setattr(json, "dumps", _refuse)


@settings(max_examples=1500, deadline=None)
@given(values)
def test_any_value_encodes_or_raises_as_json(value: object) -> None:
    assert outcome(value) == expected(value)


@settings(max_examples=1000, deadline=None)
@given(near_plain_values)
def test_one_departure_from_plain_encodes_or_raises_as_json(value: object) -> None:
    assert outcome(value) == expected(value)


@settings(max_examples=500, deadline=None)
@given(plain_values)
def test_plain_values_take_orjson_and_match(value: object) -> None:
    want = reference(value)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(json, "dumps", _refuse)
        assert fastjson.compact(value) == want


def test_string_escapes_match_for_every_character() -> None:
    characters = [*every_bmp_character(), "\U00010000", "\U0001f600", "\U0010ffff"]
    want = [reference(character) for character in characters]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(json, "dumps", _refuse)
        for character, form in zip(characters, want, strict=True):
            assert fastjson.compact(character) == form, hex(ord(character))
        assert fastjson.compact("\x1f\x7f\u2028\u2029") == (
            b'"\\u001f\x7f\xe2\x80\xa8\xe2\x80\xa9"'
        )


@pytest.mark.usefixtures("orjson_only")
def test_a_log_entry_answer_keeps_its_order_and_raw_utf8() -> None:
    # Insertion order, not sorted; the checkpoint's em dash as UTF-8, not \u2014.
    answer = {"b": 1, "a": {"checkpoint": "origin\n\u2014 name sig\n", "hashes": ["00" * 32]}}
    assert fastjson.compact(answer) == (
        b'{"b":1,"a":{"checkpoint":"origin\\n\xe2\x80\x94 name sig\\n","hashes":["'
        + b"00" * 32
        + b'"]}}'
    )


@pytest.mark.parametrize(
    "value", [1.0, 1e16, 5e-7, float("nan"), float("inf"), [0.1], MAX + 1, -(2**63) - 1, 2**64]
)
def test_floats_and_big_ints_are_written_as_json_writes_them(value: object) -> None:
    # orjson writes 1e16 as "1e16" and NaN as null, and refuses ints past 64 bits.
    assert fastjson.compact(value) == reference(value)


@dataclasses.dataclass
class Point:
    x: int


@pytest.mark.parametrize("value", [Number.ONE, Name.A, (1, "a"), {"k": (1, [2])}, {1: 2}, {"é": 1}])
def test_subclasses_tuples_and_other_keys_match_json(value: object) -> None:
    assert fastjson.compact(value) == reference(value)


@pytest.mark.parametrize("value", [Point(1), b"x", {"a": {1, 2}}])
def test_what_json_refuses_is_refused(value: object) -> None:
    # orjson would write a dataclass (and bytes or a set with a ``default``); the contract is
    # json's.
    with pytest.raises(TypeError):
        fastjson.compact(value)


def test_lone_surrogates_raise_as_json_then_encode_does() -> None:
    with pytest.raises(UnicodeEncodeError):
        fastjson.compact({"a": ["\ud800"]})


def test_nesting_past_orjsons_limit_still_encodes() -> None:
    # orjson stops at 254 levels; json.dumps goes on to the recursion limit.
    deep: list[object] = []
    for _ in range(300):
        deep = [deep]
    assert fastjson.compact(deep) == reference(deep)


def test_cycles_raise_as_json() -> None:
    cycle: list[object] = []
    cycle.append(cycle)
    assert outcome(cycle) == expected(cycle)
