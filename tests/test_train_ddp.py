"""Two CPU processes under torchrun (gloo): each trains on its own share of the batches with its own dropout
masks, and both end with identical weights; rank 0 alone writes the run's files."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from seqgen.errors import SeqgenError
from seqgen.train import fit_texts, loop

torch.set_num_threads(1)

SCRIPT = textwrap.dedent('''
    """Train through seqgen.train.train under torchrun; save this rank's weights and what it saw."""
    import hashlib
    import json
    import os
    import sys

    import torch

    from seqgen.train import TrainConfig, train
    from seqgen.train.loop import Run

    corpus, out, dest = sys.argv[1:4]
    rank = int(os.environ["RANK"])
    seen, models, rngs = [], [], []
    real_step, real_finish = Run._train_step, Run._finish

    def train_step(self, x, y):
        seen.append(hashlib.sha256(x.tobytes()).hexdigest())
        return real_step(self, x, y)

    def finish(self, stopped):
        models.append({k: v.detach().clone() for k, v in self.model.state_dict().items()})
        rngs.append(hashlib.sha256(torch.get_rng_state().numpy().tobytes()).hexdigest())  # as saved next
        return real_finish(self, stopped)

    Run._train_step, Run._finish = train_step, finish
    config = TrainConfig(corpus=[corpus], out=os.path.join(out, f"rank{rank}"), cell="lstm", layers=2, hidden=16,
                         embedding=8, dropout=0.2, seq_len=16, batch_size=4, lr=0.01, warmup_steps=2, max_steps=12,
                         eval_every=4, samples=0, progress=False, device="cpu", threads=1, seed=3)
    result = train(config)
    torch.save(models[0], os.path.join(dest, f"weights{rank}.pt"))
    with open(os.path.join(dest, f"report{rank}.json"), "w") as handle:
        json.dump({"world": int(os.environ["WORLD_SIZE"]), "steps": result.steps, "stopped": result.stopped,
                   "best_val_loss": result.best_val_loss, "batches": seen, "rng": rngs[0],
                   "model": str(result.model_path) if result.model_path else None}, handle)
''')


def test_two_processes_under_torchrun_end_with_identical_weights(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    corpus = tmp_path / "greek.txt"
    corpus.write_text(" ".join(str(w) for w in rng.choice(words, size=400)), encoding="utf-8")
    script = tmp_path / "ddp_train.py"
    script.write_text(SCRIPT, encoding="utf-8")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone", str(script),
         str(corpus), str(tmp_path / "runs"), str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=240)
    assert done.returncode == 0, done.stderr[-4000:]

    reports = [json.loads((tmp_path / f"report{rank}.json").read_text()) for rank in (0, 1)]
    assert [r["world"] for r in reports] == [2, 2]
    assert [r["steps"] for r in reports] == [12, 12] and {r["stopped"] for r in reports} == {"max steps"}
    # each rank trained on its own share of every step's batches ...
    assert len(reports[0]["batches"]) == len(reports[1]["batches"]) == 12
    assert all(a != b for a, b in zip(reports[0]["batches"], reports[1]["batches"]))
    # ... and the gradients were averaged: both hold the same weights, bit for bit
    first, second = (torch.load(tmp_path / f"weights{rank}.pt", weights_only=True) for rank in (0, 1))
    assert first.keys() == second.keys()
    for name in first:
        assert torch.equal(first[name], second[name]), f"{name} differs between the ranks"
    # the ranks agree on the evaluation too, and rank 0 alone wrote the run's files
    assert reports[0]["best_val_loss"] == reports[1]["best_val_loss"]
    assert reports[0]["model"] is not None and reports[1]["model"] is None
    assert not (tmp_path / "runs" / "rank1").exists()
    run = tmp_path / "runs" / "rank0"
    saved = torch.load(run / "checkpoint.pt", weights_only=True)
    assert saved["step"] == 12
    for name in first:
        assert torch.equal(first[name], saved["model"][name])
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "val_loss" in r] == [4, 8, 12]
    # each rank drew its own dropout masks, and the checkpoint keeps every rank's generator for a resume
    assert reports[0]["rng"] != reports[1]["rng"]
    saved_rngs = [hashlib.sha256(cpu.numpy().tobytes()).hexdigest() for cpu, _ in saved["rngs"]]
    assert saved_rngs == [r["rng"] for r in reports]


def test_distributed_training_needs_more_examples_than_processes(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """What a rank does before its first collective: too little data for the world is one clear error."""
    monkeypatch.setenv("WORLD_SIZE", "64")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setattr(loop.torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(loop.torch.distributed, "destroy_process_group", lambda: None)
    monkeypatch.setattr(loop.nn.parallel, "DistributedDataParallel", lambda model: model)
    with pytest.raises(SeqgenError, match="fewer examples than the 64 processes"):
        fit_texts(["ab", "cd", "ef", "gh"], tmp_path / "run", layers=1, hidden=4, embedding=4, progress=False,
                  device="cpu", samples=0)


@pytest.mark.parametrize("asked", ["auto", "cuda"])
def test_each_torchrun_process_takes_the_gpu_of_its_local_rank(asked: str, monkeypatch: pytest.MonkeyPatch) -> None:
    chosen: list[torch.device] = []
    monkeypatch.setattr(loop.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(loop.torch.cuda, "set_device", chosen.append)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert loop.pick_device(asked) == torch.device("cuda", 1)
    assert chosen == [torch.device("cuda", 1)]
    monkeypatch.delenv("LOCAL_RANK")
    assert loop.pick_device(asked) == torch.device("cuda", 0)


def test_asking_for_a_missing_gpu_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loop.torch.cuda, "is_available", lambda: False)
    with pytest.raises(SeqgenError, match="no CUDA GPU"):
        loop.pick_device("cuda")
