"""seqgen-train: fit, export, eval and plot character models."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from pathlib import Path

import click

from seqgen import __version__, modelfile
from seqgen.cells import NAMES as CELLS
from seqgen.cells import cell as cell_row
from seqgen.choices import ORDERS
from seqgen.cli import SeqgenGroup
from seqgen.errors import SeqgenError

from .config import DEVICES, PRECISIONS, RESUME_OPTIONS, SCHEDULES, TrainConfig, parse_duration
from .presets import PRESETS, describe


class Duration(click.ParamType):
    name = "duration"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        try:
            return value if isinstance(value, float) else parse_duration(str(value))
        except SeqgenError as exc:
            self.fail(str(exc), param, ctx)


class ForgetBias(click.ParamType):
    """A finite number, or `torch` (kept as that word until TrainConfig is built) for torch's initialisation."""

    name = "number|torch"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float | str:
        if isinstance(value, float) or value == "torch":
            return value
        try:
            number = float(str(value))
        except ValueError:
            number = math.nan
        if str(value).strip().lower() == "torch":
            return "torch"
        if not math.isfinite(number):
            self.fail(f"{value!r} is neither a finite number nor 'torch'", param, ctx)
        return number


@click.group(cls=SeqgenGroup)
@click.version_option(__version__, prog_name="seqgen-train")
def main() -> None:
    """Train character models and export them for seqgen-run."""


# Options whose value, when given, overrides a preset's; a resumed run takes only RESUME_OPTIONS.
_FIT_OPTIONS = [
    click.option("--out", "out", type=click.Path(file_okay=False), help="Run folder (default runs/run)."),
    click.option("--lines", is_flag=True, default=None, help="Each non-empty line is one item (makemore style)."),
    click.option("--preset", type=click.Choice(PRESETS), help=f"A built-in task with its data ({describe()})."),
    click.option("--cell", type=click.Choice(CELLS)),
    click.option("--layers", type=click.IntRange(1)),
    click.option("--hidden", type=click.IntRange(1), help="Hidden size per layer."),
    click.option("--embedding", type=click.IntRange(1), help="Embedding size."),
    click.option("--dropout", type=click.FloatRange(0, 1, max_open=True),
                 help="Dropout between layers (--layers 2 or more)."),
    click.option("--output-dropout", type=click.FloatRange(0, 1, max_open=True),
                 help="Dropout on the top layer's outputs, before the head (default 0)."),
    click.option("--forget-bias", type=ForgetBias(),
                 help="LSTM forget-gate bias at the start (default 1: remember until learned otherwise; "
                      "'torch': torch's initialisation)."),
    click.option("--seq-len", type=click.IntRange(2),
                 help="Characters of running text per training sequence (default 128); line items keep theirs."),
    click.option("--batch-size", type=click.IntRange(1)),
    click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True),
                 help="Held-out tail of running text (default 0.1); line items use makemore's split."),
    click.option("--vocab-order", type=click.Choice(ORDERS)),
    click.option("--lowercase", is_flag=True, default=None),
    click.option("--lr", type=click.FloatRange(0, min_open=True), help="Peak learning rate."),
    click.option("--weight-decay", type=click.FloatRange(0)),
    click.option("--warmup-steps", type=click.IntRange(0)),
    click.option("--schedule", type=click.Choice(SCHEDULES)),
    click.option("--min-lr-ratio", type=click.FloatRange(0, 1)),
    click.option("--grad-clip", type=click.FloatRange(0, min_open=True)),
    click.option("--precision", type=click.Choice(PRECISIONS),
                 help="bf16 autocast: several times faster on CPUs with AMX/AVX512-BF16; weights stay fp32."),
    click.option("--epochs", type=click.IntRange(1)),
    click.option("--max-steps", type=click.IntRange(1)),
    click.option("--time-budget", type=Duration(), help="Wall-clock limit, e.g. 3m or 1h30m."),
    click.option("--eval-every", type=click.IntRange(1), help="Evaluate every N steps."),
    click.option("--log-every", type=click.IntRange(1), help="Log the training loss every N steps (default 10)."),
    click.option("--patience", type=click.IntRange(1), help="Stop after N evaluations without improvement."),
    click.option("--checkpoint-every", type=click.IntRange(1), help="Checkpoint every N steps (default: eval)."),
    click.option("--keep-checkpoints", is_flag=True, default=None,
                 help="Also keep each checkpoint's weights in RUN/kept/ (one file the size of the weights per "
                      "checkpoint), so that export --average can average them."),
    click.option("--samples", type=click.IntRange(0), help="Samples printed at each evaluation."),
    click.option("--seed", type=int),
    click.option("--device", type=click.Choice(DEVICES)),
    click.option("--threads", type=click.IntRange(1), help="torch CPU threads."),
    click.option("--progress/--no-progress", default=None),
]


