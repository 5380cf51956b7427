"""TrainConfig: every choice a training run makes, saved in its checkpoints for an exact resume."""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field, fields

from seqgen.cells import NAMES as CELLS
from seqgen.choices import ORDERS
from seqgen.errors import SeqgenError

from .presets import PRESETS

SCHEDULES = ("cosine", "constant")
PRECISIONS = ("fp32", "bf16")
DEVICES = ("auto", "cpu", "cuda", "mps")
RESUME_OPTIONS = frozenset({"epochs", "max_steps", "time_budget", "progress", "threads", "device"})
"""What a resumed run may change: its limits and the machine it runs on."""
DEFAULT_VAL_FRACTION = 0.1
"""The held-out tail of running text, as nanoGPT holds out its last 10%."""
TEXT_ONLY_SPLIT = ("--val-fraction splits running text only: line items hold out makemore's seeded "
                   "min(1000, 10%) of the items, and a preset brings its own data; drop --val-fraction")


@dataclass
class TrainConfig:
    """Options of `seqgen-train fit` and `seqgen.train.train`. Sizes are per layer; times in seconds."""

    corpus: list[str] = field(default_factory=list)
    out: str = "runs/run"
    lines: bool = False
    preset: str | None = None
    # model
    cell: str = "lstm"
    layers: int = 2
    hidden: int = 256
    embedding: int = 64
    dropout: float = 0.0
    forget_bias: float | None = 1.0  # LSTM forget-gate bias at the start; None: torch's default (runs saved before)
    # data
    seq_len: int = 128
    batch_size: int = 64
    val_fraction: float | None = None  # running text only (None: 0.1); line items hold out makemore's split
    vocab_order: str = "frequency"
    lowercase: bool = False
    # optimisation
    lr: float = 3e-3
    weight_decay: float = 0.01
    warmup_steps: int = 100
    schedule: str = "cosine"
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    precision: str = "fp32"
    # limits (the first one reached ends the run; none given means 10 epochs)
    epochs: int | None = None
    max_steps: int | None = None
    time_budget: float | None = None
    # evaluation and checkpoints
    eval_every: int = 200
    log_every: int = 10
    patience: int | None = None
    checkpoint_every: int | None = None
    samples: int = 2
    # machine
    seed: int = 1337
    device: str = "auto"
    threads: int | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        checks = [
            (self.cell in CELLS, f"--cell must be one of {', '.join(CELLS)}"),
            (min(self.layers, self.hidden, self.embedding) >= 1, "--layers, --hidden, --embedding must be >= 1"),
            (0 <= self.dropout < 1, "--dropout must be in [0, 1)"),
            (self.seq_len >= 2 and self.batch_size >= 1, "--seq-len must be >= 2 and --batch-size >= 1"),
            (self.lr > 0 and self.grad_clip > 0, "--lr and --grad-clip must be > 0"),
            (self.preset is None or self.preset in PRESETS, f"--preset must be one of {', '.join(PRESETS)}"),
            (self.schedule in SCHEDULES, f"--schedule must be one of {', '.join(SCHEDULES)}"),
            (self.eval_every >= 1 and self.log_every >= 1, "--eval-every and --log-every must be >= 1"),
            (self.forget_bias is None or math.isfinite(self.forget_bias), "--forget-bias must be a finite number"),
            (self.patience is None or self.patience >= 1, "--patience must be >= 1"),
            (all(v is None or v > 0 for v in (self.epochs, self.max_steps, self.time_budget)),
             "--epochs, --max-steps and --time-budget must be > 0"),
            (self.device in DEVICES, f"--device must be one of {', '.join(DEVICES)}"),
            (self.precision in PRECISIONS, f"--precision must be one of {', '.join(PRECISIONS)}"),
            (self.val_fraction is None or 0 < self.val_fraction < 1, "--val-fraction must be in (0, 1)"),
            (self.val_fraction is None or not (self.lines or self.preset), TEXT_ONLY_SPLIT),
            (self.vocab_order in ORDERS, f"--vocab-order must be one of {', '.join(ORDERS)}"),
            (self.weight_decay >= 0 and self.warmup_steps >= 0, "--weight-decay and --warmup-steps must be >= 0"),
            (0 <= self.min_lr_ratio <= 1, "--min-lr-ratio must be in [0, 1]"),
            (self.checkpoint_every is None or self.checkpoint_every >= 1, "--checkpoint-every must be >= 1"),
            (self.samples >= 0 and (self.threads is None or self.threads >= 1),
             "--samples must be >= 0 and --threads >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise SeqgenError(message)
        if self.val_fraction is None and not (self.lines or self.preset):
            self.val_fraction = DEFAULT_VAL_FRACTION  # saved as a number: what eval and resume read back

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        options = {k: v for k, v in data.items() if k in known}
        options.setdefault("forget_bias", None)  # saved before the option: torch's initialisation, as trained
        return cls(**options)


def parse_duration(text: str) -> float:
    """Seconds in '90', '90s', '3m', '1h30m', '2.5h'."""
    parts = re.fullmatch(r"\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s?)?\s*", text)
    if not text.strip() or parts is None or not any(parts.groups()):
        raise SeqgenError(f"cannot read duration {text!r}; write e.g. 90s, 3m or 1h30m")
    hours, minutes, seconds = (float(g) if g else 0.0 for g in parts.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise SeqgenError(f"duration {text!r} must be more than zero")
    return total
