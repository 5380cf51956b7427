"""Exact resume: a run stopped (by a limit, an exception or SIGKILL) and resumed ends with the same weights,
bit for bit, as a run that was never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from seqgen.errors import SeqgenError
from seqgen.train import TrainConfig, train
from seqgen.train.cli import main as train_cli
from seqgen.train.loop import Run

torch.set_num_threads(1)

WORDS = ["to", "be", "or", "not", "that", "is", "the", "question", "whether", "tis", "nobler", "in", "mind",
         "suffer", "slings", "and", "arrows", "of", "outrageous", "fortune"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(1)
    text = " ".join(str(w) for w in rng.choice(WORDS, size=700))[:3000]
    path = tmp_path_factory.mktemp("corpus") / "hamlet.txt"
    path.write_text(text, encoding="utf-8")
    return path


def config(corpus: Path, out: Path, **options: object) -> TrainConfig:
    """Two layers so dropout (between layers) draws random numbers that a resume must reproduce."""
    base: dict[str, object] = {"corpus": [str(corpus)], "out": str(out), "cell": "lstm", "layers": 2, "hidden": 24,
                               "embedding": 8, "dropout": 0.3, "seq_len": 32, "batch_size": 8, "lr": 1e-2,
                               "warmup_steps": 3, "eval_every": 4, "samples": 0, "progress": False,
                               "device": "cpu", "threads": 1, "seed": 11}
    return TrainConfig(**{**base, **options})


def checkpoint(run: Path, name: str = "checkpoint.pt") -> dict[str, object]:
    return torch.load(run / name, map_location="cpu", weights_only=True)


def assert_same_weights(a: Path, b: Path) -> None:
    """The two runs' final checkpoints hold bit-identical weights and optimiser state at the same position."""
    first, second = checkpoint(a), checkpoint(b)
    for key in ("step", "epoch", "batch_in_epoch", "best_step", "best_val"):
        assert first[key] == second[key], key
    assert first["model"].keys() == second["model"].keys()
    for name, tensor in first["model"].items():
        assert torch.equal(tensor, second["model"][name]), f"weights {name} differ"
    for index, state in first["optimizer"]["state"].items():
        for key, value in state.items():
            assert torch.equal(value, second["optimizer"]["state"][index][key]), f"optimizer {index}.{key} differs"
    assert len(first["rngs"]) == len(second["rngs"]) == 1
    assert torch.equal(first["rngs"][0][0], second["rngs"][0][0])


