"""The training loop: each cell learns and exports a model the runtime loads, early stopping keeps the
best weights, divergence stops cleanly, bad checkpoints are refused, fit_texts trains from memory."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner
from onnx import numpy_helper

import seqgen
from seqgen.cells import CELLS, NAMES
from seqgen.errors import SeqgenError
from seqgen.train import CharRNN, TrainConfig, fit_texts, train
from seqgen.train import loop as loop_module
from seqgen.train.cli import main as train_main
from seqgen.train.config import INTEGERS
from seqgen.train.loop import TrainingDiverged
from seqgen.train.models import parameter_count

torch.set_num_threads(1)

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "while", "a", "small", "cat",
         "sleeps", "on", "the", "warm", "mat", "and", "birds", "sing", "in", "the", "old", "tree", "by", "river"]


def corpus_text(chars: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    out: list[str] = []
    while sum(map(len, out)) < chars:
        out.append(str(rng.choice(WORDS)) + (".\n" if rng.random() < 0.1 else " "))
    return "".join(out)[:chars]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    path.write_text(corpus_text(3000), encoding="utf-8")
    return path


def tiny(corpus: Path, out: Path, **options: object) -> TrainConfig:
    """A config that trains in well under a second per few dozen steps."""
    base: dict[str, object] = {"corpus": [str(corpus)], "out": str(out), "cell": "lstm", "layers": 2, "hidden": 32,
                               "embedding": 8, "seq_len": 32, "batch_size": 8, "lr": 1e-2, "warmup_steps": 5,
                               "max_steps": 40, "eval_every": 10, "samples": 0, "progress": False,
                               "device": "cpu", "threads": 1}
    return TrainConfig(**{**base, **options})


def records(run: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]


def metrics(run: Path) -> list[dict[str, float]]:
    """The evaluation records of a run (the others are training-loss records every --log-every steps)."""
    return [r for r in records(run) if "val_loss" in r]


def saved(path: Path) -> dict[str, object]:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("cell", NAMES)
def test_each_cell_learns_and_exports_a_model_the_runtime_loads(corpus: Path, tmp_path: Path, cell: str) -> None:
    out = tmp_path / cell
    result = train(tiny(corpus, out, cell=cell, dropout=0.1))
    assert result.stopped == "max steps" and result.steps == 40
    rows = metrics(out)
    assert [r["step"] for r in rows] == [10, 20, 30, 40]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] - 0.2
    assert rows[-1]["val_loss"] < rows[0]["val_loss"]
    assert result.best_val_loss == min(r["val_loss"] for r in rows) < math.log(27)  # better than uniform
    assert result.model_path == out / "model.onnx"

    model = seqgen.load(result.model_path)
    info = model.info
    assert info["cell"] == cell and info["layers"] == 2 and info["hidden_size"] == 32
    assert float(info["parity_max_abs_diff"]) <= 1e-4
    assert info["quantization"] == "none"
    assert info["corpus"] == corpus.name and len(info["corpus_sha256"]) == 64
    assert info["training"]["config"]["cell"] == cell
    assert info["val_loss"] == pytest.approx(result.best_val_loss, abs=1e-4)
    # the runtime computes what the trained torch model computes
    text = corpus_text(200, seed=9)
    score = model.score(text)
    assert math.isfinite(score.loss) and score.loss < math.log(model.vocab.size)


def test_checkpoints_load_with_weights_only_and_hold_what_resume_needs(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny(corpus, out, max_steps=10, eval_every=5))
    state = saved(out / "checkpoint.pt")
    assert state["step"] == 10
    for key in ("model", "optimizer", "rngs", "config", "vocab", "epoch", "batch_in_epoch", "best_val"):
        assert key in state
    assert state["config"]["max_steps"] == 10
    assert not list(out.glob("*.tmp")) and not list(out.glob(".*.tmp"))


def test_exported_files_are_readable_like_ordinary_files(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny(corpus, out, max_steps=5, eval_every=5))
    umask = os.umask(0)
    os.umask(umask)
    for name in ("model.onnx", "checkpoint.pt", "metrics.jsonl"):
        assert (out / name).stat().st_mode & 0o777 == 0o666 & ~umask, name


# -- early stopping -------------------------------------------------------------------------------


def random_items(count: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list("abcdefghij"), size=8)) for _ in range(count)]


def test_early_stopping_ends_the_run_and_exports_the_best_weights(tmp_path: Path) -> None:
    out = tmp_path / "run"
    # random strings: the model soon memorises the training items and the held-out loss rises
    result = fit_texts(random_items(40), out, cell="gru", layers=1, hidden=64, embedding=8, lr=0.1,
                       schedule="constant", warmup_steps=0, batch_size=8, eval_every=5, patience=2, max_steps=400,
                       samples=0, progress=False, device="cpu", threads=1)
    assert result.stopped == "early stopping"
    assert result.steps < 400
    rows = metrics(out)
    best_row = min(rows, key=lambda r: r["val_loss"])
    best, last = saved(out / "best.pt"), saved(out / "checkpoint.pt")
    assert best["step"] == best["best_step"] == last["best_step"] == best_row["step"]
    assert result.steps == best_row["step"] + 2 * 5  # two evaluations without improvement
    assert all(r["val_loss"] >= best_row["val_loss"] for r in rows if r["step"] > best_row["step"])
    assert result.best_val_loss == pytest.approx(best_row["val_loss"])
    # model.onnx holds the best weights, not the last ones
    info = seqgen.load(out / "model.onnx").info
    assert info["best_step"] == best_row["step"]
    weights = {t.name: numpy_helper.to_array(t) for t in onnx.load(out / "model.onnx").graph.initializer}
    assert np.array_equal(weights["embedding"], best["model"]["embedding.weight"].numpy())
    assert not np.array_equal(weights["embedding"], last["model"]["embedding.weight"].numpy())


# -- divergence -----------------------------------------------------------------------------------


def test_an_exploding_learning_rate_stops_with_training_diverged(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    with pytest.raises(TrainingDiverged, match="diverged") as caught:
        train(tiny(corpus, out, layers=1, lr=1e6, warmup_steps=0, max_steps=60, eval_every=2, checkpoint_every=1))
    assert isinstance(caught.value, SeqgenError) and "\n" not in str(caught.value)
    assert str(out) in str(caught.value)
    kept = saved(out / "checkpoint.pt")
    assert 1 <= kept["step"] < 60
    assert all(torch.isfinite(v).all() for v in kept["model"].values())
    assert not (out / "model.onnx").exists()


def test_a_nan_loss_stops_the_run_and_keeps_the_last_good_checkpoint(
        corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    out = tmp_path / "run"
    real = loop_module.F.cross_entropy
    calls = {"train": 0}

    def poisoned(logits: torch.Tensor, target: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        loss = real(logits, target, *args, **kwargs)
        if kwargs.get("reduction", "mean") == "mean":  # the training loss, not the evaluation's sum
            calls["train"] += 1
            if calls["train"] == 8:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(loop_module.F, "cross_entropy", poisoned)
    with pytest.raises(TrainingDiverged, match="at step 8"):
        train(tiny(corpus, out, max_steps=20, eval_every=3, checkpoint_every=3))
    kept, best = saved(out / "checkpoint.pt"), saved(out / "best.pt")
    assert kept["step"] == 6 and best["step"] == 6
    assert all(torch.isfinite(v).all() for v in kept["model"].values())
    assert max(r["step"] for r in metrics(out)) == 6


# -- refused checkpoints --------------------------------------------------------------------------


def test_a_corrupt_checkpoint_is_refused_on_resume(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny(corpus, out, max_steps=5, eval_every=5))
    (out / "checkpoint.pt").write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(SeqgenError, match="damaged or not a seqgen checkpoint") as caught:
        train(tiny(corpus, out, max_steps=10), resume=True)
    assert "checkpoint.pt" in str(caught.value)
    (out / "checkpoint.pt").write_bytes(b"")
    with pytest.raises(SeqgenError, match="damaged or not a seqgen checkpoint"):
        train(tiny(corpus, out, max_steps=10), resume=True)


def test_resume_without_a_checkpoint_is_refused(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(SeqgenError, match="no checkpoint"):
        train(tiny(corpus, tmp_path / "never"), resume=True)


def test_a_checkpoint_of_another_corpus_is_refused_on_resume(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny(corpus, out, max_steps=5, eval_every=5))
    before = (out / "checkpoint.pt").read_bytes()
    other = tmp_path / "other.txt"  # the same characters in another order: the vocabulary alone cannot tell
    other.write_text(corpus_text(3000, seed=5), encoding="utf-8")
    with pytest.raises(SeqgenError, match="another corpus"):
        train(tiny(other, out, max_steps=10), resume=True)
    # a corpus edited in place since the checkpoint is refused as well
    edited = tmp_path / "edited.txt"
    edited.write_text(corpus.read_text(encoding="utf-8"), encoding="utf-8")
    train(tiny(edited, tmp_path / "run2", max_steps=5, eval_every=5))
    edited.write_text(corpus_text(3000, seed=6), encoding="utf-8")
    with pytest.raises(SeqgenError, match="another corpus"):
        train(tiny(edited, tmp_path / "run2", max_steps=10), resume=True)
    assert (out / "checkpoint.pt").read_bytes() == before


def test_a_checkpoint_of_another_vocabulary_is_refused_on_resume(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny(corpus, out, max_steps=5, eval_every=5))
    other = tmp_path / "digits.txt"
    other.write_text("0123456789 " * 300, encoding="utf-8")
    with pytest.raises(SeqgenError, match="another"):
        train(tiny(other, out, max_steps=10), resume=True)


# -- training from memory -------------------------------------------------------------------------


def test_fit_texts_with_strings_trains_line_items(tmp_path: Path) -> None:
    names = ["anna", "bob", "carl", "dora", "emil", "fred", "gina", "hugo", "ida", "jan", "kim", "lena"] * 3
    result = fit_texts(names, tmp_path / "names", cell="gru", layers=1, hidden=32, embedding=8, lr=0.02,
                       warmup_steps=0, batch_size=8, max_steps=60, eval_every=20, samples=1, progress=False,
                       device="cpu", threads=1)
    assert result.steps == 60
    model = seqgen.load(result.model_path)
    assert model.file.line_items and model.info["line_items"] is True
    assert set(model.vocab.chars) == set("".join(names))
    rows = metrics(tmp_path / "names")
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]
    # an item ends: generation stops at the boundary long before the limit
    generated = model.generate("", 100, temperature=0.5, seed=1)
    assert len(generated) < 30 and "\n" not in generated


def test_fit_texts_with_pairs_learns_the_next_character(tmp_path: Path) -> None:
    letters = "abcdefghij"
    examples = [(letters[i : i + 4], letters[i + 1 : i + 5]) for i in range(6)]
    result = fit_texts(examples, tmp_path / "pairs", cell="gru", layers=1, hidden=32, embedding=8, lr=0.03,
                       warmup_steps=0, schedule="constant", batch_size=8, max_steps=150, eval_every=50,
                       samples=0, progress=False, device="cpu", threads=1)
    assert result.train_accuracy == 1.0 and result.best_val_accuracy == 1.0
    model = seqgen.load(result.model_path)
    assert not model.file.line_items
    for prompt, expected in (("cde", "f"), ("defg", "h"), ("a", "b")):
        assert model.predict(prompt, 1)[0][0] == expected


def test_fit_texts_rejects_mixed_or_empty_input(tmp_path: Path) -> None:
    with pytest.raises(SeqgenError, match="fit_texts takes"):
        fit_texts([], tmp_path / "x")
    with pytest.raises(SeqgenError, match="fit_texts takes"):
        fit_texts(["abc", ("ab", "c")], tmp_path / "x")  # type: ignore[list-item]
    for malformed in ([("ab",)], [("a", "b", "c")], [("a", 3)], [("a", None)]):  # ValueError, TypeError before
        with pytest.raises(SeqgenError, match=r"or of \(input, target\) pairs of strings"):
            fit_texts(malformed, tmp_path / "x")  # type: ignore[arg-type]


FIRST_NAMES = ["anna", "bob", "carl", "dora", "emil", "fred", "gina", "hugo", "ida", "jan", "kim", "lena"] * 2
TINY_TEXTS_RUN = {"layers": 1, "hidden": 8, "embedding": 4, "batch_size": 4, "schedule": "constant",
                  "warmup_steps": 0, "eval_every": 3, "samples": 0, "progress": False, "threads": 1}
"""A fit_texts run of a few steps on FIRST_NAMES, for the tests of its resume."""


def test_fit_texts_takes_any_iterable_of_texts_but_not_one_text(tmp_path: Path) -> None:
    """A generator of names failed with a TypeError (it was indexed), and a single string trained on its
    characters as items, silently; the one is read as a list, the other refused."""
    assert fit_texts(iter(FIRST_NAMES), tmp_path / "run", max_steps=2, **TINY_TEXTS_RUN).steps == 2
    for one_text in ("anna\nbob\ncarl", b"anna", 3):
        with pytest.raises(SeqgenError, match=r"takes a list of strings, or of \(input, target\) pairs, not a"):
            fit_texts(one_text, tmp_path / "other", max_steps=2, **TINY_TEXTS_RUN)  # type: ignore[arg-type]
    assert not (tmp_path / "other").exists()


def test_fit_texts_resumes_on_the_same_texts(tmp_path: Path) -> None:
    """A fit_texts run could not be resumed at all (the CLI asked for a corpus it never had). Now fit_texts(...,
    resume=True) continues it exactly, splitting the items by the run's saved seed, not this call's default;
    the CLI says where to resume it."""
    names, choices = FIRST_NAMES, TINY_TEXTS_RUN
    fit_texts(names, tmp_path / "whole", seed=5, max_steps=6, **choices)
    fit_texts(names, tmp_path / "parts", seed=5, max_steps=3, **choices)
    result = fit_texts(names, tmp_path / "parts", resume=True, max_steps=6, **choices)
    assert result.steps == 6
    whole, parts = (torch.load(tmp_path / run / "checkpoint.pt", weights_only=True) for run in ("whole", "parts"))
    assert parts["config"]["seed"] == 5 and parts["config"]["lines"] and parts["config"]["seq_len"] is None
    for name, weights in whole["model"].items():
        assert torch.equal(weights, parts["model"][name]), name
    cli = CliRunner().invoke(train_main, ["fit", "--resume", str(tmp_path / "parts"), "--max-steps", "9"])
    assert cli.exit_code == 2 and "fit_texts(the same texts, out, resume=True)" in cli.output
    for option in ({"preset": "alphabet-next"}, {"corpus": ["a.txt"]}, {"lines": False}):
        with pytest.raises(SeqgenError, match="fit_texts trains on the texts it is given"):
            fit_texts(names, tmp_path / "x", **option)


@pytest.mark.parametrize("other", ["a subset of the items", "pairs for strings"])
def test_a_fit_texts_resume_refuses_other_texts_of_the_same_characters(tmp_path: Path, other: str) -> None:
    """Only the vocabulary was checked: half the items, or (input, target) pairs cut from them, resumed the run
    silently on other data. The texts' sha256 is now saved and checked, as a corpus file's is."""
    fit_texts(FIRST_NAMES, tmp_path / "run", seed=5, max_steps=3, **TINY_TEXTS_RUN)
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    texts = FIRST_NAMES[:12] if other.startswith("a subset") else [(n[:-1], n[-1]) for n in FIRST_NAMES]
    with pytest.raises(SeqgenError, match=r"another corpus .*resume with the same texts, in the same order"):
        fit_texts(texts, tmp_path / "run", resume=True, max_steps=6, **TINY_TEXTS_RUN)
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before


def test_fit_texts_refuses_to_resume_a_run_of_a_corpus_file(tmp_path: Path) -> None:
    """fit_texts(resume=True) on a --lines run of a file went on with whatever items it was given (sha256
    unchecked), and now that texts have one, named the wrong fix; it names the command that resumes the run."""
    corpus = tmp_path / "names.txt"
    corpus.write_text("\n".join(FIRST_NAMES) + "\n", encoding="utf-8")
    train(TrainConfig(corpus=[str(corpus)], out=str(tmp_path / "run"), lines=True, seed=5, max_steps=3,
                      **TINY_TEXTS_RUN))  # type: ignore[arg-type]
    with pytest.raises(SeqgenError, match=r"trained on names.txt, not on texts in memory; resume it with "
                                          r"seqgen-train fit --resume"):
        fit_texts(FIRST_NAMES, tmp_path / "run", resume=True, max_steps=6, **TINY_TEXTS_RUN)


def fit_texts_run_saved_before_lines(run: Path) -> Path:
    """A fit_texts run of FIRST_NAMES as seqgen saved it before texts had a sha256 and strings lines=True."""
    fit_texts(FIRST_NAMES, run, seed=5, max_steps=3, **TINY_TEXTS_RUN)
    old = torch.load(run / "checkpoint.pt", weights_only=True)
    old["corpus"]["sha256"] = ""
    old["config"].update(lines=False, seq_len=128, val_fraction=0.1)
    torch.save(old, run / "checkpoint.pt")
    return run


def test_a_fit_texts_run_saved_before_its_texts_had_a_sha256_resumes_only_on_the_same_kind(tmp_path: Path) -> None:
    """A run saved before fit_texts recorded a sha256 (and lines=True) has only its vocabulary to check: pairs
    cut from its strings passed it and trained a line-item run on next-character tasks. The kind is checked;
    the same strings still resume it."""
    run = fit_texts_run_saved_before_lines(tmp_path / "run")
    with pytest.raises(SeqgenError, match=r"made from line items \(strings\), not running text or \(input, target"):
        fit_texts([(n[:-1], n[-1]) for n in FIRST_NAMES], run, resume=True, max_steps=6, **TINY_TEXTS_RUN)
    assert fit_texts(FIRST_NAMES, run, resume=True, max_steps=6, **TINY_TEXTS_RUN).steps == 6


def test_resume_and_overwrite_together_are_refused_from_python(tmp_path: Path) -> None:
    """The CLI refused --resume with --overwrite, but fit_texts (and train) silently resumed, ignoring the
    overwrite the caller asked for."""
    fit_texts(FIRST_NAMES, tmp_path / "run", seed=5, max_steps=3, **TINY_TEXTS_RUN)
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    with pytest.raises(SeqgenError, match=r"resume=True .* overwrite=True .*; choose one"):
        fit_texts(FIRST_NAMES, tmp_path / "run", resume=True, overwrite=True, max_steps=6, **TINY_TEXTS_RUN)
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before


def test_a_fit_texts_resume_refuses_settings_it_would_ignore(tmp_path: Path) -> None:
    """lr=, hidden=, seed= or lowercase= given to a resume were silently dropped (the run kept its saved ones);
    a changed setting is refused, while the same ones given again and the limits are taken."""
    fit_texts(FIRST_NAMES, tmp_path / "run", seed=5, max_steps=3, **TINY_TEXTS_RUN)
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    for change in ({"lr": 0.5}, {"hidden": 16}, {"seed": 9}, {"lowercase": True}):
        name = next(iter(change))
        with pytest.raises(SeqgenError, match=rf"keeps the settings it was made with, so {name}=.*cannot change"):
            fit_texts(FIRST_NAMES, tmp_path / "run", resume=True, max_steps=6, **{**TINY_TEXTS_RUN, **change})
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before
    assert fit_texts(FIRST_NAMES, tmp_path / "run", resume=True, seed=5, max_steps=6, **TINY_TEXTS_RUN).steps == 6


def test_an_interrupted_fit_texts_run_says_to_resume_it_with_fit_texts(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C in fit_texts said "continue with: seqgen-train fit --resume RUN", which refuses such a run."""
    real = loop_module.Run._train_step

    def interrupted(self: loop_module.Run, x: np.ndarray, y: np.ndarray) -> tuple[float, int, int]:
        if self.step == 3:
            raise KeyboardInterrupt
        return real(self, x, y)

    monkeypatch.setattr(loop_module.Run, "_train_step", interrupted)
    with pytest.raises(loop_module.Interrupted, match=r"continue with: fit_texts\(the same texts, .*resume=True\) "
                                                     r"\(from its checkpoint at step 2\)"):
        fit_texts(FIRST_NAMES, tmp_path / "run", max_steps=6, checkpoint_every=2, **TINY_TEXTS_RUN)


