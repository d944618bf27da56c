"""Slot ids and lines: what the contract accepts, and what it says about what it refuses."""

import re

import pytest

from controlplane.core.ids import InvalidIdentifier, new_slot_id, parse_line, parse_slot_id


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ABCD1234", "ABCD1234"),
        ("abcd1234", "ABCD1234"),
        ("aBcD0z9Y", "ABCD0Z9Y"),
        ("00000000", "00000000"),
        ("zzzzzzzz", "ZZZZZZZZ"),
    ],
)
def test_parse_slot_id_accepts_8_alphanumerics_and_upper_cases_them(text, expected):
    assert parse_slot_id(text) == expected


@pytest.mark.parametrize(
    ("text", "length"),
    [
        pytest.param("ABC1234", 7, id="7-chars"),
        pytest.param("ABCD12345", 9, id="9-chars"),
        pytest.param("ABCD-123", 8, id="dash"),
        pytest.param("ABCD 123", 8, id="space"),
        pytest.param("ABCD_123", 8, id="underscore"),
        pytest.param("ÀBCD1234", 8, id="non-ascii-letter"),
        pytest.param("", 0, id="empty"),
        pytest.param(None, 0, id="none"),
    ],
)
def test_parse_slot_id_refuses_anything_else_with_invalid_slot(text, length):
    with pytest.raises(InvalidIdentifier) as caught:
        parse_slot_id(text)
    assert caught.value.code == "invalid_slot"
    assert f"got {length} characters" in caught.value.detail


def test_parse_slot_id_refuses_a_trailing_newline():
    with pytest.raises(InvalidIdentifier):
        parse_slot_id("ABCD1234\n")


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("34666123456", id="spanish-mobile"),
        pytest.param("1234567", id="7-digits"),
        pytest.param("123456789012345", id="15-digits"),
    ],
)
def test_parse_line_returns_a_valid_line_unchanged(text):
    assert parse_line(text) == text


@pytest.mark.parametrize(
    ("text", "says"),
    [
        pytest.param("+34666123456", "'+'", id="plus"),
        pytest.param("34 666 123 456", "digits only", id="spaces"),
        pytest.param("34-666-123-456", "digits only", id="dashes"),
        pytest.param("3466612345a", "digits only", id="letters"),
        pytest.param("034666123456", "not with 0", id="leading-zero"),
        pytest.param("123456", "this one has 6", id="6-digits"),
        pytest.param("1234567890123456", "at most 15 digits", id="16-digits"),
        pytest.param("", "empty", id="empty"),
        pytest.param(None, "empty", id="none"),
    ],
)
def test_parse_line_refuses_with_invalid_line_and_says_what_is_wrong(text, says):
    with pytest.raises(InvalidIdentifier) as caught:
        parse_line(text)
    assert caught.value.code == "invalid_line"
    assert says in caught.value.detail
    assert str(caught.value) == caught.value.detail


def test_parse_line_refuses_a_trailing_newline():
    with pytest.raises(InvalidIdentifier):
        parse_line("34666123456\n")


def test_parse_line_says_digits_only_for_non_ascii_digits():
    with pytest.raises(InvalidIdentifier) as caught:
        parse_line("３４６６６１２３４５６")
    assert "digits only" in caught.value.detail


def test_new_slot_id_is_8_upper_case_letters_or_digits_that_parse_unchanged():
    slot_id = new_slot_id()
    assert re.fullmatch(r"[A-Z0-9]{8}", slot_id)
    assert parse_slot_id(slot_id) == slot_id


def test_new_slot_ids_are_unique():
    generated = [new_slot_id() for _ in range(1000)]
    assert all(re.fullmatch(r"[A-Z0-9]{8}", s) for s in generated)
    assert len(set(generated)) == 1000
