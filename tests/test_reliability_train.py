"""Issue 10, training half: a new run never destroys an old one, every message about the files left behind is
true, commands never write over what they did not make, line items cost memory by their characters, bad
numbers and malformed checkpoints are one clear error, and failed writes are one line."""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner, Result

import seqgen
from seqgen import checks
from seqgen.errors import SeqgenError
from seqgen.train import TrainConfig, files, fit_texts, train
from seqgen.train import checkpoint as checkpoints
from seqgen.train import loop as loop_module
from seqgen.train.cli import main as train_cli
from seqgen.train.config import usable_cpus
from seqgen.train.data import (
    GROUP_FLOOR,
    MAX_ITEM_CHARS,
    Items,
    batches,
    build_dataset,
    item_dataset,
    length_groups,
    line_items,
)
from seqgen.train.export import export_run
from seqgen.train.loop import EVAL_TOKENS, Interrupted, TrainingDiverged, loss_and_accuracy
from seqgen.train.runfolder import RUN_FILES

torch.set_num_threads(1)

NAMES = ["anna", "bob", "carl", "dora", "emil", "fred", "gina", "hugo", "ida", "jan", "kim", "lena", "mia",
         "nils", "otto", "paul", "rosa", "sven", "tina", "ulf"]


def assert_one_line(result: Result, *words: str, code: int = 2) -> None:
    """One `Error:` line on stderr with `words` in it, nothing on stdout, the exit code, no traceback."""
    assert result.exit_code == code, (result.output, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    assert result.stdout == "" and "Traceback" not in result.output and "internal error" not in result.output
    for word in words:
        assert word in lines[0], lines[0]


def seqgen_train(*args: object) -> Result:
    return CliRunner().invoke(train_cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "tiny.txt"
    rng = np.random.default_rng(3)
    words = ["rain", "falls", "on", "the", "plain", "in", "spain", "and", "snow", "hills"]
    path.write_text(" ".join(str(w) for w in rng.choice(words, size=500)), encoding="utf-8")
    return path


def tiny(corpus: Path, out: Path, **options: object) -> TrainConfig:
    base: dict[str, object] = {"corpus": [str(corpus)], "out": str(out), "cell": "gru", "layers": 1, "hidden": 16,
                               "embedding": 8, "seq_len": 32, "batch_size": 8, "lr": 1e-2, "warmup_steps": 2,
                               "max_steps": 8, "eval_every": 4, "samples": 0, "progress": False, "device": "cpu",
                               "threads": 1}
    return TrainConfig(**{**base, **options})


def contents(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def finished_once(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("finished") / "run"
    train(tiny(corpus, out))
    assert seqgen_train("plot", out).exit_code == 0
    assert {p.name for p in out.iterdir()} >= set(RUN_FILES)
    return out


@pytest.fixture()
def finished(finished_once: Path, tmp_path: Path) -> Path:
    """A folder holding a finished run, with its plot too (a copy of one trained run)."""
    return Path(shutil.copytree(finished_once, tmp_path / "run"))


def nan_at_step(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Make the training loss NaN at `step` (1-based), as a diverging run's would be."""
    real = loop_module.F.cross_entropy
    calls = {"train": 0}

    def poisoned(logits: torch.Tensor, target: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        loss = real(logits, target, *args, **kwargs)
        if kwargs.get("reduction", "mean") == "mean":
            calls["train"] += 1
            if calls["train"] == step:
                return loss * float("nan")
        return loss

    monkeypatch.setattr(loop_module.F, "cross_entropy", poisoned)


def interrupt_at_step(monkeypatch: pytest.MonkeyPatch, step: int) -> None:
    """Ctrl-C as training step `step` (1-based) begins."""
    real = loop_module.Run._train_step
    calls = {"n": 0}

    def interrupted(self: loop_module.Run, x: np.ndarray, y: np.ndarray) -> tuple[float, int, int]:
        calls["n"] += 1
        if calls["n"] == step:
            raise KeyboardInterrupt
        return real(self, x, y)

    monkeypatch.setattr(loop_module.Run, "_train_step", interrupted)


# == a new run never destroys an old one ==============================================================


@pytest.mark.parametrize("name", RUN_FILES)
def test_a_folder_that_holds_any_run_file_is_refused_by_a_new_run(corpus: Path, tmp_path: Path, name: str) -> None:
    out = tmp_path / "run"
    out.mkdir()
    (out / name).write_bytes(b"the old run's " + name.encode())
    before = contents(out)
    with pytest.raises(SeqgenError, match="already holds a run") as caught:
        train(tiny(corpus, out))
    assert "--resume" in str(caught.value) and "--overwrite" in str(caught.value) and name in str(caught.value)
    assert_one_line(seqgen_train("fit", corpus, "--out", out, "--no-progress"), "already holds a run", "--resume",
                    "--overwrite")
    with pytest.raises(SeqgenError, match="already holds a run") as caught:  # from Python: the keywords too
        fit_texts(NAMES, out, max_steps=2, progress=False)
    assert "resume=True" in str(caught.value) and "overwrite=True" in str(caught.value)
    assert contents(out) == before


def test_overwrite_and_resume_together_are_refused(finished: Path, corpus: Path) -> None:
    assert_one_line(seqgen_train("fit", "--resume", finished, "--overwrite"), "--resume", "--overwrite")


@pytest.mark.parametrize("failure", ["bad seed", "divergence at step 3", "ctrl-c at step 3"])
def test_a_run_that_fails_before_its_first_checkpoint_leaves_the_old_run_intact(
        finished: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch, failure: str) -> None:
    before = contents(finished)
    args = ["fit", corpus, "--out", finished, "--overwrite", "--no-progress", "--threads", "1", "--seq-len", "32",
            "--hidden", "16", "--layers", "1", "--max-steps", "20", "--eval-every", "10"]
    if failure == "bad seed":
        assert_one_line(seqgen_train(*args, "--seed", "-1"), "--seed", str(checks.SEED_MAX))
    elif failure.startswith("divergence"):
        nan_at_step(monkeypatch, 3)
        assert_one_line(seqgen_train(*args), "at step 3", "still holds the previous run, unchanged")
    else:
        interrupt_at_step(monkeypatch, 3)
        with pytest.raises(Interrupted, match=r"cannot be resumed.*still holds the previous run, unchanged"):
            train(tiny(corpus, finished, max_steps=20, eval_every=10), overwrite=True)
    assert contents(finished) == before
    assert seqgen.load(finished / "model.onnx").predict("the", 1)


def test_overwrite_replaces_the_old_run_only_at_the_new_runs_first_checkpoint(
        finished: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    old_model = (finished / "model.onnx").read_bytes()
    interrupt_at_step(monkeypatch, 4)  # after the checkpoint of step 2, before the first evaluation (step 5)
    with pytest.raises(Interrupted, match=r"--resume .* \(from its checkpoint at step 2\)"):
        train(tiny(corpus, finished, cell="lstm", max_steps=10, eval_every=5, checkpoint_every=2), overwrite=True)
    # the new run's checkpoint, and nothing of the old run: its weights can no longer pass for this run's
    assert sorted(p.name for p in finished.iterdir()) == [checkpoints.LATEST]
    assert torch.load(finished / checkpoints.LATEST, weights_only=True)["config"]["cell"] == "lstm"
    with pytest.raises(SeqgenError, match=r"best\.pt"):
        export_run(finished, finished.parent / "x.onnx")
    monkeypatch.undo()
    result = train(TrainConfig(out=str(finished), progress=False), resume=True)
    assert result.steps == 10
    assert [r["step"] for _, r in files.read_jsonl(finished / "metrics.jsonl") if "val_loss" in r] == [5, 10]
    assert seqgen.load(finished / "model.onnx").info["cell"] == "lstm"
    assert (finished / "model.onnx").read_bytes() != old_model


def test_metrics_logged_before_the_first_checkpoint_wait_for_it(finished: Path, corpus: Path) -> None:
    """Evaluations before the first checkpoint do not touch the old log; they are written with the checkpoint."""
    old_log = (finished / "metrics.jsonl").read_bytes()
    run = loop_module.Run(tiny(corpus, finished, max_steps=6, eval_every=2, checkpoint_every=6), overwrite=True)
    run.log({"step": 2, "val_loss": 1.0})
    assert (finished / "metrics.jsonl").read_bytes() == old_log
    run.save(checkpoints.LATEST)
    assert [r for _, r in files.read_jsonl(finished / "metrics.jsonl")] == [{"step": 2, "val_loss": 1.0}]
    assert not (finished / "best.pt").exists() and not (finished / "model.onnx").exists()


@pytest.mark.parametrize(("eval_every", "checkpoint_every", "nan_step", "says", "files_left"), [
    (10, 10, 3, "nothing was saved", []),
    (2, 10, 5, "keeps the best weights (step 4) (seqgen-train export", ["best.pt", "metrics.jsonl"]),
    (2, 2, 5, "keeps the last checkpoint (step 4) and the best weights (step 4)",
     ["best.pt", "checkpoint.pt", "metrics.jsonl"]),
])
def test_the_divergence_message_says_what_the_folder_really_holds(
        corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, eval_every: int, checkpoint_every: int,
        nan_step: int, says: str, files_left: list[str]) -> None:
    out = tmp_path / "run"
    nan_at_step(monkeypatch, nan_step)
    with pytest.raises(TrainingDiverged) as caught:
        train(tiny(corpus, out, max_steps=20, eval_every=eval_every, checkpoint_every=checkpoint_every))
    assert says in str(caught.value), str(caught.value)
    assert sorted(p.name for p in out.iterdir()) == files_left


def test_a_run_too_large_for_the_memory_is_one_line_naming_the_sizes(tmp_path: Path) -> None:
    """Each size within its limit, but one step's activations (13 GB at embedding 60,000) beyond the memory the
    process may have: torch's refused allocation becomes a usage error, not a traceback."""
    import resource
    import subprocess
    import sys

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (6 * 2**30, 6 * 2**30))

    corpus = tmp_path / "cat.txt"  # enough text for full batches of 64 sequences of 128 characters
    corpus.write_text("the cat sat on the mat. " * 2000, encoding="utf-8")
    done = subprocess.run([str(Path(sys.executable).parent / "seqgen-train"), "fit", str(corpus), "--out",
                           str(tmp_path / "run"), "--embedding", "60000", "--hidden", "16", "--layers", "1",
                           "--max-steps", "2", "--threads", "1", "--no-progress"],
                          capture_output=True, text=True, timeout=300, preexec_fn=limit_memory)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("Error: training ran out of memory: choose a smaller --batch-size")
    assert len(done.stderr.splitlines()) == 1 and "nothing was saved" in done.stderr


# == commands never write over what they did not make =================================================


def test_export_never_replaces_a_file_that_is_not_a_seqgen_model(finished: Path, tmp_path: Path) -> None:
    notes = tmp_path / "notes.onnx"
    notes.write_text("my notes, not a model", encoding="utf-8")
    for args in ([], ["--quantize", "int8"]):
        assert_one_line(seqgen_train("export", finished, "--out", notes, *args), str(notes),
                        "is not a seqgen model")
    assert notes.read_text(encoding="utf-8") == "my notes, not a model"
    # a checkpoint given as --out is not replaced by a model either
    best = (finished / "best.pt").read_bytes()
    assert_one_line(seqgen_train("export", finished / "best.pt", "--out", finished / "best.pt"), "best.pt")
    assert (finished / "best.pt").read_bytes() == best
    # an earlier export is replaced, as asked
    again = tmp_path / "again.onnx"
    again.write_bytes((finished / "model.onnx").read_bytes())
    assert seqgen_train("export", finished, "--out", again).exit_code == 0


def test_export_into_a_folder_where_a_run_still_trains_is_refused(finished: Path, tmp_path: Path) -> None:
    """An export into a folder that a training process holds was written over by that run's own model.onnx
    (or wrote over it) when the run ended; it is refused, as a resume into that folder is."""
    import fcntl

    busy = tmp_path / "busy"
    busy.mkdir()
    held = os.open(busy, os.O_RDONLY)  # as a training process holds its folder
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        for args in ([], ["--quantize", "int8"]):
            assert_one_line(seqgen_train("export", finished, "--out", busy / "model.onnx", *args), str(busy),
                            "in use by another seqgen-train process")
        assert list(busy.iterdir()) == []
    finally:
        os.close(held)
    assert seqgen_train("export", finished, "--out", busy / "model.onnx").exit_code == 0  # free again: written


@pytest.mark.parametrize("kind", ["folder", "fifo", "link to /dev/full"])
def test_nothing_is_written_over_what_is_not_a_regular_file(finished: Path, tmp_path: Path, kind: str) -> None:
    target = tmp_path / "target"
    if kind == "folder":
        target.mkdir()
    elif kind == "fifo":
        os.mkfifo(target)
    else:
        target.symlink_to("/dev/full")
    said = "is a directory" if kind == "folder" else "not a regular file"  # click's own check finds folders
    for command in (["export", finished, "--out", target], ["plot", finished, "--out", target]):
        assert_one_line(seqgen_train(*command), str(target), said)
    with pytest.raises(files.CannotWrite, match="not a regular file"):
        files.atomic_write(target, b"x")
    assert os.path.lexists(target) and not target.is_file()


def test_plot_never_replaces_a_file_that_is_not_a_png(finished: Path, tmp_path: Path) -> None:
    essay = tmp_path / "essay.png"
    essay.write_text("an essay", encoding="utf-8")
    assert_one_line(seqgen_train("plot", finished, "--out", essay), "is not a PNG image")
    assert essay.read_text(encoding="utf-8") == "an essay"
    assert seqgen_train("plot", finished, "--out", finished / "loss.png").exit_code == 0  # its own plot: redrawn


@pytest.mark.parametrize(("error", "words"), [
    (OSError(errno.ENOSPC, "No space left on device"), ["No space left on device", "free some space"]),
    (PermissionError(errno.EACCES, "Permission denied"), ["Permission denied", "may write to"]),
    (OSError(errno.EROFS, "Read-only file system"), ["Read-only file system"]),
])
def test_a_failed_write_is_one_line_naming_the_file(finished: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch, error: OSError,
                                                     words: list[str]) -> None:
    def fails(*args: object, **kwargs: object) -> tuple[int, str]:
        raise error

    monkeypatch.setattr(files.tempfile, "mkstemp", fails)
    target = tmp_path / "out" / "model.onnx"
    assert_one_line(seqgen_train("export", finished, "--out", target), str(target), *words)
    assert_one_line(seqgen_train("plot", finished, "--out", tmp_path / "loss.png"), "loss.png", *words)
    with pytest.raises(OSError):  # still an OSError for Python callers
        files.atomic_write(target, b"x")
    assert not target.exists()


def test_a_full_disk_mid_write_is_one_line_and_leaves_no_temporary_file(
        finished: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_fdopen = os.fdopen

    class Full:
        def __init__(self, handle: object) -> None:
            self.handle = handle

        def __enter__(self) -> Full:
            return self

        def __exit__(self, *exc: object) -> None:
            self.handle.close()  # type: ignore[attr-defined]

        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(files.os, "fdopen", lambda fd, mode: Full(real_fdopen(fd, mode)))
    assert_one_line(seqgen_train("export", finished, "--out", tmp_path / "m.onnx"), "No space left on device")
    assert list(tmp_path.iterdir()) == [finished]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_export_into_a_read_only_folder_is_one_line(finished: Path, tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert_one_line(seqgen_train("export", finished, "--out", locked / "m.onnx"), "Permission denied")
    finally:
        locked.chmod(0o700)


# == line items: memory by their characters ===========================================================


def test_a_line_item_longer_than_the_maximum_is_refused_naming_its_line(tmp_path: Path) -> None:
    corpus = tmp_path / "names.txt"
    lines = [*NAMES * 100, "x" * 20_000, *NAMES]
    corpus.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(SeqgenError, match=f"line item {len(NAMES) * 100 + 1} has 20,000 characters"):
        build_dataset(TrainConfig(corpus=[str(corpus)], lines=True))
    assert_one_line(seqgen_train("fit", corpus, "--lines", "--out", tmp_path / "run"), "20,000 characters",
                    f"{MAX_ITEM_CHARS:,}", "running text")
    assert not (tmp_path / "run").exists()
    item_dataset([*NAMES, "y" * MAX_ITEM_CHARS], seed=1)  # the maximum itself is fine


def test_training_items_cost_their_characters_and_each_batch_is_as_wide_as_its_longest_item() -> None:
    rng = np.random.default_rng(0)
    items = [str(rng.choice(NAMES)) for _ in range(2000)] + ["z" * MAX_ITEM_CHARS]
    data = item_dataset(items, seed=5)
    chars = sum(map(len, items))
    stored = sum(a.nbytes for a in vars(data.train).values() if isinstance(a, np.ndarray))
    assert stored < 8 * (chars + 2 * len(items)) + 1024  # int64 ids and offsets, not items x longest
    widths = []
    for x, y in batches(data.train, 64, seed=5, epoch=0):
        lengths = (y != -1).sum(axis=1)  # characters + the end of the item
        assert x.shape == y.shape == (64, lengths.max())
        widths.append(x.shape[1])
    assert max(widths) == MAX_ITEM_CHARS + 1 and sorted(widths)[len(widths) // 2] < 10


def test_items_stored_end_to_end_give_exactly_the_batches_of_padded_items() -> None:
    """The shipped names model's batches are unchanged: a batch of items is what padding all of them to the
    longest and trimming the batch gave before."""
    rng = np.random.default_rng(1)
    encoded = [rng.integers(1, 30, size=int(rng.integers(1, 16))) for _ in range(500)]
    stored, padded = Items.of(encoded), line_items(encoded)
    for seed in range(3):
        for (x1, y1), (x2, y2) in zip(batches(stored, 32, seed=seed, epoch=seed),
                                      batches(padded, 32, seed=seed, epoch=seed), strict=True):
            assert np.array_equal(x1, x2) and np.array_equal(y1, y2) and x1.dtype == x2.dtype


def test_a_batch_with_one_long_item_is_split_by_length_and_gives_the_same_step(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """One long item among short ones: the step runs in groups of similar length (memory by characters), and
    its loss, accuracy and gradients are those of the whole batch at once."""
    items = [*NAMES * 4, "q" * MAX_ITEM_CHARS]
    data = item_dataset(items, seed=1)
    x, y = data.train.rows(np.arange(len(data.train)))
    pieces = length_groups(x, y)
    needed = sum(int(np.flatnonzero(row != -1)[-1]) + 1 for row in y)
    assert len(pieces) > 1 and x.size > 10 * needed
    assert max(px.size for px, _ in pieces) <= max(GROUP_FLOOR, 2 * needed)
    assert sum(len(px) for px, _ in pieces) == len(x)
    first = item_dataset(NAMES * 5, seed=1).train.rows(np.arange(64))
    assert len(length_groups(*first)) == 1 and length_groups(*first)[0][0] is first[0]  # ordinary batches: as is

    def step(split: bool) -> tuple[tuple[float, int, int], list[torch.Tensor]]:
        if not split:
            monkeypatch.setattr(loop_module, "length_groups", lambda x, y: [(x, y)])
        run = loop_module.Run(TrainConfig(out=str(tmp_path / str(split)), cell="lstm", layers=1, hidden=16,
                                          embedding=8, grad_clip=1e9, device="cpu", threads=1), dataset=data)
        figures = run._train_step(x, y)
        monkeypatch.undo()
        return figures, [p.grad.clone() for p in run.model.parameters()]

    (split_figures, split_grads), (whole_figures, whole_grads) = step(True), step(False)
    assert split_figures[1:] == whole_figures[1:] and split_figures[0] == pytest.approx(whole_figures[0], rel=1e-5)
    for a, b in zip(split_grads, whole_grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6)


def test_evaluation_batches_hold_at_most_eval_tokens_positions(monkeypatch: pytest.MonkeyPatch) -> None:
    from seqgen.train.models import CharRNN

    rng = np.random.default_rng(2)
    items = [rng.integers(1, 5, size=int(rng.integers(1, 8))) for _ in range(199)] + [np.ones(MAX_ITEM_CHARS, int)]
    examples = line_items(items)
    model = CharRNN(5, "gru", 4, 8, 1)
    shapes: list[tuple[int, ...]] = []
    real = model.forward

    def recorded(x: torch.Tensor, *args: object) -> object:
        shapes.append(tuple(x.shape))
        return real(x, *args)

    monkeypatch.setattr(model, "forward", recorded)
    loss, _ = loss_and_accuracy(model, examples, torch.device("cpu"))
    assert max(rows * width for rows, width in shapes) <= EVAL_TOKENS
    assert sum(rows for rows, _ in shapes) == len(items) and np.isfinite(loss)


# == numbers ==========================================================================================


@pytest.mark.parametrize(("option", "value"), [
    ("seed", -1), ("seed", 2**70), ("seed", 1.5), ("seed", True), ("seed", None), ("layers", True),
    ("hidden", 64.0), ("batch_size", "8"), ("max_steps", 2.0), ("epochs", False), ("threads", 1.0),
    ("samples", 10**6), ("layers", 65), ("lr", float("inf")), ("dropout", float("nan")), ("lines", "false"),
    ("progress", 1), ("forget_bias", 1e39), ("forget_bias", -1e308),
])
def test_numbers_and_flags_of_a_config_follow_the_one_rule(option: str, value: object) -> None:
    with pytest.raises(SeqgenError, match="--" + option.replace("_", "-")):
        TrainConfig(**{option: value})


def test_numpy_numbers_are_accepted_and_stored_as_plain_ones(tmp_path: Path) -> None:
    config = TrainConfig(seed=np.uint64(checks.SEED_MAX), hidden=np.int32(8), lr=np.float32(0.01), out=tmp_path)
    assert type(config.seed) is int and config.seed == checks.SEED_MAX
    assert type(config.hidden) is int and type(config.lr) is float and config.out == str(tmp_path)


def test_the_largest_seed_trains_and_samples(tmp_path: Path) -> None:
    result = fit_texts(NAMES, tmp_path / "run", seed=checks.SEED_MAX, hidden=8, embedding=4, layers=1,
                       max_steps=2, eval_every=2, samples=2, progress=True, device="cpu", threads=1)
    assert result.steps == 2


@pytest.mark.parametrize("value", ["-1", str(2**70)])
def test_seqgen_train_refuses_a_seed_out_of_range(corpus: Path, tmp_path: Path, value: str) -> None:
    assert_one_line(seqgen_train("fit", corpus, "--out", tmp_path / "run", "--seed", value), "--seed",
                    f"[0, {checks.SEED_MAX}]")
    assert not (tmp_path / "run").exists()


def test_more_threads_than_the_machine_can_use_are_refused_naming_the_limit(corpus: Path, tmp_path: Path) -> None:
    limit = usable_cpus()
    with pytest.raises(SeqgenError, match=rf"--threads must be an integer in \[1, {limit}\], got {limit + 1}"):
        train(tiny(corpus, tmp_path / "run", threads=limit + 1))
    assert_one_line(seqgen_train("fit", corpus, "--out", tmp_path / "run", "--threads", 100_000), "--threads",
                    f"[1, {limit}]")
    assert not (tmp_path / "run").exists()


# == malformed checkpoints ============================================================================


def malformed(saved: dict[str, object], damage: str) -> dict[str, object]:
    if damage == "format only":
        return {"format": 1}
    edits: dict[str, dict[str, object]] = {
        "step is text": {"step": "4"},
        "step is a bool": {"step": True},
        "best_val is text": {"best_val": "low"},
        "config is a list": {"config": [1, 2]},
        "config has text for a size": {"config": {**saved["config"], "hidden": "16"}},  # type: ignore[dict-item]
        "vocab is not JSON": {"vocab": "{"},
        "corpus lacks its name": {"corpus": {"sha256": "", "line_items": False}},
        "model holds numbers": {"model": {"embedding.weight": 3}},
        "rngs are text": {"rngs": ["cpu"]},
    }
    return {**saved, **edits[damage]}


DAMAGES = ["format only", "step is text", "step is a bool", "best_val is text", "config is a list",
           "config has text for a size", "vocab is not JSON", "corpus lacks its name", "model holds numbers",
           "rngs are text"]


@pytest.mark.parametrize("damage", DAMAGES)
def test_a_malformed_checkpoint_is_one_clear_error_for_resume_and_export(
        finished: Path, tmp_path: Path, damage: str) -> None:
    for name in (checkpoints.LATEST, checkpoints.BEST):
        saved = torch.load(finished / name, weights_only=True)
        torch.save(malformed(saved, damage), finished / name)
    with pytest.raises(SeqgenError, match="damaged or not a seqgen checkpoint"):
        checkpoints.load_run(finished / checkpoints.LATEST)
    assert_one_line(seqgen_train("fit", "--resume", finished, "--no-progress"), "checkpoint.pt", "damaged")
    assert_one_line(seqgen_train("export", finished, "--out", tmp_path / "m.onnx"), "best.pt", "damaged")


def test_weights_that_do_not_fit_the_saved_config_are_one_clear_error(finished: Path, tmp_path: Path) -> None:
    saved = torch.load(finished / checkpoints.BEST, weights_only=True)
    saved["config"]["hidden"] = 32  # the weights are 16 wide
    torch.save(saved, finished / checkpoints.BEST)
    assert_one_line(seqgen_train("export", finished, "--out", tmp_path / "m.onnx"), "best.pt", "does not fit")


# == logs and write errors as an editing user leaves them (second review) =============================


def test_a_refused_write_reads_as_its_message_not_a_tuple(finished: Path, tmp_path: Path) -> None:
    target = tmp_path / "fifo.png"
    os.mkfifo(target)
    result = seqgen_train("plot", finished, "--out", target)
    assert_one_line(result, str(target), "not a regular file")
    assert result.stderr.startswith(f"Error: {target} exists"), result.stderr
    refused = files.CannotWrite(errno.EEXIST, "the message")
    assert (str(refused), refused.errno, refused.strerror) == ("the message", errno.EEXIST, "the message")


ODD_RECORDS = ['{"step": 1' + "0" * 400 + ', "elapsed": 1, "train_loss": 1}',
               '{"step": 1e308, "elapsed": 1e308, "train_loss": 1e308}',
               '{"step": -1e308, "elapsed": -1e308, "train_loss": -1e308}',
               '{"step": true, "elapsed": false, "train_loss": true}',
               '{"step": "x", "elapsed": 1, "train_loss": 1}',
               "[" * 100_000 + "]" * 100_000]


def test_plot_passes_over_records_with_numbers_it_cannot_draw(finished: Path) -> None:
    metrics = finished / "metrics.jsonl"
    with metrics.open("a", encoding="utf-8") as handle:
        handle.write("".join(line + "\n" for line in ODD_RECORDS))
    assert seqgen_train("plot", finished).exit_code == 0
    metrics.write_text("".join(line + "\n" for line in ODD_RECORDS), encoding="utf-8")
    assert_one_line(seqgen_train("plot", finished), "holds no record with a finite step")
    metrics.write_text("\n", encoding="utf-8")
    assert_one_line(seqgen_train("plot", finished), "is empty; the run has not logged")


def test_resume_drops_edited_records_it_cannot_order(finished: Path) -> None:
    metrics = finished / "metrics.jsonl"
    good = metrics.read_text(encoding="utf-8")
    metrics.write_text(good + "".join(line + "\n" for line in ODD_RECORDS), encoding="utf-8")
    result = seqgen_train("fit", "--resume", finished, "--max-steps", 9, "--no-progress")
    assert result.exit_code == 0, result.output
    kept = metrics.read_text(encoding="utf-8")
    assert kept.startswith(good) and not any(line in kept for line in ODD_RECORDS)
