"""The runtime against the targets of the performance issue, all measured side by side in one run.

    python benchmarks/bench_runtime.py [--model PATH_OR_NAME] [--int8 PATH] [--repeats 7] [--chars 300] [--json OUT]

METRICS has a row per measurement: label, unit, what it times, its sampler, and where it is judged, the ratio of
two medians of the same run and the target. Samples are taken in interleaved rounds after a warm-up; ratios are
judged on wall time, the same ratio in CPU time beside it. One thread everywhere. The memory floors (numpy's
matrix-vector products over the model's weight shapes, one BLAS thread) are a reference, not a proven lower
bound. Read the spread before trusting a FAIL. `--repeats 1 --chars 20` checks that every row is produced.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import json
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from benchkit import interleaved, machine, process_usage, timed, versions, write_json

import seqgen
from seqgen import modelfile
from seqgen.cells import CELLS

# -- the graph ---------------------------------------------------------------------------------------------


def raw_step(model: seqgen.Model, tokens: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """The graph run once on `tokens` [batch, time] from a zero state: logits and the new state."""
    logits, state = model.graph.run(tokens, model.graph.zero_state(tokens.shape[0]))
    return logits, list(state.values())


def bound_step(model: seqgen.Model, token: int) -> Callable[[], object]:
    """onnxruntime's own cost of a step: run_with_iobinding on buffers bound once, the state not carried."""
    graph = model.graph
    shape, binding = (graph.layers, 1, graph.hidden_size), graph.io_binding()
    inputs = [modelfile.TOKENS_INPUT, *graph.state_names]
    arrays = [np.full((1, 1), token, np.int64), *(np.zeros(shape, np.float32) for _ in graph.state_names),
              np.empty((1, 1, graph.vocab_size), np.float32), *(np.empty(shape, np.float32) for _ in graph.state_names)]
    for name, array in zip(inputs + graph.output_names, arrays):
        bind = binding.bind_input if name in inputs else binding.bind_output
        bind(name, "cpu", 0, array.dtype, array.shape, array.ctypes.data)
    return lambda bound=arrays: graph.run_with_iobinding(binding)  # the buffers live as long as the call


# -- the measurements --------------------------------------------------------------------------------------

WINDOW, BATCH, SHORT_PROMPT, PROMPT_CHARS, STEPWISE_CHARS = 64, 64, 2, 10_000, 1_000
"""The re-run window; generate_batch's prompts and their length; the one-call prompt; steps per stepping sample."""
PREDICT_TEXT, PROCESS_RUNS = "To be or not to b", 5  # a process sample: the median of 5 starts (a start varies)
SAMPLING = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "seed": 1}
PROMPT_SOURCE = (
    "ROMEO:\nTo be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"
    "The slings and arrows of outrageous fortune,\nOr to take arms against a sea of troubles\n"
    "And by opposing end them. To die, to sleep;\nNo more; and by a sleep to say we end\n"
)
BASELINE = [sys.executable, "-c", "import numpy, onnxruntime"]
GEMV = """import json, sys, time
import numpy as np
shapes, calls = json.loads(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
pairs = [(rng.standard_normal(s, dtype=np.float32), rng.standard_normal(s[1], dtype=np.float32)) for s in shapes]
def once():
    for _ in range(calls):
        for matrix, vector in pairs:
            matrix @ vector
once()
wall, cpu = time.perf_counter(), time.process_time()
once()
print(json.dumps([time.perf_counter() - wall, time.process_time() - cpu, calls]))"""
"""`calls` rounds of matrix-vector products over float32 matrices of the given shapes (the values do not change
the cost), timed in a child process so that numpy's BLAS can be held to one thread."""
Sample = tuple[float, float, int]
"""One sample of a measurement: wall and CPU seconds, and the units (characters, calls) they cover."""


class Skipped(Exception):
    """A measurement this model or machine cannot take; the message says why."""


def repeated(action: Callable[[], object], calls: int) -> Callable[[], Sample]:
    """A sampler: `calls` calls of `action` (a step, whose cost does not depend on the steps before it)."""
    return lambda: timed(lambda: [action() for _ in range(calls)] and calls)