def test_a_fit_texts_resume_builds_the_vocabulary_by_the_runs_saved_choices(tmp_path: Path) -> None:
    """A run made with vocab_order="codepoint" and lowercase=True, resumed without them: its vocabulary is
    built by the saved choices, not this call's defaults (which would build another and be refused)."""
    names = [name.capitalize() for name in FIRST_NAMES]
    fit_texts(names, tmp_path / "run", seed=5, max_steps=3, vocab_order="codepoint", lowercase=True,
              **TINY_TEXTS_RUN)
    assert fit_texts(names, tmp_path / "run", resume=True, max_steps=6, **TINY_TEXTS_RUN).steps == 6


def test_a_fit_texts_run_of_strings_saved_before_lines_resumes_and_exports_as_line_items(tmp_path: Path) -> None:
    """Such a run (lines=False, seq_len 128, val_fraction 0.1 saved) kept those on resume: its next checkpoints
    and its model's metadata still gave running text's seq_len and held-out fraction to line items."""
    run = fit_texts_run_saved_before_lines(tmp_path / "run")
    fit_texts(FIRST_NAMES, run, resume=True, max_steps=6, **TINY_TEXTS_RUN)
    config = torch.load(run / "checkpoint.pt", weights_only=True)["config"]
    written = seqgen.load(run / "model.onnx").info["training"]["config"]
    for saved in (config, written):
        assert saved["lines"] is True and saved["seq_len"] is None and saved["val_fraction"] is None


