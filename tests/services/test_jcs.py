"""``services.jcs.dumps`` is ``rfc8785.dumps``: the same bytes or the same exception, for any
JSON-like value, and the orjson fast path is really taken for the documents the log writes."""

from __future__ import annotations

import base64
import enum
import json
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from services import jcs

# Held before any test patches ``rfc8785.dumps`` (``fast_path_only``).
reference: Callable[[Any], bytes] = rfc8785.dumps

MAX = jcs.MAX_SAFE_INTEGER

# The characters where JCS and json.dumps could part: controls and the escaped ASCII, U+007F and
# the JavaScript line terminators, the lone surrogates, the U+E000+ / non-BMP pair whose order
# differs between UTF-16 and code points.
SPECIAL = [
    *'\x00\x08\x09\x0a\x0c\x0d\x1f\x20"\\/\x7f\x80\x9f\xa0\u2028\u2029\ufeff',
    *"\ud800\udbff\udc00\udfff\ud7ff\ue000\uffff\U00010000\U0001f600\U0010ffff",
]
chars = st.one_of(st.characters(exclude_categories=()), st.sampled_from(SPECIAL))
texts = st.text(chars, max_size=12)
plain_texts = st.text(
    st.one_of(
        st.characters(codec="utf-8"),
        st.sampled_from([c for c in SPECIAL if not 0xD800 <= ord(c) <= 0xDFFF]),
    ),
    max_size=12,
)
ascii_keys = st.text(st.characters(max_codepoint=0x7F), max_size=8)
safe_ints = st.integers(-MAX, MAX)
unsafe_ints = st.one_of(
    st.integers(MAX + 1, MAX + 2),
    st.integers(-MAX - 2, -MAX - 1),
    st.integers(-(10**400), 10**400),
)

# Mostly the plain ingredients (the fast path's), each departure from them one branch among
# several, so that many values hold exactly one: a float, an unsafe int, a surrogate, a key
# that sorts differently. A value with one of everything only tests the first one rfc8785 meets.
values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        safe_ints,
        plain_texts,
        texts,
        st.floats(allow_nan=True, allow_infinity=True),
        unsafe_ints,
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(ascii_keys, inner, max_size=5),
        st.dictionaries(
            st.one_of(ascii_keys, texts, st.sampled_from(["\ue000", "\U0001f600", "\ud800"])),
            inner,
            max_size=5,
        ),
    ),
    max_leaves=25,
)

# Values the fast path must take: no floats, ASCII keys, safe ints, no lone surrogates.
plain_values = st.recursive(
    st.one_of(st.none(), st.booleans(), safe_ints, plain_texts),
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(ascii_keys, inner, max_size=5)
    ),
    max_leaves=25,
)


class Number(enum.IntEnum):
    ONE = 1


class Name(enum.StrEnum):
    A = "a"


# Exactly one thing that keeps a value off the fast path, inside an otherwise plain value: each
# of the walk's checks, tested alone (in ``values`` the first problem rfc8785 meets hides the rest).
surrogates = st.sampled_from([c for c in SPECIAL if 0xD800 <= ord(c) <= 0xDFFF])
departures = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    unsafe_ints,
    st.builds(lambda a, s, b: a + s + b, plain_texts, surrogates, plain_texts),
    st.dictionaries(
        st.one_of(texts, st.sampled_from(["\ue000", "\U0001f600", "\u00e9", "\ud800"])),
        plain_values,
        min_size=1,
        max_size=4,
    ),
    st.builds(lambda key: {key: 1}, st.one_of(st.integers(), st.booleans(), st.none())),
    st.tuples(plain_values, plain_values),
    st.sampled_from([Number.ONE, Name.A, b"", OrderedDict(b=1, a=2)]),
)


def one_departure(plain: object, departure: object, where: int) -> object:
    return [departure, [plain], {"a": plain, "b": [departure]}][where]


near_plain_values = st.builds(one_departure, plain_values, departures, st.integers(0, 2))


def _refuse(value: object) -> bytes:
    raise AssertionError(f"fell back to rfc8785 for {value!r}")


