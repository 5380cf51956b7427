"""Vocabulary: Keras order, code points, policies for unknown characters, JSON round trip."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seqgen import BOUNDARY, SeqgenError, Vocabulary

NOTEBOOK = ["abc", "bcd", "cde", "def", "efg", "fgh", "ghi", "hij"]


def test_frequency_order_matches_keras_char_tokenizer() -> None:
    vocab = Vocabulary.fit(NOTEBOOK)
    ids = {c: i + 1 for i, c in enumerate(vocab.chars)}
    assert ids == {"c": 1, "d": 2, "e": 3, "f": 4, "g": 5, "h": 6, "b": 7, "i": 8, "a": 9, "j": 10}
    assert vocab.size == 11  # the boundary token is id 0


def test_codepoint_order_and_lowercase() -> None:
    vocab = Vocabulary.fit(["Hello"], order="codepoint", lowercase=True)
    assert vocab.chars == ("e", "h", "l", "o")
    assert vocab.decode(vocab.encode("HELLO")) == "hello"


def test_code_points_are_never_split() -> None:
    text = "naïve café 日本 🎉"
    vocab = Vocabulary.fit([text])
    assert vocab.decode(vocab.encode(text)) == text
    assert len(vocab.encode(text)) == len(text)
    assert "日本" in vocab.to_json()  # non-ASCII kept readable


def test_unknown_policies() -> None:
    vocab = Vocabulary.fit(["abc "])
    with pytest.raises(SeqgenError, match=r"'x'.*unknown='skip'"):
        vocab.encode("axbz")
    assert vocab.with_policy("skip").decode(vocab.with_policy("skip").encode("axbz")) == "ab"
    replacing = vocab.with_policy("replace", " ")
    assert replacing.decode(replacing.encode("axb")) == "a b"
    with pytest.raises(SeqgenError, match="replacement"):
        vocab.with_policy("replace", "?")


def test_boundary_decodes_to_nothing() -> None:
    vocab = Vocabulary.fit(["ab"])
    assert vocab.decode([BOUNDARY, 1, BOUNDARY, 2]) == vocab.chars[0] + vocab.chars[1]
    assert vocab.char(BOUNDARY) == ""


def test_malformed_json_is_one_clear_error() -> None:
    for bad in ("", "{", '{"chars": 5}', '{"chars": "aa"}', "[]", '{"chars": "ab", "order": "weird"}'):
        with pytest.raises(SeqgenError):
            Vocabulary.from_json(bad)


def test_empty_corpus_refused() -> None:
    with pytest.raises(SeqgenError, match="empty"):
        Vocabulary.fit([""])


@given(st.text(min_size=1))
def test_round_trip_any_text_over_its_characters(text: str) -> None:
    vocab = Vocabulary.fit([text], order="codepoint")
    assert vocab.decode(vocab.encode(text)) == text
    assert Vocabulary.from_json(vocab.to_json()) == vocab
