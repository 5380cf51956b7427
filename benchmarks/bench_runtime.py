"""The runtime against the targets of the performance issue, all measured side by side in one run.

    python benchmarks/bench_runtime.py [--model PATH_OR_NAME] [--int8 PATH] [--repeats 7] [--chars 300] [--json OUT]

Every measurement is taken `--repeats` times in rounds (A B C ... then ... C B A, so background load
and drift hit all of them alike), after a warm-up, and reported as the median; a ratio is the ratio
of two medians from the same run, judged on wall time (time.perf_counter); the same ratio in process
CPU time (time.process_time; for processes, the child's user + system time) is printed beside it, as
it is less disturbed by other load. All onnxruntime sessions use one intra-op thread, torch too.

Measured (µs per generated character unless said otherwise):
  floor      the bare bound step (seqgen.session._BoundStep at batch 1, a fixed token, in a loop), µs per call
  greedy     Model.generate(prompt, chars, temperature=0) with a 2-character prompt; whole call / characters made
  sampled    the same with temperature 0.8, top_k 40, top_p 0.95 and a seed
  torch      torch eager CharRNN of the same architecture, one token at a time with carried state
             (weights copied from the ONNX initializers when possible, otherwise random: same cost)
  window64   the hand-rolled approach: every character re-runs the graph on the last 64 tokens from a zero state
             (starting from an 80-character text, so every window is full)
  int8       greedy generation with the int8 model (--int8, a shipped `<model>-int8`, or quantized here)
  batch64    generate_batch with 64 different 2-character prompts: time / (64 x characters), relative to greedy
             at batch 1
  process    `seqgen-run predict "To be or not to b"` as a process: wall time relative to
             `python -c "import numpy, onnxruntime"` (each sample the median of PROCESS_RUNS starts), and its
             peak RSS (ru_maxrss, via a small launcher);
             both with bytecode cached in a temporary PYTHONPYCACHEPREFIX, as in an ordinary installation
  prompt     a 10,000-character prompt in one Session.feed call vs Session.step per character
  memory floors (information, to judge what is possible): the time numpy takes (one BLAS thread, in a child
             process) for matrix-vector products over float32 matrices of the model's weight shapes, i.e. to
             read what a character must read: all of them for a step (`floor_memory`), the recurrent ones
             alone for a character of a long prompt (`prompt_memory`: input projections and logits batch over
             the prompt as matrix products, the recurrence cannot). A reference, not a proven lower bound:
             onnxruntime's kernels can beat numpy's where the weights stay in cache

The numbers are only as quiet as the machine: read the spread column before trusting a FAIL.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import platform
import shlex
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
from seqgen.session import _BoundStep

Sample = Callable[[], tuple[float, float]]
"""Takes one sample of a measurement: (wall, cpu) seconds per unit."""

WINDOW = 64
BATCH = 64
PROMPT_CHARS = 10_000
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
METRICS = ("floor", "floor_raw", "floor_memory", "greedy", "sampled", "torch_eager", "window64", "int8", "batch64",
           "process_wall", "process_rss", "prompt", "prompt_memory")
"""Keys of the JSON's `metrics`, always all present (a skipped one has status 'skipped' and a reason)."""


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

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)

    @property
    def spread(self) -> float:
        """(max - min) / median of the wall-time samples: how noisy this measurement was."""
        return (max(self.wall) - min(self.wall)) / self.median if self.median else 0.0


def per_unit(function: Callable[[], int]) -> tuple[float, float]:
    """Wall and CPU seconds per unit of one call of `function`, which returns how many units it did."""
    wall, cpu = time.perf_counter(), time.process_time()
    units = max(function(), 1)
    return (time.perf_counter() - wall) / units, (time.process_time() - cpu) / units


def run_rounds(timings: list[Timed], repeats: int, log: Callable[[str], None]) -> None:
    """Warm each measurement up once, then take `repeats` samples of each, interleaved."""
    for timed in timings:
        timed.run()
    for round_index in range(repeats):
        order = timings if round_index % 2 == 0 else timings[::-1]
        for timed in order:
            wall, cpu = timed.run()
            timed.wall.append(wall)
            timed.cpu.append(cpu)
        log(f"round {round_index + 1}/{repeats} done")