@pytest.fixture
def fast_path_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any fallback to ``rfc8785`` fail the test."""
    monkeypatch.setattr(rfc8785, "dumps", _refuse)


def outcome(encode: Callable[[Any], bytes], value: object) -> bytes | tuple[type, str]:
    try:
        return encode(value)
    except Exception as exc:
        return type(exc), str(exc)


def leaf_document() -> dict[str, object]:
    pem = b"-----BEGIN PUBLIC KEY-----\n" + base64.encodebytes(bytes(range(256)) * 2)
    pem += b"-----END PUBLIC KEY-----\n"
    return {
        "apiVersion": "0.0.1",
        "kind": "hashedrekord",
        "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": "ab" * 32}},
            "signature": {
                "content": base64.b64encode(bytes(72)).decode(),
                "publicKey": {"content": base64.b64encode(pem).decode()},
            },
        },
    }


@settings(max_examples=1500, deadline=None)
@given(values)
def test_any_value_encodes_or_raises_as_rfc8785(value: object) -> None:
    assert outcome(jcs.dumps, value) == outcome(reference, value)


@settings(max_examples=1000, deadline=None)
@given(near_plain_values)
def test_one_departure_from_plain_encodes_or_raises_as_rfc8785(value: object) -> None:
    assert outcome(jcs.dumps, value) == outcome(reference, value)


@settings(max_examples=500, deadline=None)
@given(plain_values)
def test_plain_values_take_the_fast_path_and_match(value: object) -> None:
    expected = reference(value)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(rfc8785, "dumps", _refuse)
        assert jcs.dumps(value) == expected


@pytest.mark.usefixtures("fast_path_only")
def test_a_hashedrekord_leaf_takes_the_fast_path() -> None:
    document = leaf_document()
    spec: Any = document["spec"]
    expected = (
        b'{"apiVersion":"0.0.1","kind":"hashedrekord","spec":{"data":{"hash":'
        b'{"algorithm":"sha256","value":"'
        + b"ab" * 32
        + b'"}},"signature":{"content":"'
        + base64.b64encode(bytes(72))
        + b'","publicKey":{"content":"'
        + spec["signature"]["publicKey"]["content"].encode()
        + b'"}}}}'
    )
    assert jcs.dumps(document) == expected


def test_the_leaf_matches_rfc8785() -> None:
    assert jcs.dumps(leaf_document()) == reference(leaf_document())


def every_bmp_character() -> Iterator[str]:
    for code in range(0x10000):
        if not 0xD800 <= code <= 0xDFFF:
            yield chr(code)


@pytest.mark.usefixtures("fast_path_only")
def test_string_escapes_match_for_every_character() -> None:
    # Whole BMP, then the astral planes' edges: json and JCS escape exactly the same characters
    # (", \, and C0 controls, short forms where JSON has them, else lowercase \u00xx).
    characters = [*every_bmp_character(), "\U00010000", "\U0001f600", "\U0010ffff"]
    for character in characters:
        assert jcs.dumps(character) == reference(character), hex(ord(character))
    assert jcs.dumps("\x1f\x7f\u2028\u2029") == b'"\\u001f\x7f\xe2\x80\xa8\xe2\x80\xa9"'
    assert jcs.dumps('"\\\b\f\n\r\t\x00') == b'"\\"\\\\\\b\\f\\n\\r\\t\\u0000"'


@pytest.mark.parametrize(
    "value", [1.0, 0.1, -0.0, 5e-7, 1e21, 1e-7, 123456789.0, [1.5], {"a": 2.0}]
)
def test_floats_are_written_as_jcs_numbers(value: object) -> None:
    # json writes Python's repr ("1.0", "5e-07"); JCS the ECMAScript form ("1", "5e-7").
    assert jcs.dumps(value) == reference(value)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), [float("nan")]])
def test_non_finite_floats_raise_as_rfc8785(value: object) -> None:
    with pytest.raises(rfc8785.FloatDomainError):
        jcs.dumps(value)


@pytest.mark.usefixtures("fast_path_only")
@pytest.mark.parametrize("value", [MAX, -MAX, 0, [MAX, -MAX], {"n": MAX}])
def test_safe_integers_take_the_fast_path(value: object) -> None:
    assert jcs.dumps(value) == json.dumps(value, separators=(",", ":")).encode()


@pytest.mark.parametrize("value", [MAX + 1, -MAX - 1, 2**64, 10**400, {"n": [MAX + 1]}])
def test_unsafe_integers_raise_as_rfc8785(value: object) -> None:
    with pytest.raises(rfc8785.IntegerDomainError):
        jcs.dumps(value)


def test_integers_past_the_str_digit_limit_raise_rfc8785s_value_error() -> None:
    # rfc8785 formats the integer into its IntegerDomainError message, and str() of an int over
    # 4300 digits raises first: a bare ValueError. json would raise the same, but from its own
    # code, so this checks the error still comes from rfc8785.
    value = {"n": 10**5000}
    with pytest.raises(ValueError, match="integer string conversion") as raised:
        jcs.dumps(value)
    assert type(raised.value) is ValueError
    assert outcome(jcs.dumps, value) == outcome(reference, value)


@pytest.mark.usefixtures("fast_path_only")
def test_bools_are_true_and_false() -> None:
    assert jcs.dumps({"t": True, "f": False, "l": [True, None]}) == (
        b'{"f":false,"l":[true,null],"t":true}'
    )


def test_key_order_is_utf16_not_code_points() -> None:
    # U+1F600 is D83D DE00 in UTF-16, so it sorts before U+E000; Python's sort puts it after.
    document = {"\ue000": 1, "\U0001f600": 2, "a": 3}
    assert jcs.dumps(document) == reference(document)
    assert jcs.dumps(document) == '{"a":3,"\U0001f600":2,"\ue000":1}'.encode()
    plain = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert plain.encode() != jcs.dumps(document)


def test_non_ascii_keys_match_rfc8785() -> None:
    document = {"é": 1, "e": 2, "\u00ff": [{"\u4e2d": 3}]}
    assert jcs.dumps(document) == reference(document)


def test_lone_surrogate_in_a_string_raises_as_rfc8785() -> None:
    with pytest.raises(rfc8785.CanonicalizationError, match="non-UTF-8"):
        jcs.dumps({"a": ["\ud800"]})


def test_lone_surrogate_in_a_key_raises_as_rfc8785() -> None:
    # rfc8785 sorts keys by their UTF-16 encoding, which refuses the surrogate before anything
    # else sees it: a UnicodeEncodeError, not a CanonicalizationError.
    with pytest.raises(UnicodeEncodeError):
        jcs.dumps({"\udc00": 1})


@pytest.mark.parametrize("value", [{1: 2}, {True: 1}, {None: 1}, {"a": 1, 2: 3}])
def test_non_string_keys_raise_as_rfc8785(value: object) -> None:
    # json.dumps would write these as "1", "true", "null".
    with pytest.raises(rfc8785.CanonicalizationError, match="keys must be strings"):
        jcs.dumps(value)


@pytest.mark.parametrize("value", [b"x", {1, 2}, object(), {"a": bytearray()}])
def test_unsupported_types_raise_as_rfc8785(value: object) -> None:
    with pytest.raises(rfc8785.CanonicalizationError, match="unsupported type"):
        jcs.dumps(value)


@pytest.mark.parametrize(
    "value",
    [
        Number.ONE,
        [Number.ONE],
        Name.A,
        {"k": Name.A},
        (1, "a"),
        {"t": (1, [2])},
        OrderedDict([("b", 1), ("a", 2)]),
    ],
)
def test_subclasses_and_tuples_match_rfc8785(value: object) -> None:
    assert jcs.dumps(value) == reference(value)


def test_cycles_and_deep_nesting_raise_recursion_error_as_rfc8785() -> None:
    cycle: list[object] = []
    cycle.append(cycle)
    deep: list[object] = []
    for _ in range(100_000):
        deep = [deep]
    for value in (cycle, deep):
        with pytest.raises(RecursionError):
            reference(value)
        with pytest.raises(RecursionError):
            jcs.dumps(value)


def test_nesting_past_orjsons_limit_matches_rfc8785() -> None:
    # orjson stops at 254 levels and refuses; rfc8785 goes on to the recursion limit.
    deep: list[object] = []
    for _ in range(300):
        deep = [deep]
    assert jcs.dumps(deep) == reference(deep)


@pytest.mark.usefixtures("fast_path_only")
def test_shared_subvalues_are_not_cycles() -> None:
    # The walk has no cycle marks of its own: a value used twice must still encode.
    shared = {"a": [1, 2]}
    assert (
        jcs.dumps([shared, shared, {"x": shared}]) == b'[{"a":[1,2]},{"a":[1,2]},{"x":{"a":[1,2]}}]'
    )
