"""The runtime against the targets of the performance issue, all measured side by side in one run.

    python benchmarks/bench_runtime.py [--model PATH_OR_NAME] [--int8 PATH] [--repeats 7] [--chars 300] [--json OUT]

METRICS says what each measurement is and its target. Each is sampled `--repeats` times in rounds (A B C ...
then ... C B A, so load and drift hit all alike) after a warm-up; a ratio is of two medians of the same run,
judged on wall time, with the same ratio in CPU time (a child's user + system time) beside it. One thread
everywhere. The memory floors (numpy's matrix-vector products over the model's weight shapes, one BLAS
thread) are a reference, not a proven lower bound. Read the spread column before trusting a FAIL.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

import seqgen
from seqgen import modelfile
from seqgen.cells import CELLS

Sample = Callable[[], tuple[float, float]]
"""Takes one sample of a measurement: (wall, cpu) seconds per unit."""

WINDOW, BATCH, PROMPT_CHARS = 64, 64, 10_000
SHORT_PROMPT = 2
"""Length of the prompts of the generation measurements (random characters of the vocabulary)."""
STEPWISE_CHARS = 1_000
"""Characters fed one at a time for the prompt comparison (the cost per character does not depend on it)."""
PREDICT_TEXT = "To be or not to b"
PROCESS_RUNS = 5
"""Process starts per sample of the process measurements (their median): a start varies by 50% on a shared VM."""
SAMPLING = {"temperature": 0.8, "top_k": 40, "top_p": 0.95, "seed": 1}
PROMPT_SOURCE = (
    "ROMEO:\nTo be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n"
    "The slings and arrows of outrageous fortune,\nOr to take arms against a sea of troubles\n"
    "And by opposing end them. To die, to sleep;\nNo more; and by a sleep to say we end\n"
)


@dataclass(frozen=True)
class Metric:
    """One row of the report: what it measures, its unit, and the ratio of two timings judged against a target."""

    label: str
    what: str
    unit: str
    ratio: tuple[str, str] | None = None
    ratio_of: str = ""
    target: float | None = None
    op: str = ""


METRICS = {
    "floor": Metric("1. floor: Session.step, batch 1", "Session.step with a fixed token in a loop; reference for "
                    "greedy", "µs/call"),
    "floor_raw": Metric("   floor, run_with_iobinding only", "the graph on buffers bound once, no token write or "
                        "state copies (information)", "µs/call", ("floor_raw", "floor"), "of floor"),
    "floor_memory": Metric("   memory floor of a step (numpy)", "numpy GEMV over float32 matrices of every weight "
                           "shape of a step, one BLAS thread (information)", "µs/call", ("floor", "floor_memory"),
                           "floor / this"),
    "greedy": Metric("2. greedy generate", f"Model.generate with temperature 0 from a {SHORT_PROMPT}-character "
                     "prompt; whole call / characters made", "µs/char", ("greedy", "floor"), "of floor", 1.15, "<="),
    "sampled": Metric("3. sampled generate", ", ".join(f"{k}={v}" for k, v in SAMPLING.items()), "µs/char",
                      ("sampled", "greedy"), "of greedy", 1.25, "<="),
    "torch_eager": Metric("4. torch eager step (same architecture)", "seqgen.train.CharRNN one token at a time with "
                          "carried state", "µs/char", ("torch_eager", "greedy"), "slower than greedy", 6, ">="),
    "window64": Metric("5. re-run 64-char window", f"plain run() on the last {WINDOW} tokens from a zero state, per "
                       "character (from an 80-character text, so every window is full)", "µs/char",
                       ("window64", "greedy"), "slower than greedy", 25, ">="),
    "int8": Metric("6. int8 greedy", "greedy generation with the int8 model", "µs/char", ("int8", "greedy"),
                   "of float greedy", 0.65, "<="),
    "batch64": Metric(f"7. generate_batch x{BATCH}, per sequence", f"{BATCH} random {SHORT_PROMPT}-character "
                      "prompts, greedy: time / (prompts x characters)", "µs/char/seq", ("batch64", "greedy"),
                      "of batch 1", 0.3, "<="),
    "process_wall": Metric("8. seqgen-run predict, wall", f"a process predicting {PREDICT_TEXT!r}, each sample the "
                           f"median of {PROCESS_RUNS} starts, bytecode cached", "ms",
                           ("process_wall", "process_baseline"), "of the import", 1.3, "<="),
    "process_rss": Metric("8. seqgen-run predict, peak RSS", "ru_maxrss of the same processes, via a small launcher",
                          "MiB", target=90, op="<="),
    "prompt": Metric(f"9. {PROMPT_CHARS:,}-char prompt, one call", f"{PROMPT_CHARS:,} characters in one Session.feed "
                     "vs Session.step per character", "µs/char", ("prompt_stepwise", "prompt"),
                     "faster than stepping", 20, ">="),
    "prompt_memory": Metric("   memory floor of a prompt char", "numpy GEMV over the recurrent matrices alone, one "
                            "BLAS thread (the rest batches over the prompt)", "µs/char", ("prompt", "prompt_memory"),
                            "prompt / this"),
}
"""Every metric of the report and of the JSON's `metrics` (a skipped one has status 'skipped' and a reason)."""