# -- the compared implementations ------------------------------------------------------------------


def bound_step_loop(model: seqgen.Model, token: int, calls: int, raw: bool = False) -> Sample:
    """The floor: _BoundStep called in a loop with a fixed token (raw: only run_with_iobinding, no state copy)."""
    session = model.session()
    session.logits()
    step = _BoundStep(session)
    ids = np.array([token], np.int64)
    run, binding = step.ort.run_with_iobinding, step.binding

    def once() -> int:
        if raw:
            for _ in range(calls):
                run(binding)
        else:
            for _ in range(calls):
                step(ids)
        return calls

    return lambda: per_unit(once)


def window_loop(model: seqgen.Model, prompt_ids: np.ndarray, chars: int) -> Sample:
    """Hand-rolled generation: each character runs the graph on the last WINDOW tokens from a zero state."""
    shape = (model.file.layers, 1, model.file.hidden_size)
    zeros = {name: np.zeros(shape, np.float32) for name in model.state_names}
    skip = 0 if model.file.line_items else 1  # running-text models never pick the boundary token

    def once() -> int:
        history = prompt_ids.tolist()
        for _ in range(chars):
            window = np.array([history[-WINDOW:]], np.int64)
            logits = model.ort.run(["logits"], {"tokens": window, **zeros})[0]
            history.append(int(logits[0, -1, skip:].argmax()) + skip)
        return chars

    return lambda: per_unit(once)


def torch_net(model: seqgen.Model, probe: np.ndarray) -> tuple[object, str]:
    """A torch CharRNN of the model's architecture, eval mode, and how its weights were obtained."""
    import torch

    file = model.file
    try:
        from seqgen.train.export import _GATE_ORDER
        from seqgen.train.models import CharRNN
    except ImportError:  # seqgen.train needs onnx too; the same modules, built here, time the same
        _GATE_ORDER, CharRNN = None, _plain_char_rnn()
    net = CharRNN(file.vocab.size, file.cell, file.embedding_size, file.hidden_size, file.layers).eval()
    if _GATE_ORDER is None:
        return net, "random weights of the same shapes (seqgen.train/onnx not importable)"
    try:
        _copy_onnx_weights(net, file.path.read_bytes(), _GATE_ORDER[file.cell])
    except Exception as exc:  # not a float seqgen graph (int8?) or unexpected names: time random weights
        return net, f"random weights of the same shapes (could not copy: {type(exc).__name__}: {exc})"
    with torch.no_grad():
        expected = net(torch.from_numpy(probe[None]), net.zero_state(1))[0].numpy()
    feeds = {"tokens": probe[None], **{n: np.zeros((file.layers, 1, file.hidden_size), np.float32)
                                       for n in model.state_names}}
    got = model.ort.run(["logits"], feeds)[0]
    return net, f"weights copied from the ONNX file (logits agree to {float(np.abs(got - expected).max()):.1e})"


def _copy_onnx_weights(net: object, data: bytes, order: tuple[int, ...]) -> None:
    """Load the exported initializers into `net`, undoing the exporter's gate reordering."""
    import onnx
    import torch
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in onnx.load_from_string(data).graph.initializer}
    gates = len(order)

    def torch_gates(onnx_weight: np.ndarray) -> np.ndarray:  # ONNX blocks j hold torch block order[j]
        blocks = onnx_weight.reshape(gates, -1, *onnx_weight.shape[1:])
        restored = np.empty_like(blocks)
        for j, i in enumerate(order):
            restored[i] = blocks[j]
        return restored.reshape(onnx_weight.shape)

    weights = {"embedding.weight": inits["embedding"], "head.weight": inits["head_weight"].T,
               "head.bias": inits["head_bias"]}
    for layer in range(net.layers):
        bias_ih, bias_hh = np.split(inits[f"B{layer}"][0], 2)
        weights |= {f"rnn.weight_ih_l{layer}": torch_gates(inits[f"W{layer}"][0]),
                    f"rnn.weight_hh_l{layer}": torch_gates(inits[f"R{layer}"][0]),
                    f"rnn.bias_ih_l{layer}": torch_gates(bias_ih), f"rnn.bias_hh_l{layer}": torch_gates(bias_hh)}
    state = {name: torch.from_numpy(np.array(value, np.float32)) for name, value in weights.items()}
    net.load_state_dict(state, strict=True)


