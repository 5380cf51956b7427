"""seqgen-run: predict, generate, score, describe and benchmark a seqgen model from the shell.

Exit codes: 0 success, 1 internal error, 2 bad usage or bad input (one `Error:` line on stderr),
130 interrupted. Generated text is printed as it is made: an error part-way (a state that overflows)
leaves what was already printed on stdout, and the exit code tells that the output is incomplete.
seqgen's heavy parts (numpy, onnxruntime) are imported inside the commands.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import click

from . import __version__
from .checks import MAX_BATCH
from .choices import UNKNOWN_POLICIES
from .errors import SeqgenError

if TYPE_CHECKING:
    from .model import Model
    from .sampling import Sampling

ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
"""Backslash escapes understood in --stop, since a shell cannot easily pass a newline."""
MAX_INPUT_BYTES = 256 * 2**20
"""The most a command reads from one file or standard input: enwik8 (100 MB) fits; /dev/zero or an endless
pipe is refused instead of filling the memory."""
BENCH_REPEATS = 3
BENCH_WARMUP_CHARS = 10


class InputError(click.ClickException):
    """Bad input: click prints `Error: <message>` on stderr and the CLI exits with code 2."""

    exit_code = 2


class SeqgenGroup(click.Group):
    """The command group; turns every failure of a command into one stderr line and an exit code."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: object) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except KeyboardInterrupt:  # Ctrl-C while the arguments are parsed: 130, as during a command
            raise click.exceptions.Exit(130) from None
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:
            raise InputError(_usage_line(exc)) from None

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as exc:  # a bad flag or value: one line, like every other input error
            raise InputError(_usage_line(exc)) from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except SeqgenError as exc:
            raise InputError(_one_line(exc)) from None
        except BrokenPipeError:  # the reader went away (`| head`): stop quietly
            _silence_stdout()
            ctx.exit(0)
        except KeyboardInterrupt:
            ctx.exit(130)
        except Exception as exc:
            if isinstance(exc.__context__, KeyboardInterrupt):  # Ctrl-C inside an import (onnxruntime's)
                ctx.exit(130)
            if os.environ.get("SEQGEN_DEBUG") == "1":
                raise
            raise click.ClickException(f"internal error: {type(exc).__name__}: {_one_line(exc)} "
                                       "(set SEQGEN_DEBUG=1 for a traceback)") from None


def _one_line(exc: BaseException) -> str:
    """The message on one line, printable however stderr encodes: bytes of a file name that are not
    UTF-8 (lone surrogates in the str) are shown as escapes."""
    return " ".join(str(exc).split("\n")).encode("utf-8", "backslashreplace").decode("utf-8")


def _usage_line(exc: click.UsageError) -> str:
    """click's usage error as one line that points at the command's help."""
    command = exc.ctx.command_path if exc.ctx is not None else "seqgen-run"
    return f"{' '.join(exc.format_message().split())} (see {command} --help)"


