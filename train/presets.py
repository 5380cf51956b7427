"""The seed notebook's tasks: a Keras SimpleRNN learning to continue the alphabet.

alphabet-seq2seq: sequences "abcde".."fghij", every position predicts the next character.
alphabet-next:    "abc".."hij", the third character predicted from the first two.
Both use the notebook's model (embedding 8, one ReLU RNN layer of 64) and Keras' vocabulary order.
"""

from __future__ import annotations

import hashlib
import string

from seqgen.errors import SeqgenError
from seqgen.vocab import Vocabulary

from .config import PRESETS
from .data import Dataset, pairs

MODEL = {"cell": "rnn_relu", "layers": 1, "hidden": 64, "embedding": 8}
TRAINING = {"batch_size": 8, "lr": 0.01, "warmup_steps": 0, "schedule": "constant", "weight_decay": 0.0,
            "eval_every": 5, "samples": 0}


def _windows(width: int, count: int) -> list[str]:
    return [string.ascii_lowercase[i : i + width] for i in range(count)]


TASKS = {  # name: (window width, windows, what a window's input predicts)
    "alphabet-seq2seq": (5, 6, lambda window: window[1:]),  # abcde .. fghij: every next character
    "alphabet-next": (3, 8, lambda window: window[-1]),  # abc .. hij: the third from the first two
}
"""The presets by name (seqgen.train.config.PRESETS lists the same names for the CLI)."""


def preset_pairs(name: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The notebook's sequences and the (input, target) pairs they make."""
    if name not in TASKS:
        raise SeqgenError(f"unknown preset {name!r}; use one of {', '.join(PRESETS)}")
    width, count, target = TASKS[name]
    sequences = _windows(width, count)
    return sequences, [(s[:-1], target(s)) for s in sequences]


def preset_dataset(name: str) -> Dataset:
    """The preset's examples; as in the notebook, it is evaluated on its training set."""
    sequences, examples = preset_pairs(name)
    vocab = Vocabulary.fit(sequences, order="frequency")
    data = pairs(vocab, examples)
    sha = hashlib.sha256("\n".join(sequences).encode()).hexdigest()
    return Dataset(vocab, data, data, False, data.inputs.shape[1], f"preset:{name}", sha)


def preset_options(name: str) -> dict[str, object]:
    """TrainConfig options the preset sets (explicit options given by the user take precedence)."""
    preset_pairs(name)  # validates the name
    return {"preset": name, **MODEL, **TRAINING, "epochs": 300}