def _plain_char_rnn() -> type:
    """CharRNN's modules and forward, for when seqgen.train cannot be imported (no onnx)."""
    import torch
    from torch import nn

    class PlainCharRNN(nn.Module):
        def __init__(self, vocab_size: int, cell: str, embedding_size: int, hidden_size: int, layers: int) -> None:
            super().__init__()
            self.cell, self.layers, self.hidden_size = cell, layers, hidden_size
            self.embedding = nn.Embedding(vocab_size, embedding_size)
            recurrent = {"lstm": nn.LSTM, "gru": nn.GRU}.get(cell, nn.RNN)
            extra = {"nonlinearity": cell.removeprefix("rnn_")} if recurrent is nn.RNN else {}
            self.rnn = recurrent(embedding_size, hidden_size, num_layers=layers, batch_first=True, **extra)
            self.head = nn.Linear(hidden_size, vocab_size)

        def forward(self, tokens: torch.Tensor, state: object) -> tuple[torch.Tensor, object]:
            outputs, state = self.rnn(self.embedding(tokens), state)
            return self.head(outputs), state

        def zero_state(self, batch_size: int) -> object:
            zeros = torch.zeros(self.layers, batch_size, self.hidden_size)
            return (zeros, zeros.clone()) if self.cell == "lstm" else zeros

    return PlainCharRNN


def torch_loop(net: object, token: int, chars: int, skip: int) -> Sample:
    """Greedy generation in torch eager, one token at a time with the state carried."""
    import torch

    def once() -> int:
        with torch.no_grad():
            state = net.zero_state(1)
            tokens = torch.tensor([[token]])
            for _ in range(chars):
                logits, state = net(tokens, state)
                tokens = logits[:, -1, skip:].argmax(-1, keepdim=True) + skip
        return chars

    return lambda: per_unit(once)


def prompt_loops(model: seqgen.Model, text: str) -> tuple[Sample, Sample, list[int]]:
    """Per-character time of feeding `text` in one call, and of stepping through it one token per call."""
    calls: list[int] = []
    stepped = [ids for ids in model.vocab.encode(text[:STEPWISE_CHARS])[:, None]]

    def once() -> int:
        session = model.session()
        session.feed(text)
        calls.append(session.steps)
        return len(text)

    def stepwise() -> int:
        session = model.session()
        session.logits()  # the boundary token, as the one-call feed also does
        for ids in stepped:
            session.step(ids)
        return len(stepped)

    return lambda: per_unit(once), lambda: per_unit(stepwise), calls


