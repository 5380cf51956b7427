"""The alphabet tasks: learn to continue the alphabet, with a small ReLU RNN.

alphabet-seq2seq: sequences "abcde".."fghij", every position predicts the next character.
alphabet-next:    "abc".."hij", the third character predicted from the first two.
Both use the same model (embedding 8, one ReLU RNN layer of 64) and Keras' vocabulary order. This module
imports neither numpy nor torch: the CLI lists the presets from it.
"""

from __future__ import annotations

import hashlib
import string
from typing import TYPE_CHECKING

from seqgen.errors import SeqgenError

if TYPE_CHECKING:
    from .data import Dataset

MODEL = {"cell": "rnn_relu", "layers": 1, "hidden": 64, "embedding": 8}
TRAINING = {"batch_size": 8, "lr": 0.01, "warmup_steps": 0, "schedule": "constant", "weight_decay": 0.0,
            "eval_every": 5, "samples": 0}


def _windows(width: int, count: int) -> list[str]:
    return [string.ascii_lowercase[i : i + width] for i in range(count)]


TASKS = {  # name: (window width, windows, what a window's input predicts, what the task is)
    "alphabet-seq2seq": (5, 6, lambda window: window[1:], "abcde..fghij, every next letter"),
    "alphabet-next": (3, 8, lambda window: window[-1], "abc..hij, the third letter from the first two"),
}
"""The presets by name: the one list of them."""
PRESETS = tuple(TASKS)


def describe() -> str:
    """One line saying what each preset is, for the CLI's help."""
    return "; ".join(f"{name}: {task[3]}" for name, task in TASKS.items())


def preset_pairs(name: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The task's sequences and the (input, target) pairs they make."""
    if name not in TASKS:
        raise SeqgenError(f"unknown preset {name!r}; use one of {', '.join(PRESETS)}")
    width, count, target, _ = TASKS[name]
    sequences = _windows(width, count)
    return sequences, [(s[:-1], target(s)) for s in sequences]


def preset_dataset(name: str) -> Dataset:
    """The preset's examples; it is evaluated on its training set (the task has nothing else to hold out)."""
    from seqgen.vocab import Vocabulary

    from .data import Dataset, pairs

    sequences, examples = preset_pairs(name)
    vocab = Vocabulary.fit(sequences, order="frequency")
    data = pairs(vocab, examples)
    sha = hashlib.sha256("\n".join(sequences).encode()).hexdigest()
    return Dataset(vocab, data, data, False, data.inputs.shape[1], f"preset:{name}", sha)


def preset_options(name: str) -> dict[str, object]:
    """TrainConfig options the preset sets (explicit options given by the user take precedence)."""
    preset_pairs(name)  # validates the name
    return {"preset": name, **MODEL, **TRAINING, "epochs": 300}
