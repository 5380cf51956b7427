"""Training data: running-text chunks and nanoGPT's split, line items and makemore's split, pairs,
Keras' vocabulary order, batches, and clear errors for bad corpora (API and `seqgen-train fit`)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from seqgen import BOUNDARY, Vocabulary
from seqgen.errors import SeqgenError
from seqgen.train import TrainConfig
from seqgen.train.cli import main as train_cli
from seqgen.train.data import (
    IGNORE,
    Examples,
    Items,
    batches,
    build_dataset,
    item_dataset,
    line_items,
    pairs,
    read_corpus,
    running_text,
    steps_per_epoch,
    text_dataset,
)
from seqgen.train.heldout import held_out_text

torch.set_num_threads(1)

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def words(count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list(LETTERS), size=int(rng.integers(3, 9)))) for _ in range(count)]


def all_rows(examples: Items) -> np.ndarray:
    """The targets of every training item, framed and padded as one batch of all of them."""
    return examples.rows(np.arange(len(examples)))[1]


# -- running text ---------------------------------------------------------------------------------


def test_running_text_cuts_consecutive_chunks_each_input_starting_with_the_boundary() -> None:
    ids = np.arange(1, 12, dtype=np.int64)  # 11 ids: three chunks of 3, two ids left over
    chunks = running_text(ids, 3)
    assert chunks.targets.tolist() == [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
    assert chunks.inputs.tolist() == [[0, 1, 2], [0, 4, 5], [0, 7, 8]]
    shifted = running_text(ids, 3, offset=2)
    assert shifted.targets.tolist() == [[3, 4, 5], [6, 7, 8], [9, 10, 11]]
    assert shifted.inputs[:, 0].tolist() == [BOUNDARY] * 3
    with pytest.raises(SeqgenError, match="shorter than one sequence"):
        running_text(ids[:2], 3)


def test_text_dataset_holds_out_the_last_val_fraction_as_nanogpt_does() -> None:
    text = "".join(words(60, seed=1))
    vocab = Vocabulary.fit([text])
    data = text_dataset(text, seq_len=7, val_fraction=0.2, vocab=vocab)
    split = int(len(text) * 0.8)
    assert isinstance(data.train, np.ndarray)
    assert vocab.decode(data.train) == text[:split]
    held = text[split:]
    val_text = vocab.decode(data.val.targets.reshape(-1))
    assert val_text == held[: len(held) // 7 * 7]  # whole chunks of the tail, in order
    assert (data.val.inputs[:, 0] == BOUNDARY).all()
    assert (data.val.inputs[:, 1:] == data.val.targets[:, :-1]).all()
    # each epoch's chunks are contiguous slices of the training text, the offset depending on the epoch
    starts = set()
    for epoch in range(4):
        chunks = data.epoch(epoch, seed=3)
        flat = vocab.decode(chunks.targets.reshape(-1))
        start = text.index(flat)
        assert start < 7 and len(flat) == (split - start) // 7 * 7
        starts.add(start)
        assert vocab.decode(data.epoch(epoch, seed=3).targets.reshape(-1)) == flat  # deterministic
    assert len(starts) > 1


def test_running_text_split_matches_the_held_out_text_that_eval_scores() -> None:
    text = "".join(words(80, seed=2))
    data = text_dataset(text, seq_len=5, val_fraction=0.1)
    tail = held_out_text(text, line_items=False, val_fraction=0.1)
    assert len(text) - len(data.train) == len(tail)
    assert data.vocab.decode(data.train) + tail == text


# -- line items -----------------------------------------------------------------------------------


def test_line_items_are_framed_by_the_boundary_token_and_padded_with_ignore() -> None:
    framed = line_items([np.array([3, 4, 5]), np.array([6])])
    assert framed.inputs.tolist() == [[0, 3, 4, 5], [0, 6, 0, 0]]
    assert framed.targets.tolist() == [[3, 4, 5, 0], [6, 0, IGNORE, IGNORE]]


@pytest.mark.parametrize(("count", "held"), [(2, 1), (9, 1), (57, 5), (12_345, 1000)])
def test_item_split_holds_out_a_seeded_random_min_1000_or_10_percent(count: int, held: int) -> None:
    items = [f"{w}{i}" for i, w in enumerate(words(count, seed=4))]  # all distinct
    vocab = Vocabulary.fit(items)
    data = item_dataset(items, seed=7, vocab=vocab)
    assert data.line_items
    decode = [vocab.decode(row[row > 0]) for row in data.val.targets]
    train = [vocab.decode(row[row > 0]) for row in all_rows(data.train)]
    assert len(decode) == held and len(train) == count - held
    assert sorted(decode + train) == sorted(items)
    # the same items that `seqgen-train eval` scores as held out
    assert decode == held_out_text("\n".join(items), line_items=True, seed=7).split("\n")
    if count > 20:  # seeded: same seed, same split; another seed, another one; not simply the last items
        again = item_dataset(items, seed=7, vocab=vocab)
        assert (again.val.targets == data.val.targets).all()
        other = item_dataset(items, seed=8, vocab=vocab)
        assert {vocab.decode(r[r > 0]) for r in other.val.targets} != set(decode)
        assert set(decode) != set(items[-held:])


def test_lines_mode_reads_each_non_empty_line_as_one_item(tmp_path: Path) -> None:
    corpus = tmp_path / "names.txt"
    names = words(30, seed=5)
    corpus.write_text("\n\n".join(names) + "\n", encoding="utf-8")
    data = build_dataset(TrainConfig(corpus=[str(corpus)], lines=True, seed=3))
    rows = [*all_rows(data.train), *data.val.targets]
    assert sorted(data.vocab.decode(r[r > 0]) for r in rows) == sorted(names)
    for row in rows:  # every item ends with exactly one boundary, then padding
        end = int(np.flatnonzero(row == BOUNDARY)[0])
        assert (row[end + 1 :] == IGNORE).all()


# -- pairs and vocabulary ---------------------------------------------------------------------------


def test_pairs_put_the_target_of_input_position_i_at_output_position_i() -> None:
    vocab = Vocabulary.fit(["abcdef"], order="codepoint")  # a=1 .. f=6
    data = pairs(vocab, [("abcd", "bcde"), ("ab", "c"), ("cde", "f")])
    assert data.inputs.tolist() == [[0, 1, 2, 3, 4], [0, 1, 2, 0, 0], [0, 3, 4, 5, 0]]
    assert data.targets.tolist() == [[-1, 2, 3, 4, 5], [-1, -1, 3, -1, -1], [-1, -1, -1, 6, -1]]
    for x, y in zip(data.inputs, data.targets):  # input 'a' (1) is answered 'b' (2) at the same position, etc.
        answered = y != IGNORE
        assert (y[answered] == x[answered] + 1).all()
    with pytest.raises(SeqgenError, match="target must have"):
        pairs(vocab, [("ab", "bcd")])


def test_frequency_vocabulary_follows_keras_order() -> None:
    vocab = Vocabulary.fit(["abc", "bcd", "cde", "def", "efg", "fgh", "ghi", "hij"], order="frequency")
    ids = {c: i + 1 for i, c in enumerate(vocab.chars)}
    assert ids == {"c": 1, "d": 2, "e": 3, "f": 4, "g": 5, "h": 6, "b": 7, "i": 8, "a": 9, "j": 10}


# -- batches --------------------------------------------------------------------------------------


def numbered(count: int) -> Examples:
    """Examples whose rows say their own index (two columns, no padding)."""
    rows = np.repeat(np.arange(count, dtype=np.int64)[:, None], 2, axis=1)
    return Examples(rows, rows.copy())


def rows_of(batch_list: list[tuple[np.ndarray, np.ndarray]]) -> list[list[int]]:
    return [x[:, 0].tolist() for x, _ in batch_list]


def test_batches_are_deterministic_per_seed_and_epoch_and_resume_from_a_batch_number() -> None:
    data = numbered(23)
    first = rows_of(list(batches(data, 5, seed=1, epoch=0)))
    assert first == rows_of(list(batches(data, 5, seed=1, epoch=0)))
    assert len(first) == 4 == steps_per_epoch(data, 5)  # ragged end dropped
    assert len({r for b in first for r in b}) == 20
    assert first != rows_of(list(batches(data, 5, seed=1, epoch=1)))
    assert first != rows_of(list(batches(data, 5, seed=2, epoch=0)))
    assert rows_of(list(batches(data, 5, seed=1, epoch=0, start=2))) == first[2:]
    assert rows_of(list(batches(numbered(3), 8, seed=1, epoch=0))) == [[0, 1, 2]]  # shrinks to all the data


def test_batches_partition_the_epoch_between_ranks() -> None:
    data, world = numbered(50), 3
    shares = [rows_of(list(batches(data, 4, seed=5, epoch=2, rank=rank, world=world))) for rank in range(world)]
    counts = {len(s) for s in shares}
    assert counts == {steps_per_epoch(data, 4, world)} == {4}  # ranks take equal numbers of steps
    seen = [r for share in shares for b in share for r in b]
    assert len(seen) == len(set(seen)) == 48  # disjoint
    single = {r for b in rows_of(list(batches(data, 4, seed=5, epoch=2))) for r in b}
    assert set(seen) <= set(range(50)) and single <= set(range(50))


# -- bad corpora ----------------------------------------------------------------------------------


@pytest.fixture()
def bad_corpora(tmp_path: Path) -> dict[str, tuple[Path, str]]:
    """Each bad corpus, with the words its error must contain."""
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait, ".encode("latin-1") * 20)
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "short.txt").write_text("just a few words\n" * 3, encoding="utf-8")
    return {
        "missing": (tmp_path / "nope.txt", "does not exist"),
        "not utf-8": (tmp_path / "latin1.txt", "not UTF-8"),
        "empty": (tmp_path / "empty.txt", "empty"),
        "shorter than a sequence": (tmp_path / "short.txt", "too short for --seq-len 128"),
    }


@pytest.mark.parametrize("kind", ["missing", "not utf-8", "empty", "shorter than a sequence"])
def test_bad_corpus_is_one_clear_error(bad_corpora: dict[str, tuple[Path, str]], kind: str) -> None:
    path, words_ = bad_corpora[kind]
    with pytest.raises(SeqgenError, match=words_) as caught:
        build_dataset(TrainConfig(corpus=[str(path)], seq_len=128))
    assert "\n" not in str(caught.value)
    if kind != "shorter than a sequence":
        assert path.name in str(caught.value)
        with pytest.raises(SeqgenError, match=words_):
            read_corpus([path])


def test_lines_mode_with_a_single_item_is_refused(tmp_path: Path) -> None:
    corpus = tmp_path / "one.txt"
    corpus.write_text("alone\n\n", encoding="utf-8")
    with pytest.raises(SeqgenError, match="at least 2 non-empty items"):
        build_dataset(TrainConfig(corpus=[str(corpus)], lines=True))


@pytest.mark.parametrize("kind", ["missing", "not utf-8", "empty", "shorter than a sequence"])
def test_fit_cli_reports_a_bad_corpus_in_one_stderr_line_with_exit_code_2(
        bad_corpora: dict[str, tuple[Path, str]], kind: str, tmp_path: Path) -> None:
    path, words_ = bad_corpora[kind]
    result = CliRunner().invoke(train_cli, ["fit", str(path), "--out", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and words_ in lines[0]
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_fit_cli_process_exits_2_without_a_traceback(bad_corpora: dict[str, tuple[Path, str]],
                                                     tmp_path: Path) -> None:
    path, words_ = bad_corpora["not utf-8"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([str(Path(sys.executable).parent / "seqgen-train"), "fit", str(path), "--out",
                           str(tmp_path / "run")], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert done.stderr.startswith("Error: ") and words_ in done.stderr
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_vocabulary_options_reach_the_dataset(tmp_path: Path) -> None:
    corpus = tmp_path / "mixed.txt"
    corpus.write_text("The Cat saw THE dog; the dog saw a cat. " * 10, encoding="utf-8")
    lowered = build_dataset(TrainConfig(corpus=[str(corpus)], seq_len=16, lowercase=True))
    assert lowered.vocab.lowercase and not any(c.isupper() for c in lowered.vocab.chars)
    assert lowered.vocab.decode(lowered.train[:3]) == "the"
    by_codepoint = build_dataset(TrainConfig(corpus=[str(corpus)], seq_len=16, vocab_order="codepoint"))
    assert list(by_codepoint.vocab.chars) == sorted(set(corpus.read_text(encoding="utf-8")))
    by_frequency = build_dataset(TrainConfig(corpus=[str(corpus)], seq_len=16))
    assert by_frequency.vocab.chars[0] == " "  # the most frequent character first