def _silence_stdout() -> None:
    """Point stdout at devnull so the interpreter's final flush cannot fail again (Python's SIGPIPE recipe)."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


# -- the options every command shares ------------------------------------------------------------


@dataclass(frozen=True)
class ModelChoice:
    """The model options of a command; `load` reads the model only when the command needs it."""

    name: str | None
    threads: int
    unknown: str | None = None
    replacement: str | None = None

    def load(self) -> Model:
        """The chosen model, with the chosen policy for characters outside its vocabulary."""
        from . import load  # here, not at the top: loading imports onnxruntime

        if self.replacement is not None and self.unknown not in (None, "replace"):
            raise SeqgenError("--replacement only applies with --unknown replace")
        model = load(self.name, threads=self.threads)
        if self.unknown is None and self.replacement is None:
            return model  # the policy stored in the model file
        policy = self.unknown or "replace"
        replacement = self.replacement or model.vocab.replacement  # the file's own replacement, if it has one
        if policy == "replace" and replacement is None:
            raise SeqgenError("--unknown replace needs --replacement CHAR, a character in the model's vocabulary")
        return model.with_unknown(policy, replacement if policy == "replace" else None)


def model_options(*, text: bool = False) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Add --model and --threads (and --unknown, --replacement when `text`) to a command.

    The command receives them together as one keyword argument, `choice` (a ModelChoice).
    """
    options = [
        click.option("--model", metavar="PATH_OR_NAME",
                     help="Model file, or the short name of a shipped model.  [default: the default model]"),
        click.option("--threads", type=int, default=1, show_default=True,
                     help="onnxruntime threads, at most the CPUs this process may use; 1 is fastest for small "
                          "models."),
    ]
    if text:
        options += [
            click.option("--unknown", type=click.Choice(UNKNOWN_POLICIES),
                         help="What to do with characters outside the vocabulary.  [default: the model's own]"),
            click.option("--replacement", metavar="CHAR",
                         help="The character that replaces unknown ones (implies --unknown replace)."),
        ]

    def decorate(command: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(command)
        def wrapper(*args: object, model: str | None, threads: int, unknown: str | None = None,
                    replacement: str | None = None, **kwargs: object) -> None:
            command(*args, choice=ModelChoice(model, threads, unknown, replacement), **kwargs)

        for option in reversed(options):
            wrapper = option(wrapper)
        return wrapper

    return decorate


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")


def _command_line_texts(_ctx: click.Context, param: click.Parameter,
                        value: str | tuple[str, ...] | None) -> str | tuple[str, ...] | None:
    """An option's text (or texts), refused unless UTF-8."""
    name = param.opts[0]
    if isinstance(value, tuple):
        return tuple(argument_text(text, name) for text in value)
    return None if value is None else argument_text(value, name)


def _stop_strings(ctx: click.Context, param: click.Parameter, stops: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(map(unescape, _command_line_texts(ctx, param, stops)))  # type: ignore[arg-type]


SAMPLING_FLAGS = {  # one per field of seqgen.Sampling: a new sampling option adds its flag here
    "temperature": click.option("--temperature", type=float, default=1.0, show_default=True,
                                help="0 is greedy; higher is wilder."),
    "top_k": click.option("--top-k", type=int, help="Sample only from the K most likely characters."),
    "top_p": click.option("--top-p", type=float,
                          help="Sample only from the smallest set holding this much probability."),
    "min_p": click.option("--min-p", type=float,
                          help="Drop characters less likely than this times the most likely one."),
    "repetition_penalty": click.option("--repetition-penalty", type=float, default=1.0, show_default=True,
                                       help="Above 1 avoids repeats."),
    "stop": click.option("--stop", multiple=True, metavar="S", callback=_stop_strings,
                         help="Stop before this text (repeatable; never printed). \\n, \\t, \\r and \\\\ are "
                              "understood."),
    "seed": click.option("--seed", type=int, help="Random seed, for reproducible samples."),
    "allowed": click.option("--allowed", metavar="CHARS", callback=_command_line_texts,
                            help="Generate only these characters."),
    "banned": click.option("--ban", "banned", multiple=True, metavar="WORD", callback=_command_line_texts,
                           help="Never generate this word, not even across the prompt boundary (repeatable)."),
    "pattern": click.option("--pattern", metavar="REGEX", callback=_command_line_texts,
                            help="A regular expression the whole new text fully matches (needs seqgen[constrain]); "
                                 "see docs/constrained.md."),
}


def sampling_options(command: Callable[..., None]) -> Callable[..., None]:
    """The sampling flags, gathered once into one seqgen.Sampling that the command receives as `sampling`."""

    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> None:
        from .sampling import Sampling  # here, not at the top: it imports numpy

        chosen = {name: kwargs.pop(name) for name in SAMPLING_FLAGS}
        command(*args, sampling=Sampling.from_kwargs(**chosen), **kwargs)

    for option in reversed(SAMPLING_FLAGS.values()):
        wrapper = option(wrapper)
    return wrapper


# -- reading and printing ----------------------------------------------------------------------


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SeqgenError(f"{name} is not valid UTF-8 (byte {data[exc.start]:#04x} at offset {exc.start}); "
                          "the text must be UTF-8, convert it first (e.g. with iconv)") from None


def read_file(path: str) -> str:
    """The UTF-8 text of a file, or of stdin for `-`, refused beyond MAX_INPUT_BYTES (read no further)."""
    name = "standard input" if path == "-" else path
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
        else:
            with open(path, "rb") as handle:
                data = handle.read(MAX_INPUT_BYTES + 1)
    except OSError as exc:
        raise SeqgenError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise SeqgenError(f"{name} holds more than {MAX_INPUT_BYTES} bytes, the most seqgen-run reads; "
                          "split it into smaller files")
    return _decode(data, name)


def text_argument(value: str) -> str:
    """A text given on the command line, or stdin for `-` without the one trailing newline `echo` adds."""
    if value == "-":
        return read_file("-").removesuffix("\n")
    return argument_text(value, "the text argument")


def argument_text(value: str, name: str) -> str:
    """A command-line text, refused unless it is UTF-8 (other bytes reach argv as lone surrogates)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return _decode(os.fsencode(value), name)
    return value


def unescape(text: str) -> str:
    """`text` with the backslash escapes of ESCAPES replaced by their characters; other backslashes stay."""
    return re.sub(r"\\(.)", lambda match: ESCAPES.get(match[1], match[0]), text)


def _print_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2))


def _print_fields(fields: dict[str, object]) -> None:
    """Aligned `key: value` lines."""
    width = max(map(len, fields)) + 1
    for key, value in fields.items():
        click.echo(f"{key + ':':<{width}} {value}")


def _shown_char(char: str) -> str:
    """A character made visible (a space or newline too); the end-of-item token is `<end>`."""
    return repr(char) if char else "<end>"


# -- commands ----------------------------------------------------------------------------------


@click.group(cls=SeqgenGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="seqgen-run")
def main() -> None:
    """Run a seqgen character model: predict, generate, score, info, bench.

    Where a command reads text, `-` means standard input.
    """


@main.command()
@click.argument("text")
@click.option("-k", "k", type=int, default=5, show_default=True, help="How many characters to show.")
@json_option
@model_options(text=True)
def predict(text: str, k: int, as_json: bool, choice: ModelChoice) -> None:
    """The K most likely next characters after TEXT, with their probabilities."""
    ranked = choice.load().predict(text_argument(text), k)
    if as_json:
        _print_json([{"char": char, "prob": prob} for char, prob in ranked])
        return
    width = max(len(_shown_char(char)) for char, _ in ranked)
    for char, prob in ranked:
        click.echo(f"{_shown_char(char):<{width}}  {prob:.4f}")


@main.command()
@click.argument("prompt", default="")
@click.option("-n", "--max-new-chars", type=int, default=200, show_default=True, help="Most characters to add.")
@sampling_options
@click.option("--num-samples", type=click.IntRange(1, MAX_BATCH), default=1, show_default=True,
              help=f"How many samples to make, 1..{MAX_BATCH} (made together as one batch).")
@click.option("--show-prompt/--no-show-prompt", default=False, show_default=True,
              help="Print the prompt before each sample.")
@click.option("--known", type=click.Path(allow_dash=True), metavar="FILE",
              help="Mark each sample found among FILE's lines (e.g. the training names) and count the new ones.")
@json_option
@model_options(text=True)
def generate(prompt: str, max_new_chars: int, sampling: Sampling, num_samples: int, show_prompt: bool,
             known: str | None, as_json: bool, choice: ModelChoice) -> None:
    """New text after PROMPT, printed as it is made.

    Samples of a running-text model are separated by a blank line; a line-item model's are one per line.
    """
    if prompt == "-" and known == "-":
        raise SeqgenError("the prompt and --known cannot both read standard input; give --known a file")
    model = choice.load()
    prompt = text_argument(prompt)
    if known is not None:
        report_known(model, prompt, max_new_chars, num_samples, set(read_file(known).splitlines()), as_json,
                     sampling)
        return
    head = prompt if show_prompt else ""
    if num_samples == 1 and not as_json:
        pieces = model.stream(prompt, max_new_chars, sampling=sampling)
        first = next(pieces, "")  # the options are checked here, so an error comes before any output
        click.echo(head + first, nl=False)
        for piece in pieces:
            click.echo(piece, nl=False)
        click.echo()
        return
    from .generate import generate_texts  # here, not at the top: it imports numpy
    from .sampling import Sampler

    sampler = Sampler(sampling, report_kept=as_json)
    samples = generate_texts(model, [prompt] * num_samples, max_new_chars, sampler)
    if as_json:
        report: dict[str, object] = {"prompt": prompt, "samples": samples}
        if sampling.constrained:  # per character: the share of the model's probability the constraints kept
            report["kept"] = [[float(step[row]) for step in sampler.kept[: len(sample)]]
                              for row, sample in enumerate(samples)]
        _print_json(report)
    else:
        click.echo(("\n" if model.line_items else "\n\n").join(head + sample for sample in samples))


def report_known(model: Model, prompt: str, max_new_chars: int, num_samples: int, known: set[str], as_json: bool,
                 sampling: Sampling) -> None:
    """makemore's in/out-of-training report: each sample (prompt included) marked known or new."""
    samples = [prompt + s for s in model.generate_batch([prompt] * num_samples, max_new_chars, sampling=sampling)]
    flags = [sample in known for sample in samples]
    if as_json:
        _print_json({"prompt": prompt, "samples": samples, "known": flags, "new": flags.count(False)})
        return
    for sample, flag in zip(samples, flags):
        click.echo(f"{sample}\t{'known' if flag else 'new'}")
    click.echo(f"{flags.count(False)} of {len(samples)} samples are new (not lines of the --known file)", err=True)


@main.command()
@click.argument("file", type=click.Path(allow_dash=True))
@json_option
@model_options(text=True)
def score(file: str, as_json: bool, choice: ModelChoice) -> None:
    """How well the model predicts the UTF-8 text in FILE: loss, bits per character, perplexity."""
    model = choice.load()
    result = model.score(read_file(file))
    if as_json:
        _print_json({"file": file, "tokens": result.tokens, "loss": result.loss,
                     "bits_per_char": result.bits_per_char, "perplexity": result.perplexity})
        return
    _print_fields({"tokens": result.tokens, "loss": f"{result.loss:.4f} nats/char",
                   "bits per char": f"{result.bits_per_char:.4f}", "perplexity": f"{result.perplexity:.4f}"})


@main.command()
@click.argument("name", required=False, metavar="[MODEL]")
@json_option
@model_options()
def info(name: str | None, as_json: bool, choice: ModelChoice) -> None:
    """The metadata of MODEL (or --model); with neither, of the default model, and the shipped models."""
    if name is not None and choice.name is not None:
        raise click.UsageError("give the model either as MODEL or with --model, not both")
    model = replace(choice, name=name or choice.name).load()
    size = model.path.stat().st_size
    shipped = None
    if name is None and choice.name is None:
        from .modelfile import shipped_models  # here, not at the top: it imports numpy

        shipped = shipped_models()
    if as_json:
        extra = {} if shipped is None else {"shipped_models": shipped}
        _print_json({"path": str(model.path), "size": size, "info": model.info, **extra})
        return
    fields = {"path": model.path, "size": f"{size} bytes"}
    for key, value in model.info.items():
        fields[key] = repr(value) if key == "vocabulary" else value if isinstance(value, str) else json.dumps(value)
    if shipped is not None:
        fields["shipped models"] = ", ".join(shipped)
    _print_fields(fields)


@main.command()
@click.option("-n", "--max-new-chars", type=click.IntRange(min=1), default=500, show_default=True,
              help="Characters generated per sequence in each run.")
@click.option("--batch", type=click.IntRange(1, MAX_BATCH), default=64, show_default=True,
              help=f"The larger batch size to time besides batch 1 (at most {MAX_BATCH}).")
@json_option
@model_options()
def bench(max_new_chars: int, batch: int, as_json: bool, choice: ModelChoice) -> None:
    """Speed of greedy generation at batch 1 and at a larger batch (median of a few runs, after a warm-up)."""
    model = choice.load()
    runs = {1: lambda n: [model.generate("", n, temperature=0)]}
    if batch > 1:
        runs[batch] = lambda n: model.generate_batch([""] * batch, n, temperature=0)
    rows = []
    for size, run in runs.items():
        chars, seconds = _timed(run, max_new_chars)
        rows.append({"batch": size, "chars": chars, "seconds": seconds,
                     "us_per_char": seconds / chars * 1e6, "chars_per_second": chars / seconds})
    if as_json:
        _print_json(rows)
        return
    line = "{:>5}  {:>8}  {:>9}  {:>11}".format
    click.echo(line("batch", "chars", "us/char", "chars/s"))
    for row in rows:
        click.echo(line(row["batch"], row["chars"], f"{row['us_per_char']:.1f}", f"{row['chars_per_second']:.1f}"))


def _timed(run: Callable[[int], list[str]], max_new_chars: int) -> tuple[int, float]:
    """Characters one run makes and its median time in seconds, after a short warm-up run."""
    run(BENCH_WARMUP_CHARS)
    times = []
    for _ in range(BENCH_REPEATS):
        start = time.perf_counter()
        chars = sum(map(len, run(max_new_chars)))
        times.append(time.perf_counter() - start)
    if chars == 0:
        raise SeqgenError("the model ended every text at once, so there is nothing to time")
    import statistics  # here: it costs every other command start-up time

    return chars, statistics.median(times)


@main.command()
@click.option("--model", "model_specs", multiple=True, metavar="[NAME=]PATH_OR_NAME",
              help="A model to serve (repeatable), called by its short name or file stem, or by NAME.  "
                   "[default: the default model]")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port to listen on; 0 picks a free one (printed at start).")
@click.option("--max-batch", type=click.IntRange(1, 1024), default=64, show_default=True,
              help="Most sequences of one model stepped together.")
@click.option("--max-queue", type=click.IntRange(1, 100_000), default=256, show_default=True,
              help="Most requests per model waiting for room in the batch; more get 429.")
@click.option("--max-prompt-chars", type=click.IntRange(1, 1_000_000), default=4096, show_default=True,
              help="Longest prompt (or /v1/predict, /v1/score text); longer gets 413.")
@click.option("--max-tokens", "max_tokens_limit", type=click.IntRange(1, 1_000_000), default=4096,
              show_default=True, help="Largest max_tokens (characters) a request may ask for.")
@click.option("--max-n", type=click.IntRange(1, 1024),
              help="Most choices (prompts x n) in one request.  [default: 16, or --max-batch if smaller]")
@click.option("--max-body-bytes", type=click.IntRange(1024, 1 << 30), default=1 << 20, show_default=True,
              help="Largest request body; larger gets 413.")
@click.option("--api-key", envvar="SEQGEN_API_KEY", show_envvar=True,
              help="Require `Authorization: Bearer KEY` on every endpoint but /health.")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="Allow browser pages from ORIGIN (repeatable; * for any).  [default: no CORS]")
@click.option("--threads", type=click.IntRange(1, 256), default=1, show_default=True,
              help="onnxruntime threads per model.")
@click.option("--shutdown-grace", type=click.FloatRange(0, 60), default=3.0, show_default=True,
              help="Seconds running completions may go on after SIGTERM before they are ended.")
def serve(model_specs: tuple[str, ...], host: str, port: int, max_batch: int, max_queue: int, max_prompt_chars: int,
          max_tokens_limit: int, max_n: int | None, max_body_bytes: int, api_key: str | None,
          cors_origins: tuple[str, ...], threads: int, shutdown_grace: float) -> None:
    """An OpenAI-compatible HTTP server (completions, models) with predict, score and health.

    Concurrent requests of a model share one batched step per character. Needs the serve extra.
    """
    try:
        from .serve import ServeOptions, bind
        from .serve import serve as run_server
        from .serve.api import Limits
    except ImportError as exc:
        raise InputError(f'the serve command needs the serve extra ({exc.name} is missing): '
                         'pip install "seqgen[serve]"') from None
    max_n = min(16, max_batch) if max_n is None else max_n
    if max_n > max_batch:
        raise click.UsageError(f"--max-n ({max_n}) cannot exceed --max-batch ({max_batch}): such a request could "
                               "never fit in the batch")
    if api_key is not None and not api_key.strip():
        raise click.UsageError("--api-key (or SEQGEN_API_KEY) is empty; give a key or leave it unset")
    models = load_served(model_specs, threads)
    sock = bind(host, port)
    options = ServeOptions(Limits(max_prompt_chars, max_tokens_limit, max_n, max_body_bytes), max_batch, max_queue,
                           api_key, cors_origins)
    shown = f"[{host}]" if ":" in host else host
    click.echo(f"seqgen-run serve: {', '.join(models)} on http://{shown}:{sock.getsockname()[1]}/v1 "
               "(SIGTERM or Ctrl-C stops)")
    sys.stdout.flush()
    click.get_current_context().exit(run_server(models, sock, options, grace=shutdown_grace))


def load_served(specs: tuple[str, ...], threads: int) -> dict[str, Model]:
    """The models to serve by name: `NAME=PATH_OR_NAME`, or a shipped short name, or a file (named by its stem)."""
    from . import load  # here, not at the top: loading imports onnxruntime

    models: dict[str, Model] = {}
    for spec in specs or ("",):
        name, _, source = spec.partition("=") if "=" in spec else ("", "", spec)
        model = load(source or None, threads=threads)
        name = name or Path(source).stem or model.path.stem
        if name in models:
            raise SeqgenError(f"two models are called {name!r}; name one with --model NAME=PATH")
        models[name] = model
    return models


def run() -> None:
    """The `seqgen-run` console script: `main`, then an exit that skips the interpreter's teardown.

    Tearing down numpy and onnxruntime takes about 40 ms, longer than a prediction; the process holds
    nothing that needs it (no files open for writing, no atexit work), so the output is flushed here
    and the process ends at once with main's exit code.
    """
    if sys.stderr is None:  # started with stderr closed (`2>&-`): errors go nowhere, never to stdout
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115 (kept open until os._exit)
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
        if not isinstance(exc.code, int | None):
            print(exc.code, file=sys.stderr)  # as the interpreter would
    for stream in (sys.stdout, sys.stderr):  # None where the shell closed the descriptor (`>&-`)
        try:
            if stream is not None:
                stream.flush()
        except BrokenPipeError:  # the reader went away (`| head`): stop quietly, as the commands do
            pass
        except OSError as exc:  # a full disk under `> out.txt`: the output is incomplete, say so
            if stream is sys.stdout and sys.stderr is not None:
                print(f"Error: cannot write the output: {exc.strerror}", file=sys.stderr, flush=True)
            code = code or 1
    os._exit(code)
