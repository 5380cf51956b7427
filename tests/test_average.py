"""Checkpoint averaging: `fit --keep-checkpoints` keeps each checkpoint's weights, and `export --average N`
exports the mean of the N kept about the best step (issue 13: it took the 2 x 1024 Shakespeare run from 1.4017
to 1.3987 through the runtime)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result

import seqgen
from seqgen.train import TrainConfig, train
from seqgen.train.cli import main as train_cli
from seqgen.train.export import export_onnx, load_run_model
from seqgen.train.runfolder import KEPT, kept_files

torch.set_num_threads(1)


def seqgen_train(*args: object) -> Result:
    return CliRunner().invoke(train_cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(5)
    words = ["now", "is", "the", "winter", "of", "our", "discontent", "made", "glorious", "summer"]
    path = tmp_path_factory.mktemp("corpus") / "richard.txt"
    path.write_text(" ".join(rng.choice(words, size=600)), encoding="utf-8")
    return path


def config(corpus: Path, out: Path, **options: object) -> TrainConfig:
    base: dict[str, object] = {"corpus": [str(corpus)], "out": str(out), "cell": "gru", "hidden": 16,
                               "embedding": 8, "seq_len": 24, "batch_size": 8, "lr": 1e-2, "eval_every": 2,
                               "checkpoint_every": 2, "max_steps": 10, "samples": 0, "progress": False,
                               "device": "cpu", "threads": 1, "seed": 3}
    return TrainConfig(**{**base, **options})


@pytest.fixture(scope="module")
def kept_run(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "kept"
    train(config(corpus, out, keep_checkpoints=True))
    return out


def test_every_checkpoint_is_kept_when_asked_and_none_otherwise(corpus: Path, kept_run: Path, tmp_path: Path) -> None:
    assert sorted(kept_files(kept_run)) == [2, 4, 6, 8, 10]
    plain = tmp_path / "plain"
    train(config(corpus, plain, max_steps=4))
    assert not (plain / KEPT).exists()


def test_export_average_is_the_mean_of_the_kept_weights_nearest_the_best_step(corpus: Path, kept_run: Path,
                                                                               tmp_path: Path) -> None:
    model, vocab, _, saved = load_run_model(kept_run)
    best = int(saved["best_step"])
    nearest = sorted(sorted(kept_files(kept_run), key=lambda step: (abs(step - best), step))[:3])
    states = [torch.load(kept_files(kept_run)[step], weights_only=True)["model"] for step in nearest]
    model.load_state_dict({name: sum(s[name].double() for s in states).div(3).float() for name in states[0]})
    export_onnx(model, vocab, tmp_path / "by-hand.onnx")

    result = seqgen_train("export", kept_run, "--out", tmp_path / "averaged.onnx", "--average", "3")
    assert result.exit_code == 0, result.output
    averaged = seqgen.load(tmp_path / "averaged.onnx")
    assert averaged.info["averaged_steps"] == nearest
    text = corpus.read_text(encoding="utf-8")[-300:]
    assert averaged.score(text).loss == pytest.approx(seqgen.load(tmp_path / "by-hand.onnx").score(text).loss,
                                                      abs=1e-6)
    assert averaged.score(text).loss != pytest.approx(seqgen.load(kept_run / "model.onnx").score(text).loss,
                                                      abs=1e-6)  # not the best checkpoint's weights
    int8 = seqgen_train("export", kept_run, "--out", tmp_path / "averaged-int8.onnx", "--average", "3",
                        "--quantize", "int8")
    assert int8.exit_code == 0, int8.output
    assert seqgen.load(tmp_path / "averaged-int8.onnx").info["averaged_steps"] == nearest


@pytest.mark.parametrize(("kept", "count", "words"), [
    (False, 2, ["kept no checkpoints", "--keep-checkpoints"]),
    (True, 6, ["--average 6", "kept 5", "at most 5"]),
])
def test_too_few_kept_checkpoints_is_one_line(corpus: Path, kept_run: Path, tmp_path: Path, kept: bool,
                                              count: int, words: list[str]) -> None:
    run = kept_run
    if not kept:
        run = tmp_path / "plain"
        train(config(corpus, run, max_steps=2))
    result = seqgen_train("export", run, "--out", tmp_path / "m.onnx", "--average", count)
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1, result.output
    assert all(word in result.stderr for word in words), result.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_overwrite_retires_the_old_runs_kept_weights_and_resume_keeps_keeping(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(config(corpus, out, keep_checkpoints=True, max_steps=4))
    (out / KEPT / "mine.txt").write_text("not the run's", encoding="utf-8")
    refused = seqgen_train("fit", corpus, "--out", out, "--max-steps", "2")
    assert refused.exit_code == 2 and KEPT in refused.stderr  # the kept weights are part of the run
    train(config(corpus, out, max_steps=2), overwrite=True)
    assert kept_files(out) == {} and (out / KEPT / "mine.txt").exists()  # only what the old run made goes

    again = tmp_path / "again"
    train(config(corpus, again, keep_checkpoints=True, max_steps=4))
    train(TrainConfig(out=str(again), max_steps=8), resume=True)
    assert sorted(kept_files(again)) == [2, 4, 6, 8]


@pytest.mark.parametrize("which", ["one", "all", "same shapes, another corpus"])
def test_kept_weights_of_another_model_are_one_line_naming_the_kept_file(corpus: Path, kept_run: Path,
                                                                         tmp_path: Path, which: str) -> None:
    """A kept file of another shape (another --hidden) among the averaged was an internal error (tensors of
    different sizes added) when one of several was foreign, and blamed best.pt when all were."""
    other = tmp_path / "other"
    if which == "same shapes, another corpus":  # a run of the same shape on other text: its weights are no mean of ours
        elsewhere = tmp_path / "other.txt"
        elsewhere.write_text(corpus.read_text(encoding="utf-8")[::-1], encoding="utf-8")
        train(config(elsewhere, other, keep_checkpoints=True, max_steps=4))
    else:
        train(config(corpus, other, keep_checkpoints=True, hidden=24, max_steps=4))
    run = tmp_path / "run"
    shutil.copytree(kept_run, run)
    foreign = [2, 4, 6, 8, 10] if which == "all" else [6]
    for step in foreign:
        shutil.copy(kept_files(other)[4], kept_files(run)[step])
    result = seqgen_train("export", run, "--out", tmp_path / "m.onnx", "--average", "5")
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1, result.output
    assert "kept" in result.stderr and "step-00000" in result.stderr and "best.pt" not in result.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_keep_checkpoints_where_kept_is_a_file_is_refused_before_training(corpus: Path, tmp_path: Path) -> None:
    """It failed at the run's first checkpoint ("cannot write RUN/kept: File exists"), after training to it."""
    out = tmp_path / "run"
    out.mkdir()
    (out / KEPT).write_text("mine", encoding="utf-8")
    result = seqgen_train("fit", corpus, "--out", out, "--keep-checkpoints", "--max-steps", "4", "--hidden", "16",
                          "--checkpoint-every", "2", "--samples", "0", "--device", "cpu", "--threads", "1")
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1, result.output
    assert str(out / KEPT) in result.stderr and "--keep-checkpoints" in result.stderr, result.stderr
    assert sorted(p.name for p in out.iterdir()) == [KEPT] and (out / KEPT).read_text(encoding="utf-8") == "mine"


def test_a_kept_file_of_non_finite_weights_is_one_line(kept_run: Path, tmp_path: Path) -> None:
    """A kept file whose weights hold a NaN (edited or damaged, yet loadable) was averaged into a model that
    exported and scored NaN, with no word said."""
    run = tmp_path / "run"
    shutil.copytree(kept_run, run)
    path = kept_files(run)[10]
    payload = torch.load(path, weights_only=True)
    name = next(iter(payload["model"]))
    payload["model"][name] = payload["model"][name].clone().fill_(float("nan"))
    torch.save(payload, path)
    result = seqgen_train("export", run, "--out", tmp_path / "m.onnx", "--average", "5")
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1, result.output
    assert path.name in result.stderr and "not finite" in result.stderr, result.stderr
    assert not (tmp_path / "m.onnx").exists()