def weight_shapes(file: modelfile.ModelFile) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The (rows, columns) of the matrices one step multiplies by a vector: all of them, and the recurrent ones."""
    rows = {"lstm": 4, "gru": 3}.get(file.cell, 1) * file.hidden_size
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

    def once() -> tuple[float, float]:
        done = subprocess.run([sys.executable, "-c", GEMV_SCRIPT, json.dumps(shapes), str(calls)], check=True,
                              capture_output=True, text=True, env=os.environ | one_thread)
        wall, cpu = json.loads(done.stdout)
        return wall, cpu

    return once


# -- whole processes ----------------------------------------------------------------------------------


def seqgen_run_command() -> list[str]:
    """The installed seqgen-run next to this interpreter, else the same entry point through it."""
    script = Path(sys.executable).with_name("seqgen-run")
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-c", "import sys; from seqgen.cli import run; sys.argv[0] = 'seqgen-run'; run()"]


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


def child_environment(pycache: str) -> dict[str, str]:
    """The environment of the timed processes: bytecode cached (in `pycache`) as in an ordinary installation,
    even where PYTHONDONTWRITEBYTECODE is set (which would compile seqgen's modules at every start)."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    return env | {"PYTHONPYCACHEPREFIX": pycache}


def run_process(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float | None]:
    """Wall and CPU seconds and peak RSS (MiB) of one run of `command`; raises if it fails."""
    launched = subprocess.run([sys.executable, "-c", LAUNCHER, *command], capture_output=True, text=True, env=env)
    if launched.returncode != 0:
        raise RuntimeError(f"the process launcher failed: {launched.stderr.strip()[-300:]}")
    report = json.loads(launched.stdout)
    if report["code"] != 0:
        raise RuntimeError(f"{shlex.join(command)} exited with {report['code']}: {report['stderr'].strip()[-300:]}")
    return report["wall"], report["cpu"], report["rss"]


def process_loops(baseline: list[str], predict: list[str],
                  env: dict[str, str]) -> tuple[Timed, Timed, dict[str, list[float]]]:
    rss: dict[str, list[float]] = {"baseline": [], "predict": []}

    def sampler(name: str, command: list[str]) -> Sample:
        def once() -> tuple[float, float]:
            runs = [run_process(command, env) for _ in range(PROCESS_RUNS)]
            rss[name].extend(peak for _, _, peak in runs if peak is not None)
            return statistics.median(wall for wall, _, _ in runs), statistics.median(cpu for _, cpu, _ in runs)
        return once

    return (Timed("process_baseline", sampler("baseline", baseline), 1),
            Timed("process_wall", sampler("predict", predict), 1), rss)


# -- setup ---------------------------------------------------------------------------------------------


def in_vocabulary(model: seqgen.Model, text: str, length: int) -> str:
    """`text` without characters the model lacks, repeated or padded (seeded) to `length` characters."""
    known = set(model.vocab.chars)
    kept = "".join(c for c in text if c in known)
    if len(kept) < min(length, 64):
        rng = np.random.default_rng(0)
        kept += "".join(rng.choice(list(model.vocab.chars), length))
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
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), cpu)
    except OSError:
        pass
    facts: dict[str, object] = {"platform": platform.platform(), "python": platform.python_version(),
                                "cpu_count": os.cpu_count(), "cpu": cpu}
    if hasattr(os, "sched_getaffinity"):
        facts["usable_cpus"] = len(os.sched_getaffinity(0))
    if hasattr(os, "getloadavg"):
        facts["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    return facts


def versions() -> dict[str, str]:
    found = {"seqgen": seqgen.__version__, "onnxruntime": ort.__version__, "numpy": np.__version__}
    for name in ("torch", "onnx"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


# -- results -------------------------------------------------------------------------------------------


SCALE = {"µs": 1e6, "ms": 1e3}


def judged(measured: float, target: float | None, op: str) -> str:
    if target is None:
        return "info"
    return "PASS" if (measured <= target if op == "<=" else measured >= target) else "FAIL"


def timed_row(timed: Timed, unit: str, *, versus: tuple[Timed, Timed] | None = None, ratio_of: str = "",
              target: float | None = None, op: str = "", note: str = "") -> dict[str, object]:
    """A result row for a timing: its medians (wall and CPU) and, with `versus` = (a, b), the ratio a / b
    of their medians judged against the target (on wall time; the CPU-time ratio is shown beside it)."""
    scale = SCALE[unit.split("/")[0]]
    ratio = cpu_ratio = None
    if versus is not None:
        ratio, cpu_ratio = versus[0].median / versus[1].median, versus[0].cpu_median / versus[1].cpu_median
    return {"value": timed.median * scale, "cpu_value": timed.cpu_median * scale, "unit": unit, "ratio": ratio,
            "cpu_ratio": cpu_ratio, "ratio_of": ratio_of, "target": target, "target_op": op, "target_unit": "x",
            "status": judged(ratio, target, op) if ratio is not None else "info", "note": note,
            "samples": [x * scale for x in timed.wall], "cpu_samples": [x * scale for x in timed.cpu],
            "units_per_sample": timed.units, "spread": timed.spread}


def skipped(reason: str, target: float, op: str, target_unit: str = "x") -> dict[str, object]:
    return {"value": None, "unit": "", "ratio": None, "cpu_ratio": None, "ratio_of": "", "target": target,
            "target_op": op, "target_unit": target_unit, "status": "skipped", "note": reason}


def print_table(metrics: dict[str, dict[str, object]], labels: dict[str, str]) -> None:
    line = "{:<40} {:>16} {:>6} {:>26} {:>7} {:>10}  {}".format
    print(line("measurement", "median", "spread", "ratio", "cpu", "target", "result"))
    print("-" * 118)

    def times(x: float | None) -> str:
        return "" if x is None else f"{x:.3f}x" if x < 10 else f"{x:.1f}x"

    for key in METRICS:
        row = metrics[key]
        value = "-" if row["value"] is None else f"{row['value']:.1f} {row['unit']}"
        spread = f"{100 * row['spread']:.0f}%" if "spread" in row else ""
        ratio = f"{times(row['ratio'])} {row['ratio_of']}" if row["ratio"] is not None else ""
        target = "" if row["target"] is None else f"{row['target_op']} {row['target']:g}{row['target_unit']}"
        result = row["status"] if row["status"] != "skipped" else f"skipped ({row['note']})"
        print(line(labels[key], value, spread, ratio, times(row["cpu_ratio"]), target, result))
    print("\nratio: of wall-time medians, judged against the target; cpu: the same ratio in process CPU time, "
          "less disturbed by other load")
    for key in METRICS:
        if metrics[key]["note"] and metrics[key]["status"] != "skipped":
            print(f"{labels[key].split(':')[0].strip()}: {metrics[key]['note']}")


def results_of(t: dict[str, Timed], notes: dict[str, str], rss: dict[str, list[float]],
               calls: list[int]) -> dict[str, dict[str, object]]:
    """The result row of every metric measured (skipped ones are added by the caller)."""
    greedy = t["greedy"]
    results = {
        "floor": timed_row(t["floor"], "µs/call", note="_BoundStep at batch 1, a fixed token; reference for greedy"),
        "floor_raw": timed_row(t["floor_raw"], "µs/call", versus=(t["floor_raw"], t["floor"]), ratio_of="of floor",
                               note="run_with_iobinding alone, no token write or state copies (information)"),
        "floor_memory": timed_row(t["floor_memory"], "µs/call", versus=(t["floor"], t["floor_memory"]),
                                  ratio_of="floor / this",
                                  note="numpy GEMV over float32 matrices of every weight shape of a step, one "
                                       "BLAS thread: a reference floor for a step (information)"),
        "greedy": timed_row(greedy, "µs/char", versus=(greedy, t["floor"]), ratio_of="of floor", target=1.15,
                            op="<="),
        "sampled": timed_row(t["sampled"], "µs/char", versus=(t["sampled"], greedy), ratio_of="of greedy",
                             target=1.25, op="<=", note=", ".join(f"{k}={v}" for k, v in SAMPLING.items())),
        "window64": timed_row(t["window64"], "µs/char", versus=(t["window64"], greedy),
                              ratio_of="slower than greedy", target=25, op=">=",
                              note=f"plain run() on the last {WINDOW} tokens from a zero state, per character"),
        "batch64": timed_row(t["batch64"], "µs/char/seq", versus=(t["batch64"], greedy), ratio_of="of batch 1",
                             target=0.3, op="<=", note=notes["batch64"]),
    }
    if "torch_eager" in t:
        needed = t["torch_eager"].median / 6
        results["torch_eager"] = timed_row(t["torch_eager"], "µs/char", versus=(t["torch_eager"], greedy),
                                           ratio_of="slower than greedy", target=6, op=">=",
                                           note=f"{notes['torch']}; 6x needs greedy at {needed * 1e6:.1f} µs/char, "
                                                f"{needed / t['floor_memory'].median:.2f}x the memory floor")
    if "int8" in t:
        results["int8"] = timed_row(t["int8"], "µs/char", versus=(t["int8"], greedy), ratio_of="of float greedy",
                                    target=0.65, op="<=", note=notes["int8"])
    if "process_wall" in t:
        base = t["process_baseline"]
        results["process_wall"] = timed_row(t["process_wall"], "ms", versus=(t["process_wall"], base),
                                            ratio_of="of the import", target=1.3, op="<=",
                                            note=f"{notes['process']} (import: {base.median * 1e3:.1f} ms, "
                                                 f"spread {100 * base.spread:.0f}%)")
        results["process_wall"] |= {"baseline_samples": [x * 1e3 for x in base.wall],
                                    "baseline_cpu_samples": [x * 1e3 for x in base.cpu]}
        if rss["predict"]:
            peak = max(rss["predict"])
            results["process_rss"] = {**skipped("", 90, "<=", " MiB"), "value": peak, "unit": "MiB",
                                      "status": judged(peak, 90, "<="), "samples": rss["predict"],
                                      "baseline_samples": rss["baseline"],
                                      "note": f"largest of {len(rss['predict'])} runs; "
                                              f"the import alone: {max(rss['baseline']):.1f} MiB"}
        else:
            results["process_rss"] = skipped("no resource module on this platform", 90, "<=", " MiB")
    once, stepwise = t["prompt_once"], t["prompt_stepwise"]
    results["prompt"] = timed_row(once, "µs/char", versus=(stepwise, once), ratio_of="faster than stepping",
                                  target=20, op=">=",
                                  note=f"{PROMPT_CHARS:,} characters in one Session.feed (session.steps == "
                                       f"{sorted(set(calls))}) vs Session.step per character "
                                       f"({stepwise.median * 1e6:.1f} µs/char over {STEPWISE_CHARS:,})")
    results["prompt"] |= {"calls": sorted(set(calls)), "stepwise_us_per_char": stepwise.median * 1e6,
                          "stepwise_samples": [x * 1e6 for x in stepwise.wall],
                          "stepwise_cpu_samples": [x * 1e6 for x in stepwise.cpu]}
    memory = t["prompt_memory"]
    needed = stepwise.median / 20
    results["prompt_memory"] = timed_row(memory, "µs/char", versus=(once, memory), ratio_of="prompt / this",
                                         note=f"numpy GEMV over the recurrent matrices alone, one BLAS thread; 20x "
                                              f"needs {needed * 1e6:.1f} µs/char, {needed / memory.median:.2f}x this")
    if set(calls) != {1}:
        results["prompt"]["status"] = "FAIL"
        results["prompt"]["note"] += "; NOT consumed in one call"
    return results


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
    header = {"command": command, "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
              "machine": machine(), "versions": versions()}
    model = seqgen.load(args.model, threads=1)
    file = model.file
    header["model"] = {"path": str(model.path), "bytes": model.path.stat().st_size, "cell": file.cell,
                       "layers": file.layers, "hidden_size": file.hidden_size,
                       "embedding_size": file.embedding_size, "vocab_size": file.vocab.size,
                       "quantization": model.info.get("quantization", "?")}
    header["settings"] = {"repeats": args.repeats, "chars": args.chars, "threads": 1}
    print(f"command: {command}\ndate:    {header['date']}")
    print("machine: " + ", ".join(f"{k} {v}" for k, v in header["machine"].items()))
    print("versions: " + ", ".join(f"{k} {v}" for k, v in header["versions"].items()))
    print("model:   " + ", ".join(f"{k} {v}" for k, v in header["model"].items()))
    print(f"settings: {args.repeats} repeats (median), {args.chars} characters per sample, 1 thread\n", flush=True)

    chars = args.chars
    skip = 0 if file.line_items else 1
    history = in_vocabulary(model, PROMPT_SOURCE, 80)  # the window method's starting text: full windows at once
    prompt_ids = np.concatenate([[seqgen.BOUNDARY], model.vocab.encode(history)])
    token = int(prompt_ids[1])
    # Generation starts from short prompts: a prompt costs up to its length in steps once (and generate_batch
    # feeds each distinct prompt separately), which would otherwise be charged to the generated characters.
    rng = np.random.default_rng(0)
    prompts = ["".join(rng.choice(list(file.vocab.chars), SHORT_PROMPT)) for _ in range(BATCH)]
    prompt = prompts[0]
    long_prompt = in_vocabulary(model, PROMPT_SOURCE, PROMPT_CHARS)
    slow_chars = max(10, chars // 5)  # the window method costs 10-50x a step: fewer characters, same per-char cost

    def generating(target: seqgen.Model, **options: object) -> Sample:
        return lambda: per_unit(lambda: len(target.generate(prompt, chars, **options)))

    notes = {"batch64": f"{BATCH} random {SHORT_PROMPT}-character prompts, greedy, {chars} characters each"}
    skips: dict[str, dict[str, object]] = {}
    rss: dict[str, list[float]] = {"predict": [], "baseline": []}
    with ExitStack() as stack:
        timings = [Timed("floor", bound_step_loop(model, token, chars), chars),
                   Timed("floor_raw", bound_step_loop(model, token, chars, raw=True), chars),
                   Timed("greedy", generating(model, temperature=0), chars),
                   Timed("sampled", generating(model, **SAMPLING), chars),
                   Timed("window64", window_loop(model, prompt_ids, slow_chars), slow_chars)]
        step_shapes, recurrent_shapes = weight_shapes(file)
        timings += [Timed("floor_memory", gemv_loop(step_shapes, chars), chars),
                    Timed("prompt_memory", gemv_loop(recurrent_shapes, chars), chars)]
        try:
            import torch
        except ImportError:
            skips["torch_eager"] = skipped("torch not installed", 6, ">=")
        else:
            torch.set_num_threads(1)
            net, notes["torch"] = torch_net(model, prompt_ids[:17])
            timings.append(Timed("torch_eager", torch_loop(net, token, chars, skip), chars))

        int8_path, notes["int8"] = int8_source(args, model, stack, log)
        if int8_path is None:
            skips["int8"] = skipped(notes["int8"], 0.65, "<=")
        else:
            timings.append(Timed("int8", generating(seqgen.load(int8_path, threads=1), temperature=0), chars))

        def batch_run() -> tuple[float, float]:
            return per_unit(lambda: sum(map(len, model.generate_batch(prompts, chars, temperature=0))))

        timings.append(Timed("batch64", batch_run, BATCH * chars))
        once, stepwise, calls = prompt_loops(model, long_prompt)
        timings += [Timed("prompt_once", once, PROMPT_CHARS), Timed("prompt_stepwise", stepwise, STEPWISE_CHARS)]

        predict_text = PREDICT_TEXT if set(PREDICT_TEXT) <= set(file.vocab.chars) else \
            in_vocabulary(model, PREDICT_TEXT, len(PREDICT_TEXT))  # a model without those characters
        predict = [*seqgen_run_command(), "predict", predict_text, *(["--model", str(model.path)] * bool(args.model))]
        baseline = [sys.executable, "-c", "import numpy, onnxruntime"]
        notes["process"] = f"{shlex.join(predict)} vs {shlex.join(baseline)}, bytecode cached"
        env = child_environment(stack.enter_context(tempfile.TemporaryDirectory()))
        try:
            run_process(predict, env)  # also fills the bytecode cache
        except RuntimeError as exc:
            skips["process_wall"] = skipped(f"seqgen-run failed: {exc}", 1.3, "<=")
            skips["process_rss"] = skipped("seqgen-run failed", 90, "<=", " MiB")
        else:
            base_timed, predict_timed, rss = process_loops(baseline, predict, env)
            timings += [base_timed, predict_timed]

        log(f"measuring {len(timings)} things x {args.repeats} rounds ...")
        run_rounds(timings, args.repeats, log)

    results = {**results_of({timed.key: timed for timed in timings}, notes, rss, calls), **skips}
    labels = {"floor": "1. floor: bound step, batch 1", "floor_raw": "   floor, run_with_iobinding only",
              "floor_memory": "   memory floor of a step (numpy)", "prompt_memory": "   memory floor of a prompt char",
              "greedy": "2. greedy generate", "sampled": "3. sampled generate",
              "torch_eager": "4. torch eager step (same architecture)", "window64": "5. re-run 64-char window",
              "int8": "6. int8 greedy", "batch64": f"7. generate_batch x{BATCH}, per sequence",
              "process_wall": "8. seqgen-run predict, wall", "process_rss": "8. seqgen-run predict, peak RSS",
              "prompt": f"9. {PROMPT_CHARS:,}-char prompt, one call"}
    print()
    print_table(results, labels)
    failed = [k for k in METRICS if results[k]["status"] == "FAIL"]
    print(f"\n{len(failed)} target(s) failed{': ' + ', '.join(failed) if failed else ''}. "
          "Timings are medians of interleaved repeats; a high spread means a noisy machine.")
    if args.json:
        out = {**header, "metrics": {k: results[k] for k in METRICS}}
        Path(args.json).write_text(json.dumps(out, indent=2, ensure_ascii=False) + "\n")
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
