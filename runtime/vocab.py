"""Character vocabulary: Unicode code points to token ids and back, with id 0 as the boundary token."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

from . import checks
from .choices import ORDERS, UNKNOWN_POLICIES
from .errors import SeqgenError

BOUNDARY = 0
"""Token id of the boundary: start of a text or item, end of a line item, and padding."""

IGNORE = -1
"""Target id that scoring and the training loss skip (padding, positions a task does not ask about)."""


@dataclass(frozen=True)
class Vocabulary:
    """Characters 1..N (index 0 is the boundary) and how to treat text outside them.

    `unknown` is the policy for characters not in the vocabulary: "error" (refuse),
    "skip" (drop them, as Keras does) or "replace" (map them to `replacement`).
    """

    chars: tuple[str, ...]
    lowercase: bool = False
    order: str = "frequency"
    unknown: str = "error"
    replacement: str | None = None
    _ids: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if any(not isinstance(c, str) or len(c) != 1 for c in self.chars):
            raise SeqgenError("vocabulary entries must be single characters; rebuild the vocabulary")
        if not is_text("".join(self.chars)):
            raise SeqgenError("vocabulary holds a lone surrogate (U+D800..U+DFFF), which no text can carry; "
                              "rebuild the vocabulary")
        if len(set(self.chars)) != len(self.chars):
            raise SeqgenError("vocabulary has duplicate characters; rebuild the vocabulary")
        if self.order not in ORDERS:
            raise SeqgenError(f"unknown vocabulary order {self.order!r}; use one of {', '.join(ORDERS)}")
        if self.unknown not in UNKNOWN_POLICIES:
            raise SeqgenError(
                f"unknown policy {self.unknown!r} for out-of-vocabulary characters; "
                f"use one of {', '.join(UNKNOWN_POLICIES)}"
            )
        if self.unknown == "replace" and (self.replacement is None or self.replacement not in self.chars):
            raise SeqgenError(
                "policy 'replace' needs a replacement character that is in the vocabulary; "
                "pass one, e.g. replacement=' '"
            )
        object.__setattr__(self, "_ids", {c: i + 1 for i, c in enumerate(self.chars)})

    @classmethod
    def fit(cls, texts: Iterable[str], *, order: str = "frequency", lowercase: bool = False) -> Vocabulary:
        """Build a vocabulary from texts.

        "frequency" sorts by descending count, ties by first appearance (Keras
        `Tokenizer(char_level=True)`); "codepoint" sorts by code point.
        """
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(text.lower() if lowercase else text)
        if not counts:
            raise SeqgenError("cannot build a vocabulary from empty text; give at least one character")
        if order == "frequency":
            chars = sorted(counts, key=lambda c: -counts[c])  # stable: ties keep first appearance
        elif order == "codepoint":
            chars = sorted(counts)
        else:
            raise SeqgenError(f"unknown vocabulary order {order!r}; use one of {', '.join(ORDERS)}")
        return cls(tuple(chars), lowercase=lowercase, order=order)

    @property
    def size(self) -> int:
        """Number of token ids, the boundary included."""
        return len(self.chars) + 1

    def with_policy(self, unknown: str, replacement: str | None = None) -> Vocabulary:
        """The same characters with another policy for out-of-vocabulary text."""
        return Vocabulary(self.chars, self.lowercase, self.order, unknown, replacement)

    def encode(self, text: str) -> np.ndarray:
        """Token ids (int64) of `text`, out-of-vocabulary characters handled by the policy."""
        text = checks.text(text)  # every text the API takes comes through here
        if self.lowercase:
            text = text.lower()
        ids = self._ids
        try:
            return np.fromiter((ids[c] for c in text), dtype=np.int64, count=len(text))
        except KeyError:
            pass
        unknown = sorted({c for c in text if c not in ids})
        if self.unknown == "skip":
            return np.fromiter((ids[c] for c in text if c in ids), dtype=np.int64)
        if self.unknown == "replace":
            fill = ids[self.replacement]  # type: ignore[index]
            return np.fromiter((ids.get(c, fill) for c in text), dtype=np.int64, count=len(text))
        shown = ", ".join(repr(c) for c in unknown[:10]) + (" ..." if len(unknown) > 10 else "")
        raise SeqgenError(
            f"text has {len(unknown)} character(s) not in the model's vocabulary: {shown}; "
            "remove them, or choose unknown='skip' or unknown='replace' (CLI: --unknown)"
        )

    def decode(self, ids: Iterable[int]) -> str:
        """Text of token ids; boundary tokens are dropped."""
        chars = self.chars
        return "".join(chars[i - 1] for i in ids if i != BOUNDARY)

    def char(self, token: int) -> str:
        """The character of one token id; the boundary is the empty string."""
        return "" if token == BOUNDARY else self.chars[token - 1]

    def to_json(self) -> str:
        """JSON for the model file's metadata; non-ASCII characters stay readable."""
        return json.dumps(
            {
                "chars": "".join(self.chars),
                "boundary": BOUNDARY,
                "lowercase": self.lowercase,
                "order": self.order,
                "unknown": self.unknown,
                "replacement": self.replacement,
            },
            ensure_ascii=False,
        )

    @classmethod
    def from_json(cls, text: str) -> Vocabulary:
        """Inverse of `to_json`, each field strictly of its type ("false" is not a bool); raises
        SeqgenError on anything malformed."""
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            raise SeqgenError("vocabulary JSON is malformed; re-export the model") from None
        fields = {"chars": (str,), "boundary": (int,), "lowercase": (bool,), "order": (str,), "unknown": (str,),
                  "replacement": (str, type(None))}
        if not isinstance(data, dict) or "chars" not in data or set(data) - set(fields):
            raise SeqgenError("vocabulary JSON is malformed (it needs chars and only the documented keys); "
                              "re-export the model")
        for key, value in data.items():
            if not isinstance(value, fields[key]) or (isinstance(value, bool) and bool not in fields[key]):
                raise SeqgenError(f"vocabulary {key} is {value!r}, not of its type ({fields[key][0].__name__}); "
                                  "re-export the model")
        if data.get("boundary", BOUNDARY) != BOUNDARY:
            raise SeqgenError(f"vocabulary boundary must be {BOUNDARY}; re-export the model")
        vocab = cls(tuple(data["chars"]), lowercase=data.get("lowercase", False), order=data.get("order", "frequency"),
                    unknown=data.get("unknown", "error"), replacement=data.get("replacement"))
        if vocab.lowercase and any(char.lower() != char for char in vocab.chars):
            raise SeqgenError("vocabulary says lowercase=true but holds upper-case characters, which lower-cased "
                              "text never has; re-export the model")
        return vocab


def is_text(text: str) -> bool:
    """Whether `text` can be written as UTF-8: it holds no lone surrogate (which json's \\ud800 escapes
    and surrogateescape decoding can put in a str, and no output can print)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def frame_items(items: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Line items as model inputs [boundary, chars] and targets [chars, boundary], right-padded
    ([items, longest + 1]; padding: the boundary in inputs, IGNORE in targets)."""
    width = max(len(ids) for ids in items) + 1
    targets = np.full((len(items), width), IGNORE, np.int64)
    for row, ids in enumerate(items):
        targets[row, : len(ids)] = ids
        targets[row, len(ids)] = BOUNDARY
    inputs = np.full_like(targets, BOUNDARY)
    inputs[:, 1:] = np.where(targets[:, :-1] == IGNORE, BOUNDARY, targets[:, :-1])
    return inputs, targets