def test_a_run_of_a_corpus_file_named_like_texts_in_memory_still_resumes(tmp_path: Path) -> None:
    """A run was taken for one of texts in memory by its corpus name, "<texts>", which a file may have:
    its resume was refused, naming fit_texts. The saved config (no corpus file, no preset) tells them apart."""
    corpus = tmp_path / "<texts>"
    corpus.write_text("\n".join(FIRST_NAMES) + "\n", encoding="utf-8")
    options = {"corpus": [str(corpus)], "out": str(tmp_path / "run"), "lines": True, **TINY_TEXTS_RUN}
    train(TrainConfig(max_steps=3, **options))  # type: ignore[arg-type]
    assert train(TrainConfig(max_steps=6, **options), resume=True).steps == 6  # type: ignore[arg-type]


def test_val_fraction_belongs_to_running_text_alone(tmp_path: Path) -> None:
    """Line items, presets and texts in memory have their own held-out sets: a val_fraction there is an
    error, not a setting silently ignored."""
    assert TrainConfig().val_fraction == 0.1 and TrainConfig(lines=True).val_fraction is None
    for options in ({"lines": True}, {"preset": "alphabet-next"}):
        with pytest.raises(SeqgenError, match="--val-fraction splits running text only"):
            TrainConfig(val_fraction=0.2, **options)
    with pytest.raises(SeqgenError, match="--val-fraction splits running text only"):
        fit_texts(["anna", "bob"], tmp_path / "x", val_fraction=0.2)


