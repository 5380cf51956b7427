"""The training loop: AdamW with warm-up and cosine decay, evaluation, early stopping, exact resume.

`train(config)` runs one training run in `config.out` (metrics.jsonl, checkpoint.pt, best.pt,
model.onnx). Under torchrun it trains with DistributedDataParallel; rank 0 alone writes files.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from seqgen import checks
from seqgen.errors import SeqgenError
from seqgen.vocab import BOUNDARY, Vocabulary

from . import checkpoint, runfolder
from .config import RESUME_OPTIONS, TEXT_ONLY_LENGTH, TEXT_ONLY_SPLIT, TrainConfig, usable_cpus
from .data import (
    IGNORE,
    IN_MEMORY,
    Dataset,
    Examples,
    batches,
    build_dataset,
    item_dataset,
    length_groups,
    pairs,
    steps_per_epoch,
    texts_sha256,
)
from .export import export_run
from .files import append_line, atomic_write, finite_number, read_jsonl
from .models import CharRNN

DEFAULT_EPOCHS = 10
EVAL_BATCH = 256
EVAL_TOKENS = EVAL_BATCH * 128
"""An evaluation batch holds at most this many positions (EVAL_BATCH sequences of the default --seq-len),
so its memory is bounded however wide the examples are (fewer rows per batch when they are wider)."""


class TrainingDiverged(SeqgenError):
    """The loss became NaN or exploded; the weights of that step are not saved, earlier checkpoints are kept."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run; the message says what the run folder holds and how to go on."""


@dataclass
class Result:
    """What a finished run reports."""

    out: Path
    steps: int
    best_val_loss: float
    best_val_accuracy: float
    train_accuracy: float
    stopped: str
    seconds: float
    model_path: Path | None


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if torch.backends.mps.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise SeqgenError("--device cuda asked for, but torch sees no CUDA GPU; use --device cpu")
        # one GPU per process under torchrun (explicit --device cuda too, not only auto); NCCL needs it current
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
        return device
    if name == "mps" and not torch.backends.mps.is_available():
        raise SeqgenError("--device mps asked for, but this torch has no MPS; use --device cpu")
    return torch.device(name)


def check_bf16(model: CharRNN, device: torch.device) -> None:
    """Refuse bf16 autocast where torch has no bf16 kernel for the cell (oneDNN's LSTM on CPUs without
    AVX512-BF16/AMX fails deep inside the first step); one token through the model finds out."""
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16):
            model(torch.zeros(1, 1, dtype=torch.long, device=device))
    except RuntimeError as exc:
        raise SeqgenError(f"--precision bf16: torch has no bf16 kernel for this {model.cell} on this machine "
                          f"({str(exc).splitlines()[0][:80]}); use --precision fp32") from None


