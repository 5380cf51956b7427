"""Training data: corpora read and split, turned into examples of (input ids, target ids).

Three shapes of data, one example format (targets of -1 are ignored by the loss):
- running text: chunks of `seq_len` characters, the boundary token first (nanoGPT's split: the
  last `val_fraction` of the text is held out);
- line items: each non-empty line framed by boundary tokens (makemore's split: a seeded random
  min(1000, 10%) of the items is held out), at most MAX_ITEM_CHARS characters each; the training
  items are kept end to end and each batch is padded to its own longest item, so memory follows
  the characters, and no batch is wider than MAX_ITEM_CHARS + 1;
- pairs: (input text, target text), each a next-character task.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from seqgen.errors import SeqgenError
from seqgen.vocab import BOUNDARY, IGNORE, Vocabulary, frame_items

if TYPE_CHECKING:
    from .config import TrainConfig


def read_corpus(paths: Sequence[str | Path], *, min_chars: int = 2) -> tuple[str, str]:
    """The concatenated UTF-8 text of `paths` and its sha256; clear errors for bad files."""
    if not paths:
        raise SeqgenError("no corpus given; pass one or more UTF-8 text files")
    texts, digest = [], hashlib.sha256()
    for path in map(Path, paths):
        if not path.is_file():
            raise SeqgenError(f"corpus {path} does not exist or is not a file; check the path")
        raw = path.read_bytes()
        if not raw:
            raise SeqgenError(f"corpus {path} is empty; give a UTF-8 text file with some text in it")
        try:
            texts.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise SeqgenError(f"corpus {path} is not UTF-8 (bad byte at offset {exc.start}); "
                              "convert it, e.g. iconv -t UTF-8") from None
        digest.update(raw)
    text = "".join(t if t.endswith("\n") or i == len(texts) - 1 else t + "\n" for i, t in enumerate(texts))
    if len(text) < min_chars:
        raise SeqgenError(f"corpus has {len(text)} characters, fewer than the {min_chars} needed; "
                          "give more text or a shorter --seq-len")
    return text, digest.hexdigest()


@dataclass(frozen=True)
class Examples:
    """Padded examples: inputs and targets [n, time] int64 (padding: the boundary in inputs, IGNORE in targets)."""

    inputs: np.ndarray
    targets: np.ndarray

    def __len__(self) -> int:
        return len(self.inputs)

    def rows(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) of these examples, without the columns that are padding in all of them."""
        return _trim(self.inputs[indices], self.targets[indices])


MAX_ITEM_CHARS = 1000
"""The longest line item, in characters: a batch of line items is padded to its longest, so one
20,000-character line would make every batch holding it 20,000 wide. Longer text is running text."""


