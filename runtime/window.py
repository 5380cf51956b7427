"""Keras' windowed answer, reproduced exactly for a model made by `seqgen-train import-keras`.

Keras predicts from a fixed-length window: `pad_sequences(tokenizer.texts_to_sequences(texts), maxlen=L)`
keeps the last L ids of each text and pre-pads shorter ones with id 0, then runs the RNN from a zero
state over all L positions, padding included. A seqgen Session instead starts every text with ONE
boundary token (id 0) and carries its state through the whole text, so the two agree exactly only
when the window holds exactly one padding id, i.e. the text has L - 1 characters after encoding
(docs/keras.md works out the other cases). `keras_predict` feeds Keras' window instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from .checks import integer
from .errors import SeqgenError
from .modelfile import MAX_WINDOW
from .vocab import BOUNDARY, Vocabulary

if TYPE_CHECKING:
    from .model import Model

WINDOW_BATCH = 256
"""Windows run together in one graph call, at most."""
WINDOW_CELLS = 2**22
"""Most logits (rows x time x vocabulary) one graph call returns (16 MB), whatever the window length."""


def keras_predict(model: Model, texts: Sequence[str], length: int | None = None) -> np.ndarray:
    """Next-token probabilities ([len(texts), vocab_size], float32, id 0 included) exactly as Keras'
    `model.predict(pad_sequences(tokenizer.texts_to_sequences(texts), maxlen=length))` gives them
    (for per-position models: its last position). `length` defaults to the imported model's input length."""
    if isinstance(texts, str) or not isinstance(texts, Iterable):
        raise SeqgenError("keras_predict takes a list of texts; for one text pass [text]")
    texts = list(texts)
    if not all(isinstance(text, str) for text in texts):
        raise SeqgenError("keras_predict takes texts (str); decode bytes first")
    length = window_length(model, length)
    rows = max(1, min(WINDOW_BATCH, WINDOW_CELLS // model.vocab.size, WINDOW_CELLS // length))  # ids, logits
    parts = [_last_logits(model, keras_windows(model.vocab, texts[start : start + rows], length))
             for start in range(0, len(texts), rows)]
    logits = np.concatenate(parts) if parts else np.empty((0, model.vocab.size), np.float32)
    if not np.isfinite(logits).all():
        raise SeqgenError("the model's outputs overflowed to inf/NaN on this window (a ReLU state grew without "
                          "bound); Keras gives NaN here too")
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)


def keras_windows(vocab: Vocabulary, texts: Sequence[str], length: int) -> np.ndarray:
    """Token ids [len(texts), length] as `pad_sequences(tokenizer.texts_to_sequences(texts), maxlen=length)`:
    the last `length` ids of each text, pre-padded with id 0."""
    windows = np.full((len(texts), length), BOUNDARY, np.int64)
    for row, text in enumerate(texts):
        ids = vocab.encode(text)[-length:]
        windows[row, length - len(ids) :] = ids
    return windows


def window_length(model: Model, length: int | None = None) -> int:
    """`length` if given, else the Keras input length recorded in the model file."""
    if length is not None:
        return integer("length", length, 1, MAX_WINDOW)
    recorded = model.keras_input_length
    if recorded is None:
        raise SeqgenError(f"{model.path} records no Keras input length (not imported from a fixed-length Keras "
                          "model); pass length=, the maxlen given to pad_sequences")
    return recorded


def _last_logits(model: Model, windows: np.ndarray) -> np.ndarray:
    """The last position's logits of each window, from a zero state; a long window runs in pieces of time that
    carry the state, so a call's logits ([rows, time, vocab]) stay within WINDOW_CELLS."""
    state = model.graph.zero_state(len(windows))
    time = max(1, WINDOW_CELLS // (len(windows) * model.vocab.size))
    for start in range(0, windows.shape[1], time):
        logits, state = model.graph.run(np.ascontiguousarray(windows[:, start : start + time]), state)
    return logits[:, -1]