def learning_rate(config: TrainConfig, step: int, progress: float) -> float:
    """Linear warm-up over `warmup_steps`, then constant or cosine decay to `min_lr_ratio` by the end."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    if config.schedule == "constant":
        return config.lr
    floor = config.lr * config.min_lr_ratio
    return floor + 0.5 * (config.lr - floor) * (1 + math.cos(math.pi * min(1.0, progress)))


def loss_and_accuracy(model: nn.Module, examples: Examples, device: torch.device) -> tuple[float, float]:
    """Mean loss (nats per target) and accuracy over `examples`, each from a zero state."""
    model.eval()
    total = correct = count = 0.0
    rows = max(1, min(EVAL_BATCH, EVAL_TOKENS // examples.inputs.shape[1]))
    with torch.no_grad():
        for start in range(0, len(examples), rows):
            x = torch.from_numpy(examples.inputs[start : start + rows]).to(device)
            y = torch.from_numpy(examples.targets[start : start + rows]).to(device)
            logits, _ = model(x)
            mask = y != IGNORE
            total += F.cross_entropy(logits[mask], y[mask], reduction="sum").item()
            correct += (logits[mask].argmax(-1) == y[mask]).sum().item()
            count += mask.sum().item()
    model.train()
    return total / count, correct / count


def sample_text(model: CharRNN, vocab: Vocabulary, line_items: bool, length: int, seed: int) -> str:
    """A short sample from the torch model (temperature 0.8), for the log; leaves the global RNG alone."""
    generator = torch.Generator().manual_seed(seed % (checks.SEED_MAX + 1))  # seed + i may pass the top
    device = next(model.parameters()).device
    model.eval()
    token, state, out = torch.tensor([[BOUNDARY]], device=device), None, []
    with torch.no_grad():
        for _ in range(length):
            logits, state = model(token, state)
            logits = logits[0, -1].float().cpu() / 0.8
            if not line_items:
                logits[BOUNDARY] = -math.inf
            token_id = int(torch.multinomial(torch.softmax(logits, -1), 1, generator=generator))
            if token_id == BOUNDARY:
                break
            out.append(token_id)
            token = torch.tensor([[token_id]], device=device)
    model.train()
    return vocab.decode(out)


def check_same_source(out: Path, saved: dict[str, object], dataset: Dataset | None) -> None:
    """A resume draws from where its run drew: texts in memory through fit_texts again (nothing else holds
    them), corpus files or a preset through seqgen-train fit --resume (or train). A run of texts in memory is
    told by its config, which names no corpus file and no preset (a corpus file may be named "<texts>")."""
    made = saved["config"]
    in_memory = not made.get("corpus") and not made.get("preset")  # type: ignore[attr-defined]
    if in_memory and dataset is None:
        raise SeqgenError(f"the run in {out} was trained on texts in memory; resume it from Python with "
                          "fit_texts(the same texts, out, resume=True)")
    if not in_memory and dataset is not None:
        raise SeqgenError(f"the run in {out} was trained on {saved['corpus']['name']}, not on texts in memory; "  # type: ignore[index]
                          f"resume it with seqgen-train fit --resume {out}")


class Run:
    """One training run's state: model, optimiser, position in the data, best result so far."""

    def __init__(self, config: TrainConfig, resume: bool = False, dataset: Dataset | None = None,
                 overwrite: bool = False) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", 1))
        self.rank = int(os.environ.get("RANK", 0))
        self.main = self.rank == 0
        self.out = Path(config.out)
        # a previous run's files stay until this run's first checkpoint; log lines wait with them
        self.replacing = [] if resume else runfolder.previous_run(self.out, overwrite=overwrite)
        self.pending_log: list[str] = []
        self.saved_steps: dict[str, int] = {}  # the checkpoints in the folder now, with their steps
        saved = checkpoint.load_run(self.out / checkpoint.LATEST) if resume else None
        self.resumed = saved is not None
        if saved is not None:
            # the saved choices, except the limits and machine given now (a run may move to another machine;
            # device "auto" is the default, not a choice); corpus files given now replace the saved paths (a
            # moved file), but must hold the same text (checked below); the folder is where it is now
            given = {k: v for k in RESUME_OPTIONS if (v := getattr(config, k)) is not None and v != "auto"}
            if config.corpus and not config.preset:
                given["corpus"] = list(config.corpus)
            config = checkpoint.run_config(saved, **given, out=str(self.out))
        self.config = config
        kept = self.out / runfolder.KEPT
        if config.keep_checkpoints and self.main and (kept.exists() or kept.is_symlink()) and not kept.is_dir():
            # found only at the first checkpoint, after the steps before it had been trained
            raise SeqgenError(f"{kept} is not a folder, and --keep-checkpoints keeps the checkpoints' weights in a "
                              "folder of that name; move it away, or train without --keep-checkpoints")
        if config.threads:
            checks.integer("--threads", config.threads, 1, usable_cpus())  # this machine's limit
            torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        self.device = pick_device(config.device)
        if saved is not None:
            check_same_source(self.out, saved, dataset)
        self.data = dataset or build_dataset(config)
        self.in_memory = dataset is not None  # texts given by fit_texts, resumed by it alone
        made_from = saved["corpus"] if saved is not None else {}
        if made_from.get("sha256") and self.data.sha256 and made_from["sha256"] != self.data.sha256:
            same = "the same texts, in the same order" if self.in_memory else "the same text"
            raise SeqgenError(f"checkpoint in {self.out} was made from another corpus ({made_from['name']}, "
                              f"sha256 {made_from['sha256'][:12]}..., not {self.data.sha256[:12]}...); resume "
                              f"with {same}, or start a new run in another folder")
        if saved is not None and saved["vocab"] != self.data.vocab.to_json():
            raise SeqgenError(f"checkpoint in {self.out} was made with another vocabulary or corpus; "
                              "resume with the same corpus, or start a new run in another folder")
        if saved is not None and made_from["line_items"] != self.data.line_items:  # a run saved with no sha256
            kinds = {True: "line items (strings)", False: "running text or (input, target) pairs"}
            raise SeqgenError(f"checkpoint in {self.out} was made from {kinds[bool(made_from['line_items'])]}, not "
                              f"{kinds[self.data.line_items]}; resume with the same texts, or start a new run in "
                              "another folder")
        self.model = CharRNN(self.data.vocab.size, config.cell, config.embedding, config.hidden, config.layers,
                             config.dropout, config.forget_bias, config.output_dropout).to(self.device)
        if config.precision == "bf16":
            check_bf16(self.model, self.device)
        if self.rank:  # the same initial weights everywhere, but each rank its own dropout masks
            torch.manual_seed(rank_seed(config.seed, self.rank))
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.step, self.epoch, self.batch_in_epoch, self.elapsed = 0, 0, 0, 0.0
        self.best_val, self.best_accuracy, self.best_step, self.bad_evals = math.inf, 0.0, 0, 0
        self.train_accuracy = 0.0
        if saved is not None:
            self._restore(saved)
            self.saved_steps[checkpoint.LATEST] = self.step
            if (self.out / checkpoint.BEST).is_file():
                self.saved_steps[checkpoint.BEST] = self.best_step
        self.parallel = self.model
        if self.world > 1:
            self.parallel = nn.parallel.DistributedDataParallel(self.model)

    def _restore(self, saved: dict[str, object]) -> None:
        fix = "resume with the options it was made with"
        checkpoint.restore(self.model, saved["model"], self.out / checkpoint.LATEST, fix)  # type: ignore[arg-type]
        checkpoint.restore(self.optimizer, saved["optimizer"], self.out / checkpoint.LATEST, fix)  # type: ignore[arg-type]
        states = saved["rngs"]
        if self.rank < len(states):
            cpu, device = states[self.rank]
            torch.set_rng_state(cpu)
            if device is not None and self.device.type == "cuda":
                torch.cuda.set_rng_state(device, self.device)  # dropout on the GPU draws from here
        else:  # more processes than the checkpoint had: a new rank starts a stream of its own
            torch.manual_seed(rank_seed(self.config.seed + int(saved["step"]), self.rank))
        for key in ("step", "epoch", "batch_in_epoch", "elapsed", "best_val", "best_accuracy", "best_step",
                    "bad_evals"):
            setattr(self, key, saved[key])
        self.train_accuracy = saved.get("train_accuracy", 0.0)  # a resume that takes no step reports it too

    # -- files ---------------------------------------------------------------------------------

    def rng_payload(self) -> dict[str, object]:
        """Every rank's generator states (CPU, and GPU where dropout draws there) as `rngs`, in rank order.
        A collective under torchrun: all ranks call it together."""
        mine = (torch.get_rng_state(), torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None)
        gathered: list[object] = [mine]
        if self.world > 1:
            gathered = [None] * self.world
            torch.distributed.all_gather_object(gathered, mine)
        return {"rngs": gathered}

    def save(self, name: str) -> None:
        """Checkpoint the run as `name` in its folder; all ranks call it, rank 0 writes."""
        payload = self.payload()
        if self.main:
            checkpoint.save(self.out / name, payload)
            if self.replacing:  # this run's first checkpoint: only now does the previous run go
                runfolder.retire(self.out, self.replacing, keep=name)
                if self.pending_log:
                    atomic_write(self.out / runfolder.METRICS, "".join(self.pending_log).encode())
            if name == checkpoint.LATEST and self.config.keep_checkpoints:
                runfolder.keep(self.out, self.step, payload["model"], payload["corpus"])  # type: ignore[arg-type]
        self.replacing, self.pending_log = [], []
        self.saved_steps[name] = self.step

    def left_behind(self) -> str:
        """What the run folder holds now, in words, for the messages of a run that ends early."""
        if self.replacing:
            return f"{self.out} still holds the previous run, unchanged (this run saved nothing)"
        kept = [f"{what} (step {self.saved_steps[name]})" for name, what in
                ((checkpoint.LATEST, "the last checkpoint"), (checkpoint.BEST, "the best weights"))
                if name in self.saved_steps]
        if not kept:
            return f"nothing was saved in {self.out} (the run stopped before its first checkpoint)"
        export = " (seqgen-train export can export them)" if checkpoint.BEST in self.saved_steps else ""
        return f"{self.out} keeps {' and '.join(kept)}{export}"

    def resume_hint(self) -> str:
        """The line for a run stopped by Ctrl-C: how to go on, true to what was saved."""
        if checkpoint.LATEST in self.saved_steps:
            how = (f"fit_texts(the same texts, {str(self.out)!r}, resume=True)" if self.in_memory
                   else f"seqgen-train fit --resume {self.out}")
            return (f"Interrupted; continue with: {how} (from its checkpoint at step "
                    f"{self.saved_steps[checkpoint.LATEST]})")
        return f"Interrupted before the run's first checkpoint, so it cannot be resumed; {self.left_behind()}"

    def payload(self) -> dict[str, object]:
        return {
            "config": self.config.to_dict(),
            "vocab": self.data.vocab.to_json(),
            "corpus": {"name": self.data.name, "sha256": self.data.sha256, "line_items": self.data.line_items},
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            **self.rng_payload(),
            "step": self.step, "epoch": self.epoch, "batch_in_epoch": self.batch_in_epoch, "elapsed": self.elapsed,
            "best_val": self.best_val, "best_accuracy": self.best_accuracy, "best_step": self.best_step,
            "bad_evals": self.bad_evals, "train_accuracy": self.train_accuracy,
        }

    def log(self, record: dict[str, object]) -> None:
        """Append a record to metrics.jsonl: an evaluation (with val_loss) or the training loss since the last one."""
        if not self.main:
            return
        if self.replacing:  # the previous run's log stays whole until this run's first checkpoint
            self.pending_log.append(json.dumps(record) + "\n")
        else:
            append_line(self.out / runfolder.METRICS, json.dumps(record))

    def trim_metrics(self) -> None:
        """On resume, drop metrics logged after the checkpoint (and a line a crash tore), so the log
        matches the weights."""
        path = self.out / runfolder.METRICS
        if self.main and path.exists():
            kept = [line + "\n" for line, record in read_jsonl(path)
                    if finite_number(record.get("step", 0)) and record.get("step", 0) <= self.step]
            atomic_write(path, "".join(kept).encode())

    # -- the loop ------------------------------------------------------------------------------

    def total_steps(self) -> int | None:
        per_epoch = steps_per_epoch(self.data.epoch(0, self.config.seed), self.config.batch_size, self.world)
        if per_epoch < 1:
            raise SeqgenError(f"the training set has fewer examples than the {self.world} processes; "
                              "give more data or use fewer processes")
        limits = [self.config.max_steps] if self.config.max_steps else []
        if self.config.epochs or not (self.config.max_steps or self.config.time_budget):
            limits.append((self.config.epochs or DEFAULT_EPOCHS) * per_epoch)
        return min(limits) if limits else None

    def batch_stream(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Batches across epochs from the saved position; the position advances as steps are taken."""
        while True:
            examples = self.data.epoch(self.epoch, self.config.seed)
            yield from batches(examples, self.config.batch_size, seed=self.config.seed, epoch=self.epoch,
                               rank=self.rank, world=self.world, start=self.batch_in_epoch)
            self.epoch += 1
            self.batch_in_epoch = 0

    def fit(self) -> Result:
        """Train until a limit is reached, rank 0 holding the run folder so that no other process writes in it."""
        with runfolder.held(self.out) if self.main else contextlib.nullcontext():
            if self.main and self.resumed:
                self.trim_metrics()
            return self._steps()

    def _steps(self) -> Result:
        config = self.config
        total = self.total_steps()
        checkpoint_every = config.checkpoint_every or config.eval_every
        bar = _progress(total, self.step, config.progress and self.main)
        started = time.monotonic() - self.elapsed
        window, recent = _Window(), _Window()  # since the last evaluation; since the last training-loss record
        stopped = ""
        self.model.train()
        for x, y in self.batch_stream():
            self.elapsed = time.monotonic() - started
            stopped = self._limit_reached(total)
            if stopped:
                break
            progress = max(self.step / total if total else 0.0,
                           self.elapsed / config.time_budget if config.time_budget else 0.0)
            lr = learning_rate(config, self.step, progress)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            figures = self._train_step(x, y)
            window.add(*figures)
            recent.add(*figures)
            self.step += 1
            self.batch_in_epoch += 1
            bar.update(1)
            if self.step % config.log_every == 0:
                self.log({"step": self.step, "epoch": self.epoch, "lr": lr, "train_loss": recent.loss,
                          "chars_per_s": recent.chars_per_second, "elapsed": round(time.monotonic() - started, 2)})
                recent = _Window()
            if self.step % config.eval_every == 0 or self.step == total:
                self._validate(window, lr, bar)
                window = _Window()
                if config.patience and self.bad_evals >= config.patience:
                    stopped = "early stopping"
            if self.step % checkpoint_every == 0:
                self.save(checkpoint.LATEST)
            if stopped:
                break
        if stopped == "time budget" and window.tokens:  # the steps since the last evaluation count too
            self._validate(window, lr, bar)
        bar.close()
        self.elapsed = time.monotonic() - started
        return self._finish(stopped)

    def _limit_reached(self, total: int | None) -> str:
        """The name of the limit reached before the next step, or "" to go on."""
        reached = ""
        if total is not None and self.step >= total:
            reached = "max steps" if self.config.max_steps and self.step >= self.config.max_steps else "epochs"
        elif self.config.time_budget and self.elapsed >= self.config.time_budget:
            reached = "time budget"
        if self.world > 1:  # ranks must agree, or one would wait forever for the others
            flag = torch.tensor([float(bool(reached))], device=self.device)
            torch.distributed.broadcast(flag, src=0)
            reached = (reached or "time budget") if flag.item() else ""
        return reached

    def _train_step(self, x: np.ndarray, y: np.ndarray) -> tuple[float, int, int]:
        self.optimizer.zero_grad(set_to_none=True)
        pieces = length_groups(x, y)  # one, unless padding would more than double the batch (see data.py)
        tokens, value, correct = int((y != IGNORE).sum()), 0.0, 0
        for number, (px, py) in enumerate(pieces):
            last = number == len(pieces) - 1  # gradients of a split batch add up; DDP syncs them once, at the end
            with contextlib.nullcontext() if last or self.world == 1 else self.parallel.no_sync():
                loss, right = self._loss(px, py, None if len(pieces) == 1 else tokens)
                loss.backward()
            value, correct = value + loss.item(), correct + right
        if self.world > 1:  # every rank judges (and logs) the loss of the whole step, so all stop together
            totals = torch.tensor([value * tokens, correct, tokens], dtype=torch.float64, device=self.device)
            torch.distributed.all_reduce(totals)
            value, correct, tokens = float(totals[0] / totals[2]), int(totals[1]), int(totals[2])
        norm = nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        limit = 2 * math.log(self.data.vocab.size) + 1  # far worse than guessing uniformly: diverged
        if not math.isfinite(value) or not math.isfinite(float(norm)) or (self.step > 10 and value > limit):
            raise TrainingDiverged(
                f"loss became {value:.4g} at step {self.step + 1} (diverged), so training stopped; "
                f"{self.left_behind()}; start again with a lower --lr or --grad-clip (a resumed run would repeat "
                "the same steps)")
        self.optimizer.step()
        return value, correct, tokens

    def _loss(self, x: np.ndarray, y: np.ndarray, of: int | None) -> tuple[torch.Tensor, int]:
        """The mean loss of a batch (or, for a piece of a split batch, its share of the `of` targets of the
        whole), and its correct predictions."""
        inputs, targets = torch.from_numpy(x).to(self.device), torch.from_numpy(y).to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bf16"):
            logits, _ = self.parallel(inputs)
        logits = logits.float()
        mask = targets != IGNORE
        loss = F.cross_entropy(logits[mask], targets[mask]) if of is None else \
            F.cross_entropy(logits[mask], targets[mask], reduction="sum") / of
        return loss, int((logits[mask].argmax(-1) == targets[mask]).sum())

    def _validate(self, window: _Window, lr: float, bar) -> dict[str, object]:  # a tqdm bar
        val_loss, val_accuracy = loss_and_accuracy(self.model, self.data.val, self.device) if self.main else (0.0, 0.0)
        if self.world > 1:  # rank 0 scores for all (the weights are the same), so every rank takes the same branches
            figures = torch.tensor([val_loss, val_accuracy], dtype=torch.float64, device=self.device)
            torch.distributed.broadcast(figures, src=0)
            val_loss, val_accuracy = float(figures[0]), float(figures[1])
        self.train_accuracy = window.accuracy
        if val_loss < self.best_val:
            self.best_val, self.best_accuracy, self.best_step, self.bad_evals = val_loss, val_accuracy, self.step, 0
            self.save(checkpoint.BEST)
        else:
            self.bad_evals += 1
        record = {"step": self.step, "epoch": self.epoch, "lr": lr, "train_loss": window.loss,
                  "train_accuracy": window.accuracy, "val_loss": val_loss, "val_accuracy": val_accuracy,
                  "chars_per_s": window.chars_per_second, "elapsed": round(self.elapsed, 2)}
        self.log(record)
        bar.set_postfix(loss=f"{window.loss:.3f}", val=f"{val_loss:.3f}", cps=f"{record['chars_per_s']:.0f}")
        if self.main and self.config.progress and self.config.samples:
            for i in range(self.config.samples):
                text = sample_text(self.model, self.data.vocab, self.data.line_items, 80, self.config.seed + i)
                bar.write(f"  step {self.step} sample {i + 1}: {text!r}", file=sys.stderr)
        return record

    def _finish(self, stopped: str) -> Result:
        model_path = None
        self.save(checkpoint.LATEST)
        if self.main and (self.out / checkpoint.BEST).exists():
            model_path = export_run(self.out, self.out / "model.onnx", seconds=self.elapsed)
        return Result(self.out, self.step, self.best_val, self.best_accuracy, self.train_accuracy, stopped,
                      self.elapsed, model_path)


class _Window:
    """Training loss, accuracy and speed accumulated between two evaluations."""

    def __init__(self) -> None:
        self.loss_sum, self.correct, self.tokens, self.started = 0.0, 0, 0, time.monotonic()

    def add(self, loss: float, correct: int, tokens: int) -> None:
        self.loss_sum += loss * tokens
        self.correct += correct
        self.tokens += tokens

    @property
    def loss(self) -> float:
        return self.loss_sum / max(self.tokens, 1)

    @property
    def accuracy(self) -> float:
        return self.correct / max(self.tokens, 1)

    @property
    def chars_per_second(self) -> float:
        return self.tokens / max(time.monotonic() - self.started, 1e-9)


def _progress(total: int | None, done: int, enabled: bool):  # tqdm or a stand-in
    from tqdm import tqdm

    return tqdm(total=total, initial=done, disable=not enabled, unit="step", dynamic_ncols=True, file=sys.stderr)


def rank_seed(seed: int, rank: int) -> int:
    """A torch seed for `rank` of a run seeded `seed`, unrelated to every other (seed, rank) pair (seed + rank
    would give rank 2 of seed s the stream of rank 1 of seed s + 1)."""
    return int(np.random.SeedSequence([seed, rank]).generate_state(1, np.uint64)[0] >> 1)


def out_of_memory(error: BaseException) -> bool:
    """Whether an error is an allocation the machine refused (torch's CPU allocator raises a plain RuntimeError;
    its GPU allocators, OutOfMemoryError): the run's sizes were too large for it, a usage error."""
    return isinstance(error, (MemoryError, torch.OutOfMemoryError)) or "can't allocate memory" in str(error)


def train(config: TrainConfig, *, resume: bool = False, overwrite: bool = False,
          dataset: Dataset | None = None) -> Result:
    """Run (or with `resume`, continue) a training run; returns its result and writes model.onnx.

    A folder that already holds a run is refused unless `overwrite` (the old files then stay until the
    new run's first checkpoint). `dataset` replaces the corpus named by the config (used by `fit_texts`).
    Ctrl-C raises `Interrupted`, whose message says what the folder holds.
    """
    if resume and overwrite:  # the CLI refuses --resume --overwrite by their flags' names
        raise SeqgenError("resume=True continues the run in its folder and overwrite=True replaces it; choose one")
    distributed = int(os.environ.get("WORLD_SIZE", 1)) > 1
    if distributed and not torch.distributed.is_initialized():
        backend = "nccl" if torch.cuda.is_available() and config.device in ("auto", "cuda") else "gloo"
        torch.distributed.init_process_group(backend)
    run = None
    try:
        run = Run(config, resume=resume, dataset=dataset, overwrite=overwrite)
        return run.fit()
    except KeyboardInterrupt:
        raise Interrupted(run.resume_hint() if run else "Interrupted before training started") from None
    except (RuntimeError, MemoryError) as exc:
        if not out_of_memory(exc):
            raise
        left = run.left_behind() if run else "nothing was saved"
        raise SeqgenError("training ran out of memory: choose a smaller --batch-size, --seq-len, --hidden, "
                          f"--embedding or --layers; {left}") from None
    finally:
        if distributed:
            torch.distributed.destroy_process_group()


def _is_pair(text: object) -> bool:
    """An (input, target) pair as fit_texts takes it: a tuple of two strings."""
    return isinstance(text, tuple) and len(text) == 2 and all(isinstance(part, str) for part in text)


def fit_texts(texts: Iterable[str] | Iterable[tuple[str, str]], out: str | Path, *, overwrite: bool = False,
              resume: bool = False, **options: object) -> Result:
    """Train on texts in memory: strings are line items (makemore style); (input, target) pairs are
    next-character tasks. Options are TrainConfig fields; `overwrite` and `resume` as for train (a resumed
    run must be given the same texts: its vocabulary is checked, and its saved seed splits them again)."""
    # items and pairs in memory have their own held-out sets and lengths: no tail to cut, no text to chunk
    for name, refusal in (("val_fraction", TEXT_ONLY_SPLIT), ("seq_len", TEXT_ONLY_LENGTH)):
        if options.get(name) is not None:
            raise SeqgenError(refusal)
    for name in ("corpus", "preset", "lines"):
        if options.get(name) or (name == "lines" and name in options):
            raise SeqgenError(f"fit_texts trains on the texts it is given, so {name}= does not apply; drop it "
                              "(train(TrainConfig(...)) trains on corpus files or a preset)")
    if isinstance(texts, (str, bytes)) or not isinstance(texts, Iterable):
        raise SeqgenError("fit_texts takes a list of strings, or of (input, target) pairs, not a "
                          f"{type(texts).__name__}; pass [text] for one item, or text.splitlines() for its lines")
    texts = list(texts)  # a generator is read once, and items are indexed below
    if not texts or not (all(isinstance(t, str) for t in texts) or all(_is_pair(t) for t in texts)):
        raise SeqgenError("fit_texts takes a non-empty list of strings, or of (input, target) pairs of strings")
    items = isinstance(texts[0], str)
    config = TrainConfig(out=str(out), lines=items, **options)  # type: ignore[arg-type]
    # the data is cut by the run's own choices: a resumed run's saved ones, not this call's defaults
    made = checkpoint.run_config(checkpoint.load_run(Path(out) / checkpoint.LATEST)) if resume else config
    changed = [f"{name}={getattr(config, name)!r} (the run's: {getattr(made, name)!r})" for name in options
               if name not in RESUME_OPTIONS and getattr(config, name) != getattr(made, name)]
    if changed:  # given again unchanged is fine: the same call with resume=True added
        raise SeqgenError(f"a resumed run keeps the settings it was made with, so {', '.join(changed)} cannot change; "
                          f"drop {'it' if len(changed) == 1 else 'them'} (a resume takes only "
                          f"{', '.join(sorted(RESUME_OPTIONS))})")
    if items:
        vocab = Vocabulary.fit([t for t in texts if t], order=made.vocab_order, lowercase=made.lowercase)
        dataset = item_dataset(list(texts), seed=made.seed, vocab=vocab,  # type: ignore[arg-type]
                               sha256=texts_sha256(texts))
    else:
        sources = [s for pair in texts for s in pair]
        vocab = Vocabulary.fit(sources, order=made.vocab_order, lowercase=made.lowercase)
        examples = pairs(vocab, texts)  # type: ignore[arg-type]
        dataset = Dataset(vocab, examples, examples, False, examples.inputs.shape[1], IN_MEMORY, texts_sha256(texts))
    return train(config, resume=resume, overwrite=overwrite, dataset=dataset)