@dataclass(frozen=True)
class Items:
    """Line items stored end to end (memory: their total characters), framed and padded per batch."""

    ids: np.ndarray  # every item's ids, one after another
    starts: np.ndarray  # item i is ids[starts[i] : starts[i + 1]]

    @classmethod
    def of(cls, items: Sequence[np.ndarray]) -> Items:
        starts = np.zeros(len(items) + 1, np.int64)
        np.cumsum([len(ids) for ids in items], out=starts[1:])
        return cls(np.concatenate(items) if items else np.zeros(0, np.int64), starts)

    def __len__(self) -> int:
        return len(self.starts) - 1

    def rows(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(inputs, targets) of these items, framed as line_items frames them, as wide as the longest + 1."""
        return frame_items([self.ids[self.starts[i] : self.starts[i + 1]] for i in indices])


IN_MEMORY = "<texts>"
"""The corpus name of a run trained on texts in memory (fit_texts): there is no file to read them again from."""


def texts_sha256(texts: Sequence[str] | Sequence[tuple[str, str]]) -> str:
    """The sha256 of texts in memory, in order, strings told from pairs: what a resumed fit_texts run checks
    it is given again (the vocabulary alone passes other items of the same characters)."""
    return hashlib.sha256(json.dumps([list(t) if isinstance(t, tuple) else t for t in texts]).encode()).hexdigest()


Batchable = Examples | Items
"""What `batches` draws from: padded examples, or line items padded per batch."""


def running_text(ids: np.ndarray, seq_len: int, offset: int = 0) -> Examples:
    """Consecutive chunks of `seq_len` targets from `offset`; each input starts with the boundary."""
    count = (len(ids) - offset) // seq_len
    if count < 1:
        raise SeqgenError(f"text of {len(ids)} characters is shorter than one sequence of {seq_len}; "
                          "give more text or a smaller --seq-len")
    targets = ids[offset : offset + count * seq_len].reshape(count, seq_len)
    inputs = np.concatenate([np.full((count, 1), BOUNDARY, np.int64), targets[:, :-1]], axis=1)
    return Examples(inputs, targets)


def line_items(items: Sequence[np.ndarray]) -> Examples:
    """Each item as [boundary, chars] -> [chars, boundary], right-padded (the runtime's framing)."""
    return Examples(*frame_items(items))


def pairs(vocab: Vocabulary, examples: Sequence[tuple[str, str]]) -> Examples:
    """(input text, target text) pairs: the target's characters are the answers for the last input
    positions (a target as long as the input predicts every next character; one character, the last)."""
    rows = []
    for source, target in examples:
        x, y = vocab.encode(source), vocab.encode(target)
        if not 1 <= len(y) <= len(x):
            raise SeqgenError(f"pair {source!r} -> {target!r}: the target must have 1..len(input) characters")
        rows.append((x, y))
    width = max(len(x) for x, _ in rows) + 1
    inputs = np.full((len(rows), width), BOUNDARY, np.int64)
    targets = np.full((len(rows), width), IGNORE, np.int64)
    for row, (x, y) in enumerate(rows):
        inputs[row, 1 : len(x) + 1] = x
        targets[row, len(x) + 1 - len(y) : len(x) + 1] = y  # the output after input position i sits at i
    return Examples(inputs, targets)


@dataclass(frozen=True)
class Dataset:
    """Train and validation examples of one corpus, with what produced them."""

    vocab: Vocabulary
    train: Examples | Items | np.ndarray  # running text keeps the raw ids: chunks are cut anew each epoch
    val: Examples
    line_items: bool
    seq_len: int
    name: str = IN_MEMORY
    sha256: str = ""

    def epoch(self, epoch: int, seed: int) -> Batchable:
        """This epoch's training examples (running text: chunks at an epoch-dependent offset)."""
        if isinstance(self.train, (Examples, Items)):
            return self.train
        offset = int(np.random.default_rng([seed, epoch, 1]).integers(self.seq_len)) \
            if len(self.train) > 2 * self.seq_len else 0
        return running_text(self.train, self.seq_len, offset)


def text_split(length: int, val_fraction: float) -> int:
    """Where running text splits: everything from here on is held out (nanoGPT's tail)."""
    return int(length * (1 - val_fraction))


def item_split(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) indices of `count` items: a seeded random min(1000, 10%) held out
    (makemore's convention; at least one)."""
    order = np.random.default_rng(seed).permutation(count)
    held = max(1, min(1000, int(count * 0.1)))
    return order[held:], order[:held]


def text_dataset(text: str, *, seq_len: int, val_fraction: float = 0.1, vocab: Vocabulary | None = None,
                 name: str = IN_MEMORY, sha256: str = "") -> Dataset:
    """Running text, the last `val_fraction` held out."""
    if not 0 < val_fraction < 1:
        raise SeqgenError(f"val_fraction must be in (0, 1), got {val_fraction}")
    vocab = vocab or Vocabulary.fit([text])
    ids = vocab.encode(text)
    split = text_split(len(ids), val_fraction)
    if split < seq_len + 1 or len(ids) - split < seq_len:
        raise SeqgenError(f"text of {len(ids)} characters is too short for --seq-len {seq_len} with a "
                          f"{val_fraction:.0%} validation split; give more text or a smaller --seq-len")
    return Dataset(vocab, ids[:split], running_text(ids[split:], seq_len), False, seq_len, name, sha256)


def item_dataset(items: Sequence[str], *, seed: int, vocab: Vocabulary | None = None,
                 name: str = IN_MEMORY, sha256: str = "") -> Dataset:
    """Line items; a seeded random min(1000, 10%) held out (at least one, when there are two or more).

    An item longer than MAX_ITEM_CHARS is refused, naming its position (its line, for a corpus file).
    """
    for number, item in enumerate(items, 1):
        if len(item) > MAX_ITEM_CHARS:
            raise SeqgenError(f"line item {number} has {len(item):,} characters, more than the {MAX_ITEM_CHARS:,} a "
                              "line item may have (a batch is as wide as its longest item); train on running text "
                              "(without --lines) or split the line")
    items = [item for item in items if item]
    if len(items) < 2:
        raise SeqgenError(f"need at least 2 non-empty items to train and validate, got {len(items)}")
    vocab = vocab or Vocabulary.fit(items)
    training, held_out = item_split(len(items), seed)
    encoded = [vocab.encode(item) for item in items]
    train = Items.of([encoded[i] for i in training])
    val = line_items([encoded[i] for i in held_out])  # at most 1,000 items, so padded once to their longest
    return Dataset(vocab, train, val, True, MAX_ITEM_CHARS + 1, name, sha256)


def batches(examples: Batchable, batch_size: int, *, seed: int, epoch: int, rank: int = 0, world: int = 1,
            start: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """This rank's shuffled batches of one epoch, from batch number `start` (for exact resume).

    The permutation depends only on (seed, epoch), so every rank agrees and a resumed run sees
    the same batches as an uninterrupted one. Ragged ends are dropped so ranks stay in step; a
    batch larger than the data shrinks to all of it.
    """
    order = np.random.default_rng([seed, epoch]).permutation(len(examples))
    share = order[rank::world][: len(order) // world]
    batch_size = max(1, min(batch_size, len(share)))
    for first in range(start * batch_size, len(share) - batch_size + 1, batch_size):
        rows = np.sort(share[first : first + batch_size])
        yield examples.rows(rows)


GROUP_FLOOR = 64 * 128
"""Positions a training batch may pad to before it is split (the default --batch-size x --seq-len)."""


def length_groups(inputs: np.ndarray, targets: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """A batch as one piece, or, where padding to its longest row would more than double the positions it
    needs (one long item among short ones) and exceed GROUP_FLOOR, as groups of rows of similar length,
    each padded to its own longest and holding at most max(GROUP_FLOOR, 2 x the positions needed): so a
    step's memory follows the batch's characters, not its rows times its longest row."""
    used = (targets != IGNORE)[:, ::-1].argmax(axis=1)
    lengths = targets.shape[1] - used  # up to the row's last target: the positions the model must compute
    budget = max(GROUP_FLOOR, 2 * int(lengths.sum()))
    if targets.size <= budget:
        return [(inputs, targets)]
    groups: list[list[int]] = [[]]
    for row in np.argsort(lengths, kind="stable"):
        if groups[-1] and (len(groups[-1]) + 1) * int(lengths[row]) > budget:
            groups.append([])
        groups[-1].append(int(row))
    return [_trim(inputs[rows], targets[rows]) for rows in groups]


def steps_per_epoch(examples: Batchable, batch_size: int, world: int = 1) -> int:
    share = len(examples) // world
    return share // max(1, min(batch_size, share))


def _trim(inputs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop trailing columns that are padding in every row (line items of varied length)."""
    used = np.flatnonzero((targets != IGNORE).any(axis=0))
    width = int(used[-1]) + 1 if used.size else 1
    return inputs[:, :width], targets[:, :width]


def build_dataset(config: TrainConfig) -> Dataset:
    """The dataset a config names: a preset, line items, or running text."""
    if config.preset:
        from .presets import preset_dataset

        return preset_dataset(config.preset)
    text, sha = read_corpus(config.corpus)
    name = ", ".join(Path(p).name for p in config.corpus)
    text_for_vocab = text.lower() if config.lowercase else text
    if config.lines:
        items = text_for_vocab.splitlines()
        vocab = Vocabulary.fit([i for i in items if i], order=config.vocab_order, lowercase=config.lowercase)
        return item_dataset(items, seed=config.seed, vocab=vocab, name=name, sha256=sha)
    vocab = Vocabulary.fit([text_for_vocab], order=config.vocab_order, lowercase=config.lowercase)
    return text_dataset(text_for_vocab, seq_len=config.seq_len, val_fraction=config.val_fraction,
                        vocab=vocab, name=name, sha256=sha)