# -- timing ------------------------------------------------------------------------------------------


@dataclass
class Timed:
    """One measurement: `run()` takes one sample, (wall, cpu) seconds per unit; samples collect over rounds."""

    key: str
    run: Sample
    units: int
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.wall)


def per_unit(function: Callable[[], int]) -> tuple[float, float]:
    """Wall and CPU seconds per unit of one call of `function`, which returns how many units it did."""
    wall, cpu = time.perf_counter(), time.process_time()
    units = max(function(), 1)
    return (time.perf_counter() - wall) / units, (time.process_time() - cpu) / units


def repeated(make: Callable[[], Callable[[], object]], calls: int) -> Sample:
    """A sample: `calls` calls of the action `make()` returns (made before the clock starts), per call."""

    def sample() -> tuple[float, float]:
        action = make()
        return per_unit(lambda: [action() for _ in range(calls)] and calls)

    return sample


def run_rounds(timings: list[Timed], repeats: int, log: Callable[[str], None]) -> None:
    """Warm each measurement up once, then take `repeats` samples of each, interleaved."""
    for timed in timings:
        timed.run()
    for round_index in range(repeats):
        for timed in timings if round_index % 2 == 0 else timings[::-1]:
            wall, cpu = timed.run()
            timed.wall.append(wall)
            timed.cpu.append(cpu)
        log(f"round {round_index + 1}/{repeats} done")


# -- the compared implementations ------------------------------------------------------------------


def stepping(model: seqgen.Model, token: int) -> Callable[[], Callable[[], object]]:
    """The floor: a fresh session's Session.step with a fixed token (its first step binds the graph)."""
    ids = np.array([token], np.int64)

    def make() -> Callable[[], object]:
        session = model.session()
        session.step(ids)
        return lambda: session.step(ids)

    return make


def raw_step(model: seqgen.Model, token: int) -> Callable[[], object]:
    """onnxruntime's own cost of a step: run_with_iobinding on buffers bound once, the state not carried."""
    shape = (model.file.layers, 1, model.file.hidden_size)
    inputs = [np.full((1, 1), token, np.int64), *(np.zeros(shape, np.float32) for _ in model.graph.state_names)]
    outputs = [np.empty((1, 1, model.vocab.size), np.float32), *(np.empty(shape, np.float32) for _ in inputs[1:])]
    binding = model.graph.io_binding()
    for bind, names, arrays in ((binding.bind_input, [modelfile.TOKENS_INPUT, *model.graph.state_names], inputs),
                                (binding.bind_output, model.graph.output_names, outputs)):
        for name, array in zip(names, arrays):
            bind(name, "cpu", 0, array.dtype, array.shape, array.ctypes.data)
    return lambda bound=(inputs, outputs): model.graph.run_with_iobinding(binding)  # the buffers live with it