def in_vocabulary(vocab: seqgen.Vocabulary, text: str, length: int) -> str:
    """`text` without characters the model lacks, repeated or padded (seeded) to `length` characters."""
    kept = "".join(c for c in text if c in set(vocab.chars))
    if len(kept) < min(length, 64):
        kept += "".join(np.random.default_rng(0).choice(list(vocab.chars), length))
    return (kept * (length // len(kept) + 1))[:length]


class Bench:
    """One run: the model, its inputs, and the samplers METRICS names; each sets its measurement up and notes what
    the report should say besides the timing, or raises Skipped."""

    def __init__(self, model: seqgen.Model, args: argparse.Namespace, stack: ExitStack) -> None:
        self.model, self.file, self.vocab, self.args, self.stack = model, model.file, model.vocab, args, stack
        self.chars, self.skip = args.chars, 0 if self.file.line_items else 1  # running text: never the boundary
        text = in_vocabulary(self.vocab, PROMPT_SOURCE, 80)  # the window method's start: every window full at once
        self.history = np.concatenate([[seqgen.BOUNDARY], self.vocab.encode(text)])
        self.token, self.text = int(self.history[1]), in_vocabulary(self.vocab, PROMPT_SOURCE, PROMPT_CHARS)
        # Short prompts: a prompt costs up to its length in steps once (and generate_batch feeds each distinct one
        # apart), which would otherwise be charged to the generated characters.
        rng = np.random.default_rng(0)
        self.prompts = ["".join(rng.choice(list(self.vocab.chars), SHORT_PROMPT)) for _ in range(BATCH)]
        self.notes: dict[str, str] = {}
        self.skips: dict[str, str] = {}
        self.rss: dict[str, list[float]] = {"predict": [], "baseline": []}
        self.calls: list[int] = []  # session.steps after each one-call prompt
        self.predict: list[str] = []  # the seqgen-run command timed
        # bytecode cached in a temporary folder, as in an installation, even where PYTHONDONTWRITEBYTECODE is set
        self.env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.env["PYTHONPYCACHEPREFIX"] = stack.enter_context(tempfile.TemporaryDirectory())

    def generating(self, model: seqgen.Model, **options: object) -> Callable[[], Sample]:
        """Model.generate of `chars` characters from the first short prompt; a sample is one call."""
        return lambda: timed(lambda: len(model.generate(self.prompts[0], self.chars, **options)))

    def batch(self) -> Callable[[], Sample]:
        """Greedy generate_batch from all BATCH short prompts; its units are every row's characters."""
        return lambda: timed(lambda: sum(map(len, self.model.generate_batch(self.prompts, self.chars, temperature=0))))

    def floor(self) -> Callable[[], Sample]:
        """Session.step with a fixed token (the first step, not timed, binds the graph)."""
        session, ids = self.model.session(), np.array([self.token], np.int64)
        session.step(ids)
        return repeated(lambda: session.step(ids), self.chars)

    def window64(self) -> Callable[[], Sample]:
        """Hand-rolled generation: each character runs the graph on the last WINDOW tokens from a zero state."""
        history = self.history.tolist()

        def character() -> None:
            logits = raw_step(self.model, np.array([history[-WINDOW:]], np.int64))[0]
            history.append(int(logits[0, -1, self.skip:].argmax()) + self.skip)

        return repeated(character, max(10, self.chars // 5))  # 10-50x a step: fewer characters, same cost per character

    def torch_eager(self) -> Callable[[], Sample]:
        """Greedy generation with seqgen.train's CharRNN in torch eager, one token at a time, the state carried."""
        try:
            import torch

            from seqgen.train import CharRNN
        except ImportError as exc:
            raise Skipped(f"{exc.name} not installed") from None
        torch.set_num_threads(1)
        file = self.file
        net = CharRNN(file.vocab.size, file.cell, file.embedding_size, file.hidden_size, file.layers).eval()
        try:
            self.notes["torch_eager"] = f"weights copied from the ONNX file (logits agree to {self.copy(net):.1e})"
        except Exception as exc:  # not a float seqgen graph (int8?) or other names: random weights, same cost
            self.notes["torch_eager"] = f"random weights of the same shapes (could not copy: {exc!r})"

        carried = [torch.tensor([[self.token]]), net.zero_state(1)]

        def character() -> None:
            with torch.no_grad():
                logits, carried[1] = net(*carried)
                carried[0] = logits[:, -1, self.skip:].argmax(-1, keepdim=True) + self.skip

        return repeated(character, self.chars)

    def copy(self, net: object) -> float:
        """The ONNX file's weights into the torch `net` (ONNX's gate block j is torch's block gate_order[j]), and
        the largest difference of the two's logits on a probe."""
        import onnx
        import torch
        from onnx import numpy_helper

        order = CELLS[self.file.cell].gate_order
        inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(self.file.path).graph.initializer}
        weights = {"embedding.weight": inits["embedding"], "head.weight": inits["head_weight"].T,
                   "head.bias": inits["head_bias"]}
        for layer in range(self.file.layers):
            for kind, value in (("weight_ih", inits[f"W{layer}"][0]), ("weight_hh", inits[f"R{layer}"][0]),
                                *zip(("bias_ih", "bias_hh"), np.split(inits[f"B{layer}"][0], 2))):
                blocks = value.reshape(len(order), -1, *value.shape[1:])
                weights[f"rnn.{kind}_l{layer}"] = blocks[np.argsort(order)].reshape(value.shape)
        net.load_state_dict({k: torch.from_numpy(np.array(v, np.float32)) for k, v in weights.items()}, strict=True)
        probe = self.history[None, :17]
        with torch.no_grad():
            expected = net(torch.from_numpy(probe), net.zero_state(1))[0].numpy()
        return float(np.abs(raw_step(self.model, probe)[0] - expected).max())

    def int8(self) -> Callable[[], Sample]:
        """Greedy generation with the int8 model: --int8, else the shipped <model>-int8, else quantized here."""
        name = f"{self.model.path.stem}-int8"
        if self.args.int8:
            path, self.notes["int8"] = Path(self.args.int8), f"--int8 {self.args.int8}"
        elif self.model.info.get("quantization") == "int8":
            raise Skipped("the model itself is int8")
        elif name in modelfile.shipped_models():
            path, self.notes["int8"] = modelfile.resolve(name), f"shipped model {name}"
        else:
            try:
                from seqgen.train.quantize import quantize_int8
            except ImportError as exc:
                raise Skipped(f"no int8 model given or shipped, and cannot quantize ({exc.name} not installed)") \
                    from None
            path = Path(self.stack.enter_context(tempfile.TemporaryDirectory())) / f"{name}.onnx"
            print("quantizing to int8 (seqgen.train.quantize.quantize_int8) ...", file=sys.stderr, flush=True)
            self.notes["int8"] = f"quantized here with quantize_int8 (top-1 agreement " \
                                 f"{quantize_int8(self.model.path, path)['top1_agreement']})"
        return self.generating(seqgen.load(path, threads=1), temperature=0)

    def prompt(self) -> Callable[[], Sample]:
        """A PROMPT_CHARS text in one Session.feed (session.steps goes to self.calls)."""

        def once() -> int:
            session = self.model.session()
            session.feed(self.text)
            self.calls.append(session.steps)
            return len(self.text)

        return lambda: timed(once)

    def prompt_stepwise(self) -> Callable[[], Sample]:
        """The same text in Session.step calls, one per character."""
        session, ids = self.model.session(), itertools.cycle(self.vocab.encode(self.text)[:, None])
        session.logits()  # the boundary token, as the one-call feed also does
        return repeated(lambda: session.step(next(ids)), STEPWISE_CHARS)

    def gemv(self, recurrent_only: bool) -> Callable[[], Sample]:
        """A memory floor: rounds of numpy matrix-vector products over the matrices a step multiplies by, or over
        the recurrent ones alone (what a prompt cannot batch)."""
        file = self.file
        rows = CELLS[file.cell].gates * file.hidden_size
        shapes = [(rows, file.hidden_size)] * file.layers
        if not recurrent_only:
            shapes += [(rows, file.embedding_size), *[(rows, file.hidden_size)] * (file.layers - 1),
                       (file.vocab.size, file.hidden_size)]
        one_thread = dict.fromkeys(("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"), "1")
        command = [sys.executable, "-c", GEMV, json.dumps(shapes), str(self.chars)]
        return lambda: tuple(json.loads(subprocess.run(command, check=True, capture_output=True, text=True,
                                                       env=os.environ | one_thread).stdout))

    def process(self, command: list[str], rss: list[float]) -> Callable[[], Sample]:
        """The median wall and CPU time of PROCESS_RUNS starts of `command`; their peak RSS go to `rss`."""

        def sample() -> Sample:
            runs = [process_usage(command, self.env) for _ in range(PROCESS_RUNS)]
            rss.extend(peak for _, _, peak in runs if peak is not None)
            return statistics.median(run[0] for run in runs), statistics.median(run[1] for run in runs), 1

        return sample

    def process_wall(self) -> Callable[[], Sample]:
        """`seqgen-run predict` as a user starts it (the installed script next to this interpreter, if any)."""
        script = shutil.which("seqgen-run", path=str(Path(sys.executable).parent))
        text = PREDICT_TEXT if set(PREDICT_TEXT) <= set(self.vocab.chars) else \
            in_vocabulary(self.vocab, PREDICT_TEXT, len(PREDICT_TEXT))  # a model without those characters
        command = [*([script] if script else [sys.executable, "-c", "from seqgen.cli import run; run()"]), "predict",
                   text, *(["--model", str(self.model.path)] * bool(self.args.model))]
        self.predict[:] = command
        try:
            process_usage(command, self.env)  # also fills the bytecode cache
        except RuntimeError as exc:
            self.skips["process_rss"] = "seqgen-run failed"
            raise Skipped(f"seqgen-run failed: {exc}") from None
        return self.process(command, self.rss["predict"])


# -- the report ----------------------------------------------------------------------------------------------


Note = Callable[[Bench, dict[str, float]], str]
"""More for a row's note from the run and every timing's median (seconds per unit)."""


@dataclass(frozen=True)
class Metric:
    """A measurement: its row of the report ('' for a timing that only feeds another's ratio), unit, sampler
    (None: reported from another's samples), what it times, the ratio of two medians judged against a target, and
    what to add to its note once every median is known."""

    label: str
    unit: str
    sampler: Callable[[Bench], Callable[[], Sample]] | None
    what: str
    ratio: tuple[str, str] | None = None
    ratio_of: str = ""
    target: float | None = None
    op: str = ""
    note: Note = lambda b, median: ""


def needs(key: str, times: int, floor: str, of: str, what: str = "") -> Note:
    """A note: the time `key` over `times` (what a target of `times` needs), and that time over `floor`."""
    return lambda b, m: f"{times}x needs {what}{m[key] / times * 1e6:.1f} µs/char, {m[key] / times / m[floor]:.2f}x" \
                        f" {of}"


METRICS = {
    "floor": Metric(
        "1. floor: Session.step, batch 1", "µs/call", Bench.floor,
        "Session.step with a fixed token in a loop; reference for greedy"),
    "floor_raw": Metric(
        "   floor, run_with_iobinding only", "µs/call", lambda b: repeated(bound_step(b.model, b.token), b.chars),
        "the graph on buffers bound once, no token write or state copies (information)",
        ("floor_raw", "floor"), "of floor"),
    "floor_memory": Metric(
        "   memory floor of a step (numpy)", "µs/call", lambda b: b.gemv(recurrent_only=False),
        "numpy GEMV over float32 matrices of every weight shape of a step, one BLAS thread (information)",
        ("floor", "floor_memory"), "floor / this"),
    "greedy": Metric(
        "2. greedy generate", "µs/char", lambda b: b.generating(b.model, temperature=0),
        f"Model.generate with temperature 0 from a {SHORT_PROMPT}-character prompt; whole call / characters made",
        ("greedy", "floor"), "of floor", 1.15, "<="),
    "sampled": Metric(
        "3. sampled generate", "µs/char", lambda b: b.generating(b.model, **SAMPLING),
        ", ".join(f"{k}={v}" for k, v in SAMPLING.items()), ("sampled", "greedy"), "of greedy", 1.25, "<="),
    "torch_eager": Metric(
        "4. torch eager step (same architecture)", "µs/char", Bench.torch_eager,
        "seqgen.train.CharRNN one token at a time with carried state", ("torch_eager", "greedy"),
        "slower than greedy", 6, ">=", needs("torch_eager", 6, "floor_memory", "the memory floor", "greedy at ")),
    "window64": Metric(
        "5. re-run 64-char window", "µs/char", Bench.window64,
        f"plain run() on the last {WINDOW} tokens from a zero state, per character (from an 80-character text, "
        "so every window is full)", ("window64", "greedy"), "slower than greedy", 25, ">="),
    "int8": Metric(
        "6. int8 greedy", "µs/char", Bench.int8,
        "greedy generation with the int8 model", ("int8", "greedy"), "of float greedy", 0.65, "<="),
    "batch64": Metric(
        f"7. generate_batch x{BATCH}, per sequence", "µs/char/seq", Bench.batch,
        f"{BATCH} random {SHORT_PROMPT}-character prompts, greedy: time / (prompts x characters)",
        ("batch64", "greedy"), "of batch 1", 0.3, "<="),
    "process_wall": Metric(
        "8. seqgen-run predict, wall", "ms", Bench.process_wall,
        f"a process predicting {PREDICT_TEXT!r}, each sample the median of {PROCESS_RUNS} starts, bytecode cached",
        ("process_wall", "process_baseline"), "of the import", 1.3, "<=",
        lambda b, m: f"{shlex.join(b.predict)} vs {shlex.join(BASELINE)} (import: {m['process_baseline'] * 1e3:.1f} "
                     "ms)"),
    "process_baseline": Metric("", "ms", lambda b: b.process(BASELINE, b.rss["baseline"]), "the import alone"),
    "process_rss": Metric(
        "8. seqgen-run predict, peak RSS", "MiB", None,
        "ru_maxrss of the same processes, via a small launcher", target=90, op="<="),
    "prompt": Metric(
        f"9. {PROMPT_CHARS:,}-char prompt, one call", "µs/char", Bench.prompt,
        f"{PROMPT_CHARS:,} characters in one Session.feed vs Session.step per character",
        ("prompt_stepwise", "prompt"), "faster than stepping", 20, ">=",
        lambda b, m: f"session.steps == {sorted(set(b.calls))}; stepping: {m['prompt_stepwise'] * 1e6:.1f} µs/char"),
    "prompt_stepwise": Metric("", "µs/char", Bench.prompt_stepwise, "Session.step per character"),
    "prompt_memory": Metric(
        "   memory floor of a prompt char", "µs/char", lambda b: b.gemv(recurrent_only=True),
        "numpy GEMV over the recurrent matrices alone, one BLAS thread (the rest batches over the prompt)",
        ("prompt", "prompt_memory"), "prompt / this", note=needs("prompt_stepwise", 20, "prompt_memory", "this")),
}
"""Every measurement; the labelled ones are the report's rows and the JSON's `metrics`."""


def judged(measured: float, metric: Metric) -> str:
    if metric.target is None:
        return "info"
    return "PASS" if (measured <= metric.target if metric.op == "<=" else measured >= metric.target) else "FAIL"


def results_of(b: Bench, samples: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, object]]:
    """Every labelled metric's row: the medians of its samples (wall and CPU seconds per unit), and the ratio of its
    two timings judged against its target on wall time (the CPU-time ratio beside it), or skipped and why."""
    wall, cpu = ({key: statistics.median(s[kind]) for key, s in samples.items()} for kind in ("wall", "cpu"))
    if b.rss["predict"]:
        b.notes["process_rss"] = f"largest of {len(b.rss['predict'])} runs; the import's: " \
                                 f"{max(b.rss['baseline']):.1f} MiB"
    elif "process_rss" not in b.skips:
        b.skips["process_rss"] = "no resource module on this platform"
    results = {}
    for key, metric in METRICS.items():
        if not metric.label:
            continue
        row: dict[str, object] = {"value": None, "unit": metric.unit, "ratio": None, "cpu_ratio": None,
                                  "ratio_of": metric.ratio_of, "target": metric.target, "target_op": metric.op,
                                  "target_unit": "x" if metric.ratio else f" {metric.unit}", "status": "info",
                                  "note": "; ".join(filter(None, (metric.what, b.notes.get(key),
                                                                  key in wall and metric.note(b, wall))))}
        if key in wall:
            scale = {"µs": 1e6, "ms": 1e3}[metric.unit.split("/")[0]]
            spread = (max(samples[key]["wall"]) - min(samples[key]["wall"])) / wall[key] if wall[key] else 0.0
            row |= {"value": wall[key] * scale, "cpu_value": cpu[key] * scale,
                    "units_per_sample": samples[key]["units"], "spread": spread}
        if metric.ratio and all(name in wall for name in metric.ratio):
            a, c = metric.ratio
            row |= {"ratio": wall[a] / wall[c], "cpu_ratio": cpu[a] / cpu[c],
                    "status": judged(wall[a] / wall[c], metric)}
        results[key] = row | ({"status": "skipped", "note": b.skips[key]} if key in b.skips else {})
    if b.rss["predict"]:
        peak = max(b.rss["predict"])
        results["process_rss"] |= {"value": peak, "status": judged(peak, METRICS["process_rss"]),
                                   "samples": b.rss["predict"], "baseline_samples": b.rss["baseline"]}
    results["prompt"]["calls"] = sorted(set(b.calls))
    if set(b.calls) != {1}:
        results["prompt"] |= {"status": "FAIL", "note": results["prompt"]["note"] + "; NOT consumed in one call"}
    return results


def print_table(results: dict[str, dict[str, object]]) -> None:
    line = "{:<40} {:>16} {:>6} {:>26} {:>7} {:>10}  {}".format
    print(line("measurement", "median", "spread", "ratio", "cpu", "target", "result") + "\n" + "-" * 118)

    def times(x: float | None) -> str:
        return "" if x is None else f"{x:.3f}x" if x < 10 else f"{x:.1f}x"

    for key, row in results.items():
        value = "-" if row["value"] is None else f"{row['value']:.1f} {row['unit']}"
        spread = f"{100 * row['spread']:.0f}%" if "spread" in row else ""
        ratio = f"{times(row['ratio'])} {row['ratio_of']}" if row["ratio"] is not None else ""
        target = "" if row["target"] is None else f"{row['target_op']} {row['target']:g}{row['target_unit']}"
        result = row["status"] if row["status"] != "skipped" else f"skipped ({row['note']})"
        print(line(METRICS[key].label, value, spread, ratio, times(row["cpu_ratio"]), target, result))
    print("\nratio: of wall-time medians, judged against the target; cpu: the same ratio in process CPU time, "
          "less disturbed by other load")
    for key, row in results.items():
        if row["status"] != "skipped":
            print(f"{METRICS[key].label.split(':')[0].strip()}: {row['note']}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", metavar="PATH_OR_NAME", help="model file or shipped name [default: the default]")
    parser.add_argument("--int8", metavar="PATH", help="int8 model to compare [default: shipped <model>-int8, "
                                                        "else quantized here when onnx is installed]")
    parser.add_argument("--repeats", type=int, default=7, help="samples of each measurement [7]")
    parser.add_argument("--chars", type=int, default=300, help="characters generated per sample [300]")
    parser.add_argument("--json", metavar="OUT", help="also write every number to this JSON file")
    args = parser.parse_args(argv)
    if args.repeats < 1 or args.chars < 1:
        parser.error("--repeats and --chars must be at least 1")
    if args.model is None and modelfile.DEFAULT_MODEL not in modelfile.shipped_models():
        print(f"No default model ({modelfile.DEFAULT_MODEL!r}) is shipped yet (shipped: "
              f"{', '.join(modelfile.shipped_models()) or 'none'}); pass --model PATH_OR_NAME to benchmark a model "
              "file.", file=sys.stderr)
        return 2
    command = shlex.join(["python", os.path.relpath(__file__), *argv])
    model = seqgen.load(args.model, threads=1)
    file = model.file
    header = {"command": command, "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "machine": machine(), "versions": versions("seqgen", "onnxruntime", "numpy", "torch", "onnx"),
              "model": {"path": str(model.path), "bytes": model.path.stat().st_size, "cell": file.cell,
                        "layers": file.layers, "hidden_size": file.hidden_size, "embedding_size": file.embedding_size,
                        "vocab_size": file.vocab.size, "quantization": model.info.get("quantization", "?")},
              "settings": {"repeats": args.repeats, "chars": args.chars, "threads": 1}}
    print(f"command: {command}\ndate:    {header['date']}")
    for name in ("machine", "versions", "model"):
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in header[name].items()))
    print(f"settings: {args.repeats} repeats (median), {args.chars} characters per sample, 1 thread\n", flush=True)

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    with ExitStack() as stack:
        b, samplers = Bench(model, args, stack), {}
        for key, metric in METRICS.items():
            try:
                if metric.sampler:
                    samplers[key] = metric.sampler(b)
            except Skipped as exc:
                b.skips[key] = str(exc)
        log(f"measuring {len(samplers)} things x {args.repeats} rounds ...")
        taken = interleaved(samplers, args.repeats, log)
    samples = {key: {"units": s[-1][2], "wall": [w / n for w, _, n in s], "cpu": [c / n for _, c, n in s]}
               for key, s in taken.items()}  # seconds per unit
    results = results_of(b, samples)
    print()
    print_table(results)
    failed = [key for key, row in results.items() if row["status"] == "FAIL"]
    print(f"\n{len(failed)} target(s) failed{': ' + ', '.join(failed) if failed else ''}. "
          "Timings are medians of interleaved repeats; a high spread means a noisy machine.")
    if args.json:
        write_json(args.json, {**header, "metrics": results, "samples": samples})
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