def test_seq_len_belongs_to_running_text_alone(tmp_path: Path) -> None:
    """TrainConfig(lines=True, seq_len=64) from Python was accepted and trained on whole lines: the config
    could not tell a given length from its default. Now it can, and an old run's saved 128 still loads."""
    assert TrainConfig().seq_len == 128 and TrainConfig(lines=True).seq_len is None
    for options in ({"lines": True}, {"preset": "alphabet-next"}):
        with pytest.raises(SeqgenError, match="--seq-len cuts running text"):
            TrainConfig(seq_len=64, **options)
        saved = {**TrainConfig(**options).to_dict(), "seq_len": 128}  # as runs saved before wrote it
        assert TrainConfig.from_dict(saved).seq_len is None
    assert TrainConfig.from_dict(TrainConfig(seq_len=64).to_dict()).seq_len == 64
    result = fit_texts(["anna", "bob"], tmp_path / "x", seq_len=None, val_fraction=None, hidden=8, embedding=4,
                       max_steps=1, samples=0, progress=False, threads=1)  # None is unset: nothing to refuse
    assert result.steps == 1


@pytest.mark.parametrize(("option", "value"), [
    ("cell", "transformer"), ("dropout", 1.0), ("output_dropout", 1.0), ("output_dropout", -0.1), ("lr", 0.0),
    ("val_fraction", 1.0), ("val_fraction", 0.0),
    ("vocab_order", "alphabetical"), ("weight_decay", -0.1), ("warmup_steps", -1), ("min_lr_ratio", 2.0),
    ("checkpoint_every", 0), ("samples", -1), ("threads", 0), ("max_steps", 0), ("schedule", "linear"),
])
def test_bad_options_are_one_clear_error(option: str, value: object) -> None:
    with pytest.raises(SeqgenError, match="--" + option.replace("_", "-")):
        TrainConfig(**{option: value})


