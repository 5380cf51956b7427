"""Does carrying the recurrent state across training windows lower the loss the runtime measures? A measurement.

seqgen trains running text in shuffled windows that each start from a zero state, while the runtime scores
(and generates) with the state carried through the whole text. Stateful truncated backpropagation (char-rnn's
way) trains as the runtime runs: the text is cut into one contiguous lane per batch row, and each window
starts from the state the previous window of its lane ended in. Both modes train the same model with the
same schedule and steps; both are scored as `seqgen-train eval` scores: the held-out tail from a zero state, the
state carried (eval also feeds the boundary token first and so scores the tail's first character too).

    python benchmarks/carry_state.py window --hidden 256 --steps 1500 --dropout 0.1 --out window.jsonl
    python benchmarks/carry_state.py carry --hidden 256 --steps 1500 --dropout 0.1 --out carry.jsonl

(Run the two side by side, one thread each, so that they share the machine alike.)
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from seqgen.train.data import running_text, text_split
from seqgen.train.models import CharRNN
from seqgen.vocab import Vocabulary

CORPUS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "tinyshakespeare.txt"
BATCH, WINDOW, WARMUP, LR, SEED = 64, 128, 100, 2e-3, 1337


def windowed(train: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray, bool]]:
    """seqgen's batches: chunks at an epoch-dependent offset, shuffled, each from a zero state."""
    epoch = 0
    while True:
        chunks = running_text(train, WINDOW, int(np.random.default_rng([SEED, epoch, 1]).integers(WINDOW)))
        order = np.random.default_rng([SEED, epoch]).permutation(len(chunks))
        for first in range(0, len(order) - BATCH + 1, BATCH):
            yield (*chunks.rows(np.sort(order[first : first + BATCH])), True)
        epoch += 1


def carried(train: np.ndarray) -> Iterator[tuple[np.ndarray, np.ndarray, bool]]:
    """One contiguous lane per row; consecutive windows continue each lane (True: start from zero)."""
    length, epoch = len(train) // BATCH, 0
    lanes = np.stack([train[row * length : (row + 1) * length] for row in range(BATCH)])
    while True:
        start, fresh = int(np.random.default_rng([SEED, epoch, 1]).integers(WINDOW)), True
        while start + WINDOW + 1 <= length:
            yield lanes[:, start : start + WINDOW], lanes[:, start + 1 : start + WINDOW + 1], fresh
            start, fresh = start + WINDOW, False
        epoch += 1


@torch.no_grad()
def runtime_loss(model: CharRNN, held: np.ndarray) -> float:
    """Mean loss over the held-out tail from a zero state, the state carried: as the runtime's score."""
    model.eval()
    inputs, targets = torch.from_numpy(held[None, :-1].astype(np.int64)), torch.from_numpy(held[1:].astype(np.int64))
    state, total = None, 0.0
    for start in range(0, inputs.shape[1], 4096):
        logits, state = model(inputs[:, start : start + 4096], state)
        total += F.cross_entropy(logits[0], targets[start : start + 4096], reduction="sum").item()
    model.train()
    return total / len(targets)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["window", "carry"])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--dropout", type=float, default=0.1, help="between layers and on the outputs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--every", type=int, default=250, help="score every this many steps")
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, one per score")
    args = parser.parse_args()
    if args.steps < 1 or args.every < 1 or args.hidden < 1 or args.threads < 1:
        parser.error("--steps, --every, --hidden and --threads must be at least 1")
    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    text = CORPUS.read_text(encoding="utf-8")
    vocab = Vocabulary.fit([text])
    split = text_split(len(text), 0.1)
    train, held = vocab.encode(text[:split]), vocab.encode(text[split:])
    model = CharRNN(vocab.size, "lstm", 64, args.hidden, 2, dropout=args.dropout, output_dropout=args.dropout)
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.1)
    batches = windowed(train) if args.mode == "window" else carried(train)
    state, started = None, time.time()
    with args.out.open("w") as log:
        for step in range(1, args.steps + 1):
            inputs, targets, fresh = next(batches)
            # the cosine's progress only after the warm-up: --steps 100 divided by zero here
            lr = LR * (step / WARMUP if step <= WARMUP
                       else 0.5 * (1 + math.cos(math.pi * (step - WARMUP) / (args.steps - WARMUP))))
            for group in optimizer.param_groups:
                group["lr"] = lr
            logits, state = model(torch.from_numpy(np.ascontiguousarray(inputs, np.int64)), None if fresh else state)
            state = tuple(part.detach() for part in state)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                   torch.from_numpy(np.ascontiguousarray(targets, np.int64)).reshape(-1))
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if step % args.every == 0 or step == args.steps:
                record = {"mode": args.mode, "step": step, "train": round(loss.item(), 4),
                          "runtime": round(runtime_loss(model, held), 4), "seconds": round(time.time() - started)}
                print(record, flush=True)
                log.write(json.dumps(record) + "\n")
                log.flush()


if __name__ == "__main__":
    main()