def _flags(names: list[str]) -> str:
    return ", ".join("--" + name.replace("_", "-") for name in names)


def _fit_options(command):  # click decorator plumbing
    for option in reversed(_FIT_OPTIONS):
        command = option(command)
    return command


@main.command()
@click.argument("corpus", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--resume", "resume", type=click.Path(file_okay=False), help="Continue the run in this folder.")
@click.option("--overwrite", is_flag=True,
              help="Replace the run already in --out (its files stay until the new run's first checkpoint).")
@_fit_options
def fit(corpus: tuple[str, ...], resume: str | None, overwrite: bool, **given: object) -> None:
    """Train on CORPUS files (UTF-8 text) and export RUN/model.onnx.

    \b
    seqgen-train fit input.txt --cell lstm --hidden 256 --time-budget 3m --out runs/small
    seqgen-train fit names.txt --lines --cell gru --out runs/names
    seqgen-train fit --preset alphabet-seq2seq --out runs/alphabet
    seqgen-train fit --resume runs/small          # after an interruption
    seqgen-train fit input.txt --out runs/small --overwrite   # a new run in place of the old one
    """
    from .loop import train  # torch loads only when training starts
    from .presets import preset_options

    chosen = {k: v for k, v in given.items() if v is not None}
    if resume and overwrite:
        raise SeqgenError("--resume continues the run in its folder and --overwrite replaces it; choose one")
    if chosen.get("forget_bias") == "torch":
        chosen["forget_bias"] = None  # TrainConfig's None: torch's own initialisation
    default = TrainConfig.cell
    cell = chosen.get("cell") or (preset_options(chosen["preset"]).get("cell", default) if chosen.get("preset")
                                  else default)
    has_gate = cell_row(cell).forget_gate is not None  # the cell table says which cells have a forget gate
    if "forget_bias" in given and given["forget_bias"] is not None and not resume and not has_gate:
        raise SeqgenError(f"--forget-bias sets an LSTM's forget gate, and a {cell} has none; drop it")
    if resume:
        out = chosen.pop("out", resume)
        if Path(out).resolve() != Path(resume).resolve():
            raise SeqgenError(f"--resume continues the run in its own folder {resume}, so --out {out} cannot "
                              "apply; drop --out, or copy the folder and resume the copy")
        fixed = sorted(set(chosen) - RESUME_OPTIONS)
        if fixed:
            raise SeqgenError(f"--resume continues with the run's saved settings, so {_flags(fixed)} cannot change; "
                              f"drop {'it' if len(fixed) == 1 else 'them'} (a resume takes only "
                              f"{_flags(sorted(RESUME_OPTIONS))})")
        config = TrainConfig(corpus=list(corpus), out=resume, **chosen)  # limits override the saved ones
    else:
        if not corpus and not chosen.get("preset"):
            raise SeqgenError("no corpus given; pass text files or --preset (see seqgen-train fit --help)")
        if corpus and chosen.get("preset"):
            raise SeqgenError(f"--preset {chosen['preset']} brings its own data; drop the corpus files or "
                              "the preset")
        base = preset_options(chosen["preset"]) if chosen.get("preset") else {}
        config = TrainConfig(corpus=list(corpus), **{**base, **chosen})
    try:
        result = train(config, resume=bool(resume), overwrite=overwrite)
    except KeyboardInterrupt as stop:  # train's Interrupted says what the folder holds and how to go on
        click.echo(str(stop) or "Interrupted", err=True)
        raise
    if os.environ.get("RANK", "0") != "0":  # under torchrun rank 0 alone reports, as it alone writes
        return
    best_val = round(result.best_val_loss, 4) if math.isfinite(result.best_val_loss) else None
    click.echo(json.dumps({"out": str(result.out), "steps": result.steps, "stopped": result.stopped,
                           "best_val_loss": best_val, "best_val_accuracy": round(result.best_val_accuracy, 4),
                           "train_accuracy": round(result.train_accuracy, 4),
                           "seconds": round(result.seconds, 1),
                           "model": str(result.model_path) if result.model_path else None}))


@main.command()
@click.argument("run", type=click.Path(exists=True))
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="The .onnx file to write.")
@click.option("--quantize", type=click.Choice(["int8"]), help="Dynamic int8 quantization (smaller, faster).")
@click.option("--average", type=click.IntRange(1), default=1, show_default=True,
              help="Average the weights of this many checkpoints kept by --keep-checkpoints, those nearest the "
                   "best step.")