def windowed(model: seqgen.Model, prompt_ids: np.ndarray) -> Callable[[], Callable[[], object]]:
    """Hand-rolled generation: each character runs the graph on the last WINDOW tokens from a zero state."""
    zeros = model.graph.zero_state(1)
    skip = 0 if model.file.line_items else 1  # running-text models never pick the boundary token

    def make() -> Callable[[], object]:
        history = prompt_ids.tolist()

        def character() -> None:
            logits = model.graph.run(np.array([history[-WINDOW:]], np.int64), zeros)[0]
            history.append(int(logits[0, -1, skip:].argmax()) + skip)

        return character

    return make


def torch_net(model: seqgen.Model, probe: np.ndarray) -> tuple[object, str]:
    """seqgen.train's CharRNN with the model's weights (random ones of the same shapes where they cannot be
    copied: same cost), in eval mode, and a note saying which."""
    import onnx
    import torch
    from onnx import numpy_helper

    from seqgen.train import CharRNN

    torch.set_num_threads(1)
    file = model.file
    net = CharRNN(file.vocab.size, file.cell, file.embedding_size, file.hidden_size, file.layers).eval()
    order = CELLS[file.cell].gate_order
    try:
        inits = {t.name: numpy_helper.to_array(t) for t in onnx.load(file.path).graph.initializer}
        weights = {"embedding.weight": inits["embedding"], "head.weight": inits["head_weight"].T,
                   "head.bias": inits["head_bias"]}
        for layer in range(file.layers):  # ONNX's gate block j is torch's block order[j]
            for kind, value in (("weight_ih", inits[f"W{layer}"][0]), ("weight_hh", inits[f"R{layer}"][0]),
                                *zip(("bias_ih", "bias_hh"), np.split(inits[f"B{layer}"][0], 2))):
                blocks = value.reshape(len(order), -1, *value.shape[1:])
                weights[f"rnn.{kind}_l{layer}"] = blocks[np.argsort(order)].reshape(value.shape)
        net.load_state_dict({k: torch.from_numpy(np.array(v, np.float32)) for k, v in weights.items()}, strict=True)
    except Exception as exc:  # not a float seqgen graph (int8?) or unexpected names: time random weights
        return net, f"random weights of the same shapes (could not copy: {type(exc).__name__}: {exc})"
    with torch.no_grad():
        expected = net(torch.from_numpy(probe[None]), net.zero_state(1))[0].numpy()
    got = model.graph.run(probe[None], model.graph.zero_state(1))[0]
    return net, f"weights copied from the ONNX file (logits agree to {float(np.abs(got - expected).max()):.1e})"


def torch_stepping(net: object, token: int, skip: int) -> Callable[[], Callable[[], object]]:
    """Greedy generation in torch eager, one token at a time with the state carried."""
    import torch

    def make() -> Callable[[], object]:
        carried = [torch.tensor([[token]]), net.zero_state(1)]

        def character() -> None:
            with torch.no_grad():
                logits, carried[1] = net(*carried)
                carried[0] = logits[:, -1, skip:].argmax(-1, keepdim=True) + skip

        return character

    return make


def prompt_loops(model: seqgen.Model, text: str) -> tuple[Sample, Sample, list[int]]:
    """Per-character time of feeding `text` in one call, and of stepping through it one token per call."""
    calls: list[int] = []
    stepped = list(model.vocab.encode(text[:STEPWISE_CHARS])[:, None])

    def once() -> int:
        session = model.session()
        session.feed(text)
        calls.append(session.steps)
        return len(text)

    def fresh() -> Callable[[], object]:
        session, ids = model.session(), iter(stepped)
        session.logits()  # the boundary token, as the one-call feed also does
        return lambda: session.step(next(ids))

    return lambda: per_unit(once), repeated(fresh, STEPWISE_CHARS), calls


def weight_shapes(file: modelfile.ModelFile) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The (rows, columns) of the matrices one step multiplies by a vector: all of them, and the recurrent ones."""
    rows = CELLS[file.cell].gates * file.hidden_size
    recurrent = [(rows, file.hidden_size)] * file.layers
    inputs = [(rows, file.embedding_size)] + [(rows, file.hidden_size)] * (file.layers - 1)
    return inputs + recurrent + [(file.vocab.size, file.hidden_size)], recurrent


GEMV_SCRIPT = """
import json, sys, time
import numpy as np
shapes, calls = json.loads(sys.argv[1]), int(sys.argv[2])
rng = np.random.default_rng(0)
pairs = [(rng.standard_normal(shape, dtype=np.float32), rng.standard_normal(shape[1], dtype=np.float32))
         for shape in shapes]