def val_losses(run: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    return [(r["step"], r["val_loss"]) for r in rows if "val_loss" in r]


@pytest.mark.parametrize("output_dropout", [0.0, 0.4])
def test_a_run_stopped_by_max_steps_and_resumed_ends_as_an_uninterrupted_one(corpus: Path, tmp_path: Path,
                                                                            output_dropout: float) -> None:
    # a constant schedule (after warm-up): a cosine decay is scaled to the run's length, which max_steps changes
    options = {"schedule": "constant", "output_dropout": output_dropout}
    whole = train(config(corpus, tmp_path / "whole", max_steps=16, **options))
    half = train(config(corpus, tmp_path / "split", max_steps=8, **options))
    assert half.steps == 8 and half.stopped == "max steps"
    assert checkpoint(tmp_path / "split")["step"] == 8
    resumed = train(TrainConfig(out=str(tmp_path / "split"), max_steps=16), resume=True)
    assert resumed.steps == whole.steps == 16
    assert_same_weights(tmp_path / "whole", tmp_path / "split")
    assert val_losses(tmp_path / "split") == val_losses(tmp_path / "whole")
    assert resumed.best_val_loss == whole.best_val_loss
    assert (tmp_path / "split" / "model.onnx").read_bytes() != b""


def test_an_interrupted_cosine_run_resumed_across_an_epoch_boundary_ends_the_same(
        corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    options = {"cell": "gru", "epochs": 2, "eval_every": 5}  # 10 steps an epoch: checkpoints at 5, 10, 15
    whole = train(config(corpus, tmp_path / "whole", **options))
    assert whole.steps == 20 and whole.stopped == "epochs"

    real_step, taken = Run._train_step, []

    def interrupted(self: Run, x: np.ndarray, y: np.ndarray) -> tuple[float, int, int]:
        if len(taken) == 13:
            raise KeyboardInterrupt  # Ctrl-C during step 14: the last checkpoint is step 10's, at the epoch's end
        taken.append(1)
        return real_step(self, x, y)

    monkeypatch.setattr(Run, "_train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(config(corpus, tmp_path / "split", **options))
    monkeypatch.undo()
    saved = checkpoint(tmp_path / "split")
    assert saved["step"] == 10 and saved["epoch"] == 0 and saved["batch_in_epoch"] == 10
    assert max(step for step, _ in val_losses(tmp_path / "split")) == 10

    resumed = train(TrainConfig(out=str(tmp_path / "split")), resume=True)
    assert resumed.steps == 20 and resumed.stopped == "epochs"
    assert_same_weights(tmp_path / "whole", tmp_path / "split")
    assert val_losses(tmp_path / "split") == val_losses(tmp_path / "whole")  # no duplicated or stale rows


def test_a_run_killed_with_sigkill_resumes_to_the_same_weights(corpus: Path, tmp_path: Path) -> None:
    options = ["--cell", "gru", "--layers", "2", "--hidden", "24", "--embedding", "8", "--dropout", "0.3",
               "--seq-len", "32", "--batch-size", "8", "--lr", "0.01", "--warmup-steps", "3", "--max-steps", "60",
               "--eval-every", "10", "--samples", "0", "--device", "cpu", "--threads", "1", "--seed", "5",
               "--no-progress"]
    killed = tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen([str(Path(sys.executable).parent / "seqgen-train"), "fit", str(corpus),
                                "--out", str(killed), "--checkpoint-every", "1", *options],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        deadline = time.monotonic() + 120
        # the first evaluation (step 10) has been logged: checkpoints exist and the run is well under way
        while not (killed / "metrics.jsonl").exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode() if process.stderr else ""
    at_kill = checkpoint(killed)["step"]
    assert 9 <= at_kill < 60, "the run should have been killed part-way"  # step 10 logs before it checkpoints
    assert not (killed / "model.onnx").exists()

    runner = CliRunner()
    resumed = runner.invoke(train_cli, ["fit", "--resume", str(killed)])
    assert resumed.exit_code == 0, resumed.output
    report = json.loads(resumed.stdout)
    assert report["steps"] == 60 and report["stopped"] == "max steps"

    whole = runner.invoke(train_cli, ["fit", str(corpus), "--out", str(tmp_path / "whole"), *options])
    assert whole.exit_code == 0, whole.output
    assert_same_weights(tmp_path / "whole", killed)
    assert val_losses(killed) == val_losses(tmp_path / "whole")


@pytest.mark.parametrize("rank", [1, 2])
def test_each_torchrun_rank_resumes_its_own_generator(rank: int, corpus: Path, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Rank r takes rngs[r] from a checkpoint; a rank the checkpoint did not have starts a stream of its own."""
    from seqgen.train import loop

    out = tmp_path / "run"
    train(config(corpus, out, max_steps=2, eval_every=2))
    saved = checkpoint(out)
    streams = [torch.Generator().manual_seed(100 + i).get_state() for i in range(2)]
    saved["rngs"] = [(state, None) for state in streams]
    torch.save(saved, out / "checkpoint.pt")
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", str(rank))
    monkeypatch.setattr(loop.nn.parallel, "DistributedDataParallel", lambda model: model)
    Run(TrainConfig(out=str(out)), resume=True)
    expected = streams[rank] if rank < 2 else torch.Generator().manual_seed(loop.rank_seed(11 + 2, rank)).get_state()
    assert torch.equal(torch.get_rng_state(), expected)


def test_resume_keeps_the_saved_options_but_takes_new_limits(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(config(corpus, out, max_steps=4, eval_every=2))
    result = train(TrainConfig(out=str(out), max_steps=6, cell="gru", hidden=99), resume=True)
    assert result.steps == 6
    saved = checkpoint(out)
    assert saved["config"]["cell"] == "lstm" and saved["config"]["hidden"] == 24 and saved["config"]["max_steps"] == 6


def test_a_resume_that_takes_no_step_reports_the_runs_figures(corpus: Path, tmp_path: Path) -> None:
    """Resumed with a limit already reached, the run reported a training accuracy of 0.0: it was not saved."""
    out = tmp_path / "run"
    first = train(config(corpus, out, max_steps=4, eval_every=4))
    assert first.train_accuracy > 0
    again = train(TrainConfig(out=str(out), max_steps=2), resume=True)
    assert again.steps == 4 and again.train_accuracy == first.train_accuracy
    assert again.best_val_loss == first.best_val_loss


@pytest.mark.skipif(sys.platform == "win32", reason="flock is POSIX")
def test_a_run_folder_in_use_by_another_process_is_refused_unchanged(corpus: Path, tmp_path: Path) -> None:
    """A resume started while the run still trained (or an --overwrite of it) trimmed its log and wrote its
    checkpoints between the running one's: both runs' files were interleaved."""
    import fcntl

    out = tmp_path / "run"
    train(config(corpus, out, max_steps=4, eval_every=2))
    before = {name: (out / name).read_bytes() for name in ("checkpoint.pt", "metrics.jsonl")}
    held = os.open(out, os.O_RDONLY)  # as a training process holds its folder
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(SeqgenError, match="in use"):
            train(TrainConfig(out=str(out), max_steps=6), resume=True)
        with pytest.raises(SeqgenError, match="in use"):
            train(config(corpus, out, max_steps=2), overwrite=True)
        assert {name: (out / name).read_bytes() for name in before} == before
    finally:
        os.close(held)
    assert train(TrainConfig(out=str(out), max_steps=6), resume=True).steps == 6


def test_resume_cli_refuses_another_out_folder(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train(config(corpus, out, max_steps=2, eval_every=2))
    result = CliRunner().invoke(train_cli, ["fit", "--resume", str(out), "--out", str(tmp_path / "elsewhere")])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ") and "--out" in result.stderr and len(result.stderr.splitlines()) == 1


def test_a_run_resumes_on_another_device_when_asked(corpus: Path, tmp_path: Path) -> None:
    """A run made on a GPU machine (its checkpoint says --device cuda) continues on a CPU with --device cpu."""
    out = tmp_path / "run"
    train(config(corpus, out, max_steps=2, eval_every=2))
    state = checkpoint(out)
    state["config"]["device"] = "cuda"
    torch.save(state, out / "checkpoint.pt")
    if not torch.cuda.is_available():
        failed = CliRunner().invoke(train_cli, ["fit", "--resume", str(out), "--max-steps", "4"])
        assert failed.exit_code == 2 and "--device cpu" in failed.stderr
    resumed = CliRunner().invoke(train_cli, ["fit", "--resume", str(out), "--max-steps", "4", "--device", "cpu"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout)["steps"] == 4 and checkpoint(out)["config"]["device"] == "cpu"


def test_an_export_records_the_config_as_read_today(tmp_path: Path) -> None:
    """A preset or line-item run saved before seq_len could be unset holds 128, which never applied to it; its
    export copied that into the model's metadata instead of the config the run is read as."""
    from seqgen import modelfile
    from seqgen.train import checkpoint as checkpoints
    from seqgen.train.export import export_run

    out = tmp_path / "run"
    train(TrainConfig(preset="alphabet-next", out=str(out), hidden=8, embedding=4, max_steps=2, eval_every=1,
                      samples=0, progress=False, device="cpu", threads=1))
    saved = checkpoint(out, "best.pt")
    checkpoints.save(out / "best.pt", {**saved, "config": {**saved["config"], "seq_len": 128}})
    export_run(out, tmp_path / "m.onnx")
    assert modelfile.read(tmp_path / "m.onnx").info["training"]["config"]["seq_len"] is None
