"""A seqgen Vocabulary from the JSON of Keras' character Tokenizer (`tokenizer.to_json()`).

Keras gives ids 1..N to the characters of `word_index` (0 is padding: seqgen's boundary), lower-cases
text when `lower` is set, and drops characters it does not know (seqgen's `skip` policy) unless an
`oov_token` takes their place (seqgen's `replace`). At character level Keras ignores `filters` and `split`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from seqgen.errors import SeqgenError
from seqgen.modelfile import MAX_VOCAB
from seqgen.vocab import Vocabulary

MAX_TOKENIZER_BYTES = 16 * 2**20
OOV_STAND_IN = "\ufffd"
"""The vocabulary's character for a tokenizer's out-of-vocabulary token when that token is not one character."""


def tokenizer_vocabulary(path: Path) -> Vocabulary:
    """The Vocabulary that encodes text to exactly the ids Keras' `texts_to_sequences` gives."""
    config = _tokenizer_config(path)
    lower, oov, num_words = config.get("lower", True), config.get("oov_token"), config.get("num_words")
    if config.get("char_level") is not True:
        raise SeqgenError(f"{path}: the tokenizer splits words (char_level is not true); seqgen models characters, "
                          "so train with Tokenizer(char_level=True)")
    if not isinstance(lower, bool) or (oov is not None and not isinstance(oov, str)) or (
            num_words is not None and (isinstance(num_words, bool) or not isinstance(num_words, int)
                                       or num_words < 0)):
        raise SeqgenError(f"{path}: tokenizer options lower/oov_token/num_words have the wrong types")
    index = _word_index(path, config.get("word_index"))
    if num_words:  # Keras keeps ids below num_words; the rest are unknown
        index = {token: i for token, i in index.items() if i < num_words}
    by_id = sorted(index, key=index.get)
    if longer := [token for token in by_id if len(token) != 1 and token != oov]:
        raise SeqgenError(f"{path}: word_index has entries that are not one character ({longer[0]!r}); "
                          "a character Tokenizer(char_level=True) has only characters")
    if oov is None:
        return _vocabulary(path, by_id, lower, "skip", None)
    if oov not in index:
        raise SeqgenError(f"{path}: oov_token {oov!r} has no id in word_index; the tokenizer JSON is damaged")
    stand_in = oov if len(oov) == 1 else OOV_STAND_IN
    if len(oov) != 1 and stand_in in index:
        raise SeqgenError(f"{path}: the tokenizer knows {OOV_STAND_IN!r} as well as oov_token {oov!r}; "
                          "seqgen cannot give the out-of-vocabulary token a character of its own")
    chars = [stand_in if token == oov else token for token in by_id]
    return _vocabulary(path, chars, lower, "replace", stand_in)


def _vocabulary(path: Path, chars: list[str], lower: bool, unknown: str, replacement: str | None) -> Vocabulary:
    if not chars:
        raise SeqgenError(f"{path}: the tokenizer has no characters (was it fitted?)")
    try:
        return Vocabulary(tuple(chars), lowercase=lower, order="frequency", unknown=unknown, replacement=replacement)
    except SeqgenError as exc:
        raise SeqgenError(f"{path}: {exc}") from None


def _tokenizer_config(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:  # read, not stat: /dev/zero or a pipe has no size and no end
            raw = handle.read(MAX_TOKENIZER_BYTES + 1)
    except OSError as exc:
        raise SeqgenError(f"cannot read tokenizer {path}: {exc.strerror}; check the path") from None
    if len(raw) > MAX_TOKENIZER_BYTES:
        raise SeqgenError(f"{path} has more than {MAX_TOKENIZER_BYTES} bytes, more than a character tokenizer's "
                          "JSON; is it the right file?")
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError):
        raise SeqgenError(f"{path} is not JSON; write it with open(path, 'w').write(tokenizer.to_json())") from None
    if not isinstance(data, dict) or data.get("class_name") != "Tokenizer" or not isinstance(data.get("config"), dict):
        raise SeqgenError(f"{path} is not a Keras Tokenizer's JSON (class_name 'Tokenizer' and a config); "
                          "write it with tokenizer.to_json()")
    return data["config"]


def _word_index(path: Path, value: object) -> dict[str, int]:
    """word_index (to_json stores it as a JSON string inside the JSON), checked to number 1..N once each."""
    try:
        index = json.loads(value) if isinstance(value, str) else value
    except (ValueError, RecursionError):
        index = None
    if not isinstance(index, dict) or not 1 <= len(index) < MAX_VOCAB:
        raise SeqgenError(f"{path}: word_index is not a mapping of 1..{MAX_VOCAB - 1} entries; the JSON is damaged")
    ids = list(index.values())
    if not all(type(i) is int for i in ids) or sorted(ids) != list(range(1, len(index) + 1)):
        raise SeqgenError(f"{path}: word_index does not number its {len(index)} entries 1..{len(index)} once each; "
                          "the JSON is damaged or edited")
    return index