def once():
    for _ in range(calls):
        for matrix, vector in pairs:
            matrix @ vector
once()
wall, cpu = time.perf_counter(), time.process_time()
once()
print(json.dumps([(time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls]))
"""
"""Times `calls` rounds of matrix-vector products over random float32 matrices of the given shapes (the
values do not change the cost). In a child process, so that numpy's BLAS can be held to one thread."""


def gemv_loop(shapes: list[tuple[int, int]], calls: int) -> Sample:
    """A memory floor: seconds per round of numpy matrix-vector products over matrices of `shapes`."""
    one_thread = {name: "1" for name in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    command = [sys.executable, "-c", GEMV_SCRIPT, json.dumps(shapes), str(calls)]
    return lambda: tuple(json.loads(subprocess.run(command, check=True, capture_output=True, text=True,
                                                   env=os.environ | one_thread).stdout))


# -- whole processes ----------------------------------------------------------------------------------


def seqgen_run_command() -> list[str]:
    """The installed seqgen-run next to this interpreter, else the same entry point through it."""
    script = shutil.which("seqgen-run", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-c", "import sys; from seqgen.cli import run; run()"]


LAUNCHER = """
import json, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
wall = time.perf_counter() - start
try:
    import resource
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu, rss = usage.ru_utime + usage.ru_stime, usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
except ImportError:
    cpu, rss = wall, None
print(json.dumps({"wall": wall, "cpu": cpu, "rss": rss, "code": done.returncode,
                  "stderr": done.stderr.decode(errors="replace")}))
"""
"""Runs one command and reports its wall time and peak RSS. A child's ru_maxrss includes the RSS of
the process it was forked from (Linux records the pre-exec high-water mark), so the children are
started from this small launcher, not from the benchmark process with its models and torch loaded."""


def run_process(command: list[str], env: dict[str, str]) -> tuple[float, float, float | None]:
    """Wall and CPU seconds and peak RSS (MiB) of one run of `command`; raises if it fails."""
    launched = subprocess.run([sys.executable, "-c", LAUNCHER, *command], capture_output=True, text=True, env=env)
    if launched.returncode != 0:
        raise RuntimeError(f"the process launcher failed: {launched.stderr.strip()[-300:]}")
    report = json.loads(launched.stdout)
    if report["code"] != 0:
        raise RuntimeError(f"{shlex.join(command)} exited with {report['code']}: {report['stderr'].strip()[-300:]}")
    return report["wall"], report["cpu"], report["rss"]


def process_loop(command: list[str], env: dict[str, str], rss: list[float]) -> Sample:
    """One sample: the median wall and CPU time of PROCESS_RUNS starts of `command`; their peak RSS go to `rss`."""

    def once() -> tuple[float, float]:
        runs = [run_process(command, env) for _ in range(PROCESS_RUNS)]
        rss.extend(peak for _, _, peak in runs if peak is not None)
        return statistics.median(wall for wall, _, _ in runs), statistics.median(cpu for _, cpu, _ in runs)

    return once


# -- setup ---------------------------------------------------------------------------------------------


def in_vocabulary(model: seqgen.Model, text: str, length: int) -> str:
    """`text` without characters the model lacks, repeated or padded (seeded) to `length` characters."""
    known = set(model.vocab.chars)
    kept = "".join(c for c in text if c in known)
    if len(kept) < min(length, 64):
        kept += "".join(np.random.default_rng(0).choice(list(model.vocab.chars), length))
    return (kept * (length // len(kept) + 1))[:length]


def int8_source(args: argparse.Namespace, model: seqgen.Model, stack: ExitStack,
                log: Callable[[str], None]) -> tuple[Path | None, str]:
    """The int8 model to compare with, and where it came from (or None and why not)."""
    if args.int8:
        return Path(args.int8), f"--int8 {args.int8}"
    if model.info.get("quantization") == "int8":
        return None, "the model itself is int8"
    name = f"{model.path.stem}-int8"
    if name in modelfile.shipped_models():
        return modelfile.resolve(name), f"shipped model {name}"
    try:
        from seqgen.train.quantize import quantize_int8
    except ImportError as exc:
        return None, f"no int8 model given or shipped, and cannot quantize ({exc.name} not installed)"
    out = Path(stack.enter_context(tempfile.TemporaryDirectory())) / f"{name}.onnx"
    log("quantizing to int8 (seqgen.train.quantize.quantize_int8) ...")
    report = quantize_int8(model.path, out)
    return out, f"quantized here with quantize_int8 (top-1 agreement {report['top1_agreement']})"


def machine() -> dict[str, object]:
    """The machine's facts for the report: platform, CPU model, cores usable, load at the start."""
    cpu = platform.processor() or "?"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "cpu": cpu, "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None}


def versions() -> dict[str, str]:
    installed = {d.metadata["Name"].lower(): d.version for d in importlib.metadata.distributions()}
    return {"seqgen": seqgen.__version__, "onnxruntime": ort.__version__, "numpy": np.__version__,
            **{name: installed.get(name, "not installed") for name in ("torch", "onnx")}}


# -- results -------------------------------------------------------------------------------------------


def judged(measured: float, target: float | None, op: str) -> str:
    if target is None:
        return "info"
    return "PASS" if (measured <= target if op == "<=" else measured >= target) else "FAIL"


def results_of(timings: dict[str, Timed], notes: dict[str, str], skips: dict[str, str],
               rss: dict[str, list[float]], calls: list[int]) -> dict[str, dict[str, object]]:
    """Every metric's row: its timing's medians (wall and CPU) and the ratio of its two timings judged against
    its target (on wall time; the CPU-time ratio beside it), or skipped with the reason in `skips`."""
    t, cpu = timings, {key: statistics.median(timed.cpu) for key, timed in timings.items()}
    if "torch_eager" in t:
        needed = t["torch_eager"].median / 6
        notes["torch_eager"] += (f"; 6x needs greedy at {needed * 1e6:.1f} µs/char, "
                                 f"{needed / t['floor_memory'].median:.2f}x the memory floor")
    if "process_baseline" in t:
        notes["process_wall"] += f" (import: {t['process_baseline'].median * 1e3:.1f} ms)"
    if rss["predict"]:
        notes["process_rss"] = f"largest of {len(rss['predict'])} runs; the import's: {max(rss['baseline']):.1f} MiB"
    elif "process_rss" not in skips:
        skips["process_rss"] = "no resource module on this platform"
    stepwise = t["prompt_stepwise"].median
    notes["prompt"] = f"session.steps == {sorted(set(calls))}; stepping: {stepwise * 1e6:.1f} µs/char"
    notes["prompt_memory"] = (f"20x needs {stepwise / 20 * 1e6:.1f} µs/char, "
                              f"{stepwise / 20 / t['prompt_memory'].median:.2f}x this")
    results = {}
    for key, metric in METRICS.items():
        row: dict[str, object] = {"value": None, "unit": metric.unit, "ratio": None, "cpu_ratio": None,
                                  "ratio_of": metric.ratio_of, "target": metric.target, "target_op": metric.op,
                                  "target_unit": "x" if metric.ratio else f" {metric.unit}",
                                  "status": "skipped" if key in skips else "info",
                                  "note": skips.get(key) or "; ".join(filter(None, (metric.what, notes.get(key))))}
        if key in t:
            scale = {"µs": 1e6, "ms": 1e3}[metric.unit.split("/")[0]]
            timed = t[key]
            row |= {"value": timed.median * scale, "cpu_value": cpu[key] * scale, "units_per_sample": timed.units,
                    "spread": (max(timed.wall) - min(timed.wall)) / timed.median if timed.median else 0.0}
        if metric.ratio and all(name in t for name in metric.ratio):
            a, b = metric.ratio
            row |= {"ratio": t[a].median / t[b].median, "cpu_ratio": cpu[a] / cpu[b],
                    "status": judged(t[a].median / t[b].median, metric.target, metric.op)}
        results[key] = row
    if rss["predict"]:
        peak = max(rss["predict"])
        results["process_rss"] |= {"value": peak, "status": judged(peak, METRICS["process_rss"].target, "<="),
                                   "samples": rss["predict"], "baseline_samples": rss["baseline"]}
    results["prompt"]["calls"] = sorted(set(calls))
    if set(calls) != {1}:
        results["prompt"] |= {"status": "FAIL", "note": results["prompt"]["note"] + "; NOT consumed in one call"}
    return results


def print_table(results: dict[str, dict[str, object]]) -> None:
    line = "{:<40} {:>16} {:>6} {:>26} {:>7} {:>10}  {}".format
    print(line("measurement", "median", "spread", "ratio", "cpu", "target", "result"))
    print("-" * 118)

    def times(x: float | None) -> str:
        return "" if x is None else f"{x:.3f}x" if x < 10 else f"{x:.1f}x"

    for key, metric in METRICS.items():
        row = results[key]
        value = "-" if row["value"] is None else f"{row['value']:.1f} {row['unit']}"
        spread = f"{100 * row['spread']:.0f}%" if "spread" in row else ""
        ratio = f"{times(row['ratio'])} {row['ratio_of']}" if row["ratio"] is not None else ""
        target = "" if row["target"] is None else f"{row['target_op']} {row['target']:g}{row['target_unit']}"
        result = row["status"] if row["status"] != "skipped" else f"skipped ({row['note']})"
        print(line(metric.label, value, spread, ratio, times(row["cpu_ratio"]), target, result))
    print("\nratio: of wall-time medians, judged against the target; cpu: the same ratio in process CPU time, "
          "less disturbed by other load")
    for key, metric in METRICS.items():
        if results[key]["status"] != "skipped":
            print(f"{metric.label.split(':')[0].strip()}: {results[key]['note']}")


# -- main ---------------------------------------------------------------------------------------------


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
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
    return args


def measurements(
    model: seqgen.Model, args: argparse.Namespace, stack: ExitStack, log: Callable[[str], None],
    notes: dict[str, str], skips: dict[str, str], rss: dict[str, list[float]],
) -> tuple[list[Timed], list[int]]:
    """Every timing of the run, set up; what cannot be measured here goes to `skips` with the reason."""
    file, chars = model.file, args.chars
    history = in_vocabulary(model, PROMPT_SOURCE, 80)  # the window method's starting text: full windows at once
    prompt_ids = np.concatenate([[seqgen.BOUNDARY], model.vocab.encode(history)])
    token = int(prompt_ids[1])
    # Generation starts from short prompts: a prompt costs up to its length in steps once (and generate_batch
    # feeds each distinct prompt separately), which would otherwise be charged to the generated characters.
    rng = np.random.default_rng(0)
    prompts = ["".join(rng.choice(list(file.vocab.chars), SHORT_PROMPT)) for _ in range(BATCH)]
    slow_chars = max(10, chars // 5)  # the window method costs 10-50x a step: fewer characters, same per-char cost

    def generating(target: seqgen.Model, **options: object) -> Sample:
        return lambda: per_unit(lambda: len(target.generate(prompts[0], chars, **options)))

    step_shapes, recurrent_shapes = weight_shapes(file)
    once, stepwise, calls = prompt_loops(model, in_vocabulary(model, PROMPT_SOURCE, PROMPT_CHARS))
    timings = [Timed("floor", repeated(stepping(model, token), chars), chars),
               Timed("floor_raw", repeated(lambda: raw_step(model, token), chars), chars),
               Timed("greedy", generating(model, temperature=0), chars),
               Timed("sampled", generating(model, **SAMPLING), chars),
               Timed("window64", repeated(windowed(model, prompt_ids), slow_chars), slow_chars),
               Timed("floor_memory", gemv_loop(step_shapes, chars), chars),
               Timed("prompt_memory", gemv_loop(recurrent_shapes, chars), chars),
               Timed("batch64", lambda: per_unit(lambda: sum(map(len, model.generate_batch(prompts, chars,
                                                                                           temperature=0)))),
                     BATCH * chars),
               Timed("prompt", once, PROMPT_CHARS), Timed("prompt_stepwise", stepwise, STEPWISE_CHARS)]
    try:
        net, notes["torch_eager"] = torch_net(model, prompt_ids[:17])
    except ImportError as exc:
        skips["torch_eager"] = f"{exc.name} not installed"
    else:
        timings.append(Timed("torch_eager", repeated(torch_stepping(net, token, 0 if file.line_items else 1), chars),
                             chars))
    int8_path, note = int8_source(args, model, stack, log)
    if int8_path is None:
        skips["int8"] = note
    else:
        notes["int8"] = note
        timings.append(Timed("int8", generating(seqgen.load(int8_path, threads=1), temperature=0), chars))

    predict_text = PREDICT_TEXT if set(PREDICT_TEXT) <= set(file.vocab.chars) else \
        in_vocabulary(model, PREDICT_TEXT, len(PREDICT_TEXT))  # a model without those characters
    predict = [*seqgen_run_command(), "predict", predict_text, *(["--model", str(model.path)] * bool(args.model))]
    baseline = [sys.executable, "-c", "import numpy, onnxruntime"]
    notes["process_wall"] = f"{shlex.join(predict)} vs {shlex.join(baseline)}"
    # bytecode cached in a temporary folder, as in an ordinary installation, even where PYTHONDONTWRITEBYTECODE
    # is set (which would compile seqgen's modules at every start)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = stack.enter_context(tempfile.TemporaryDirectory())
    try:
        run_process(predict, env)  # also fills the bytecode cache
    except RuntimeError as exc:
        skips["process_wall"], skips["process_rss"] = f"seqgen-run failed: {exc}", "seqgen-run failed"
    else:
        timings += [Timed("process_baseline", process_loop(baseline, env, rss["baseline"]), 1),
                    Timed("process_wall", process_loop(predict, env, rss["predict"]), 1)]
    return timings, calls


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)

    def log(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    if args.model is None and modelfile.DEFAULT_MODEL not in modelfile.shipped_models():
        shipped = ", ".join(modelfile.shipped_models()) or "none"
        print(f"No default model ({modelfile.DEFAULT_MODEL!r}) is shipped yet (shipped: {shipped}); "
              "pass --model PATH_OR_NAME to benchmark a model file.", file=sys.stderr)
        return 2
    command = shlex.join(["python", os.path.relpath(__file__), *argv])
    model = seqgen.load(args.model, threads=1)
    file = model.file
    header = {"command": command, "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "machine": machine(), "versions": versions(),
              "model": {"path": str(model.path), "bytes": model.path.stat().st_size, "cell": file.cell,
                        "layers": file.layers, "hidden_size": file.hidden_size,
                        "embedding_size": file.embedding_size, "vocab_size": file.vocab.size,
                        "quantization": model.info.get("quantization", "?")},
              "settings": {"repeats": args.repeats, "chars": args.chars, "threads": 1}}
    print(f"command: {command}\ndate:    {header['date']}")
    for name in ("machine", "versions", "model"):
        print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in header[name].items()))
    print(f"settings: {args.repeats} repeats (median), {args.chars} characters per sample, 1 thread\n", flush=True)

    notes: dict[str, str] = {}
    skips: dict[str, str] = {}
    rss: dict[str, list[float]] = {"predict": [], "baseline": []}
    with ExitStack() as stack:
        timings, calls = measurements(model, args, stack, log, notes, skips, rss)
        log(f"measuring {len(timings)} things x {args.repeats} rounds ...")
        run_rounds(timings, args.repeats, log)
    results = results_of({timed.key: timed for timed in timings}, notes, skips, rss, calls)
    print()
    print_table(results)
    failed = [k for k in METRICS if results[k]["status"] == "FAIL"]
    print(f"\n{len(failed)} target(s) failed{': ' + ', '.join(failed) if failed else ''}. "
          "Timings are medians of interleaved repeats; a high spread means a noisy machine.")
    if args.json:
        samples = {t.key: {"units": t.units, "wall": t.wall, "cpu": t.cpu} for t in timings}  # seconds per unit
        out = {**header, "metrics": results, "samples": samples}
        Path(args.json).write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