@pytest.mark.parametrize("option", [name for name, (_, high) in INTEGERS.items() if high is None or high > 2**63])
def test_counts_beyond_int64_are_one_clear_error(option: str) -> None:
    """--warmup-steps 10**400 passed (no upper limit) and the learning rate's division raised OverflowError."""
    with pytest.raises(SeqgenError, match="--" + option.replace("_", "-")):
        TrainConfig(**{option: 10**400})


# -- limits and run folders -----------------------------------------------------------------------


def test_a_time_budget_run_evaluates_its_last_steps_and_exports(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    result = train(tiny(corpus, out, max_steps=None, time_budget=0.6, eval_every=100_000, layers=1))
    assert result.stopped == "time budget" and result.steps > 0
    assert 0.6 <= result.seconds < 60
    rows = metrics(out)
    assert [r["step"] for r in rows] == [result.steps]
    assert result.model_path == out / "model.onnx" and seqgen.load(result.model_path).info["best_step"] == result.steps


def test_progress_and_samples_go_to_stderr_only_when_asked(
        corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train(tiny(corpus, tmp_path / "quiet", max_steps=4, eval_every=2, samples=2))
    quiet = capsys.readouterr()
    assert quiet.out == "" and quiet.err == ""
    train(tiny(corpus, tmp_path / "loud", max_steps=4, eval_every=2, samples=2, progress=True))
    loud = capsys.readouterr()
    assert loud.out == ""
    assert "step 2 sample 1:" in loud.err and "step 4 sample 2:" in loud.err


def test_atomic_write_clears_temporary_files_left_by_a_killed_write(tmp_path: Path) -> None:
    from seqgen.train.files import atomic_write

    (tmp_path / ".model.onnx.x1y2.tmp").write_bytes(b"half")  # what SIGKILL mid-write leaves
    (tmp_path / ".other.onnx.x1y2.tmp").write_bytes(b"someone else's")
    atomic_write(tmp_path / "model.onnx", b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.onnx.x1y2.tmp", "model.onnx"]
    assert (tmp_path / "model.onnx").read_bytes() == b"whole"


# -- the training-loss curve and the LSTM's forget gate ---------------------------------------------


def test_training_loss_is_logged_every_few_steps_between_evaluations(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(tiny(corpus, out, max_steps=12, eval_every=6, log_every=4))
    rows = records(out)
    steps = [r["step"] for r in rows if "val_loss" not in r]
    assert steps == [4, 8, 12]
    assert [r["step"] for r in metrics(out)] == [6, 12]
    assert all(r["train_loss"] > 0 and r["elapsed"] >= 0 for r in rows)
    # the curve is drawn from them, against steps and against minutes
    from seqgen.train.plot import plot_run

    assert plot_run(out).stat().st_size > 1000


def forget_gate_bias(model_state: dict[str, torch.Tensor], hidden: int, layer: int) -> torch.Tensor:
    forget = slice(hidden, 2 * hidden)  # torch's LSTM gates: input, forget, cell, output
    return model_state[f"rnn.bias_ih_l{layer}"][forget] + model_state[f"rnn.bias_hh_l{layer}"][forget]


def test_lstm_forget_gate_starts_at_the_configured_bias(corpus: Path, tmp_path: Path) -> None:
    # one step at a tiny learning rate leaves the biases where initialisation put them
    for forget_bias, out in ((1.0, tmp_path / "one"), (2.5, tmp_path / "other")):
        train(tiny(corpus, out, max_steps=1, eval_every=1, lr=1e-7, warmup_steps=0, forget_bias=forget_bias))
        state = saved(out / "checkpoint.pt")
        assert state["config"]["forget_bias"] == forget_bias
        for layer in (0, 1):
            assert torch.allclose(forget_gate_bias(state["model"], 32, layer), torch.tensor(forget_bias), atol=1e-4)


def test_runs_saved_before_the_forget_bias_option_keep_torchs_initialisation() -> None:
    config = TrainConfig.from_dict({"cell": "lstm", "hidden": 32})
    assert config.forget_bias is None
    torch.manual_seed(0)
    plain = CharRNN(10, "lstm", 8, 32, 2, forget_bias=config.forget_bias)
    torch.manual_seed(0)
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), CharRNN(10, "lstm", 8, 32, 2)
                                                  .state_dict().values()))
    assert not torch.allclose(forget_gate_bias(plain.state_dict(), 32, 0), torch.tensor(1.0), atol=0.1)


def test_dropout_between_layers_is_refused_where_there_is_no_second_layer() -> None:
    """torch applies --dropout between stacked layers only: with one layer it was accepted and silently did
    nothing. A run saved that way trained without dropout, so it loads (to resume or export) with 0."""
    with pytest.raises(SeqgenError, match="--output-dropout"):
        TrainConfig(layers=1, dropout=0.3)
    assert TrainConfig(layers=1, output_dropout=0.3).output_dropout == 0.3
    assert TrainConfig.from_dict({"layers": 1, "dropout": 0.3}).dropout == 0.0


@pytest.mark.parametrize("cell", NAMES)
def test_parameter_count_before_building_is_the_built_models(cell: str) -> None:
    """The count that refuses too large a model (training and Keras import) is the one torch allocates."""
    model = CharRNN(11, cell, 5, 7, 3)
    assert parameter_count(CELLS[cell].gates, 11, 5, 7, 3) == model.parameter_count


def test_output_dropout_drops_the_top_layers_outputs_in_training_only_and_defaults_off(corpus: Path,
                                                                                      tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = CharRNN(10, "lstm", 8, 32, 2, output_dropout=0.5)
    tokens = torch.randint(0, 10, (2, 6))
    assert not torch.equal(model(tokens)[0], model(tokens)[0])  # a fresh mask each call while training
    model.eval()
    assert torch.equal(model(tokens)[0], model(tokens)[0])
    assert TrainConfig.from_dict({"cell": "lstm"}).output_dropout == 0.0  # runs saved before the option
    # the option reaches training: the same seed with and without it learns different weights
    for dropout, out in ((0.0, tmp_path / "off"), (0.5, tmp_path / "on")):
        train(tiny(corpus, out, max_steps=3, eval_every=3, output_dropout=dropout))
    off, on = (saved(tmp_path / name / "checkpoint.pt") for name in ("off", "on"))
    assert on["config"]["output_dropout"] == 0.5
    assert not torch.equal(off["model"]["head.weight"], on["model"]["head.weight"])


# -- the optimiser's schedule and gradient clipping reach the weights --------------------------------


def test_learning_rate_warms_up_linearly_then_decays_by_cosine_to_its_floor() -> None:
    config = TrainConfig(lr=1e-2, warmup_steps=10, min_lr_ratio=0.1)
    assert [loop_module.learning_rate(config, s, 0.0) for s in (0, 4, 9)] == pytest.approx([1e-3, 5e-3, 1e-2])
    decay = [loop_module.learning_rate(config, 10, p) for p in (0.0, 0.5, 1.0, 2.0)]
    assert decay == pytest.approx([1e-2, 5.5e-3, 1e-3, 1e-3])
    constant = TrainConfig(lr=1e-2, warmup_steps=0, schedule="constant")
    assert loop_module.learning_rate(constant, 50, 0.9) == 1e-2


def test_the_loop_applies_the_schedule_at_every_step(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    config = tiny(corpus, out, max_steps=20, eval_every=20, log_every=1, warmup_steps=5)
    train(config)
    logged = {r["step"]: r["lr"] for r in records(out) if "val_loss" not in r}
    expected = {s + 1: loop_module.learning_rate(config, s, s / 20) for s in range(20)}
    assert logged == pytest.approx(expected)
    assert len(set(logged.values())) > 10  # warm-up and decay, not a constant


def test_gradients_are_clipped_to_grad_clip_before_the_update(corpus: Path, tmp_path: Path) -> None:
    run = loop_module.Run(tiny(corpus, tmp_path / "run", grad_clip=1e-3))
    x, y = next(run.batch_stream())
    run._train_step(x, y)
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in run.model.parameters()]))
    assert norm <= 1e-3 * 1.001


def test_bf16_without_a_kernel_for_the_cell_is_refused_before_training(corpus: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def no_bf16_lstm(*args: object, **kwargs: object) -> None:
        raise RuntimeError("could not create a primitive descriptor for the LSTM forward propagation primitive")

    monkeypatch.setattr(loop_module.CharRNN, "forward", no_bf16_lstm)
    with pytest.raises(SeqgenError, match=r"--precision bf16.*use --precision fp32"):
        train(tiny(corpus, tmp_path / "run", precision="bf16"))
    assert not (tmp_path / "run" / "checkpoint.pt").exists()