def export(run: str, out: str, quantize: str | None, average: int) -> None:
    """Export a run's best weights (RUN folder or checkpoint) to one .onnx file."""
    from .export import export_run
    from .runfolder import held

    folder = Path(out).parent  # a run training there would write its own model.onnx over this one: refused
    # a folder this user cannot read cannot be held, by a run either: no run of theirs trains there
    with held(folder) if folder.is_dir() and os.access(folder, os.R_OK) else contextlib.nullcontext():
        if not quantize:
            path = export_run(run, out, average=average)
            click.echo(json.dumps({"model": str(path), "bytes": path.stat().st_size, "quantization": "none"}))
            return
        from .quantize import quantize_int8

        with tempfile.TemporaryDirectory() as scratch:  # the float model, to quantize and compare with
            report = quantize_int8(export_run(run, Path(scratch) / "float.onnx", average=average), out)
    click.echo(json.dumps({"model": out, "bytes": report["int8_bytes"], "quantization": "int8",
                           **{k: v for k, v in report.items() if k != "quantized"}}))


@main.command(name="eval")
@click.argument("model", type=click.Path(exists=True))
@click.argument("corpus", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("--lines", is_flag=True, help="Score line items (default: as the model was trained).")
@click.option("--val-fraction", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="Held-out fraction of running text (default: the model's training value).")
@click.option("--seed", type=int, help="Seed of the line-item split (default: the model's training seed).")
def eval_command(model: str, corpus: tuple[str, ...], lines: bool, val_fraction: float | None,
                 seed: int | None) -> None:
    """Loss, bits/char and accuracy of MODEL (.onnx or run folder) on CORPUS's held-out split."""
    from .heldout import held_out_score

    click.echo(json.dumps(held_out_score(model, list(corpus), val_fraction=val_fraction, seed=seed,
                                         lines=lines or None)))


@main.command()
@click.argument("run", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "out", type=click.Path(dir_okay=False), help="PNG to write (default RUN/loss.png).")
def plot(run: str, out: str | None) -> None:
    """Draw a run's training and validation loss curves to a PNG."""
    from .plot import plot_run

    click.echo(plot_run(Path(run), Path(out) if out else None))


@main.command(name="import-keras")
@click.argument("keras_model", metavar="MODEL.keras|MODEL.h5", type=click.Path(exists=True))
@click.option("--tokenizer", type=click.Path(exists=True, dir_okay=False),
              help="The Tokenizer's JSON (tokenizer.to_json()): ids, lowercasing, unknown characters.")
@click.option("--chars", help="Without a tokenizer: the characters of ids 1, 2, ... in order.")
@click.option("--lowercase", is_flag=True, help="With --chars: lower-case text before encoding, as Keras' lower=True.")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False), help="The .onnx file to write.")
def import_keras(keras_model: str, tokenizer: str | None, chars: str | None, lowercase: bool, out: str) -> None:
    """Convert a Keras Sequential character model (Embedding, SimpleRNN/LSTM/GRU, Dense) to one .onnx file.

    \b
    seqgen-train import-keras notebook.keras --tokenizer tokenizer.json --out notebook.onnx
    seqgen-train import-keras model.h5 --chars abcdefghijklmnopqrstuvwxyz --out model.onnx
    """
    from .keras_file import require_h5py

    require_h5py()  # before torch loads: a missing extra is named at once
    from .keras_import import import_keras as convert

    convert(keras_model, out, tokenizer=tokenizer, chars=chars, lowercase=lowercase)
    written = modelfile.read(out)
    click.echo(json.dumps({"model": out, "bytes": Path(out).stat().st_size, "cell": written.cell,
                           "layers": written.layers, "vocab_size": written.vocab.size,
                           "input_length": written.keras_input_length,
                           "parity_max_rel_diff": float(written.info[modelfile.PARITY_REL_KEY])}))
