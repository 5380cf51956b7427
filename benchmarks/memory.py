"""Resident memory over many predictions in one process: does it stop growing?

    python benchmarks/memory.py                      # 100,000 predict calls on a tiny exported model
    python benchmarks/memory.py --model shakespeare  # or a model file / shipped model name
    python benchmarks/memory.py --calls 3000 --every 500 --json

Samples VmRSS (from /proc/self/status, Linux) after loading the model and every `--every` calls,
then prints the series, the growth over the first and the second half of the calls, and the growth
per call over the second half. The prompts cycle through 64 lengths (1..64 characters) so that
every call is not the same size. `--leak BYTES` deliberately keeps BYTES per call: a check that the
measurement sees a leak (the test suite uses it). The tiny default model is exported in a child
process (it needs torch), so this process holds only the runtime.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXPORT_TINY = """
import sys, torch
from seqgen import Vocabulary
from seqgen.train import CharRNN, export_onnx
torch.set_num_threads(1)
torch.manual_seed(0)
vocab = Vocabulary.fit(["hello world, the quick brown fox jumps over the lazy dog.\\n"])
export_onnx(CharRNN(vocab.size, "lstm", 8, 16, 2), vocab, sys.argv[1])
"""


def rss_kib() -> int:
    """Resident set size of this process, in KiB (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status (this benchmark needs Linux)")


def tiny_model(folder: str) -> str:
    path = os.path.join(folder, "tiny-lstm.onnx")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", EXPORT_TINY, path], check=True, env=env, timeout=300)
    return path


def measure(model_path: str, calls: int, every: int, leak: int) -> dict[str, object]:
    import seqgen

    model = seqgen.load(model_path)
    chars = "".join(model.vocab.chars)
    prompts = [(chars * (64 // len(chars) + 1))[:n] for n in range(1, 65)]
    kept = []
    samples = [(0, rss_kib())]
    start = time.perf_counter()
    for call in range(1, calls + 1):
        model.predict(prompts[call % len(prompts)], 5)
        if leak:
            kept.append(bytearray(leak))
        if call % every == 0 or call == calls:
            samples.append((call, rss_kib()))
    seconds = time.perf_counter() - start
    half = min(samples, key=lambda s: abs(s[0] - calls / 2))
    first_half = half[1] - samples[0][1]
    second_half = samples[-1][1] - half[1]
    return {
        "model": str(model_path),
        "calls": calls,
        "seconds": round(seconds, 2),
        "rss_kib": samples,
        "growth_first_half_kib": first_half,
        "growth_second_half_kib": second_half,
        "second_half_bytes_per_call": round(second_half * 1024 / max(1, calls - half[0]), 3),
        "peak_kib": int(next(line.split()[1] for line in Path("/proc/self/status").read_text().splitlines()
                             if line.startswith("VmHWM:"))),
        "python": platform.python_version(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model file or shipped model name (default: a tiny exported LSTM)")
    parser.add_argument("--calls", type=int, default=100_000, help="predict calls (default 100000)")
    parser.add_argument("--every", type=int, default=10_000, help="sample RSS every this many calls (default 10000)")
    parser.add_argument("--leak", type=int, default=0, metavar="BYTES", help="keep BYTES per call (a self-check)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    if args.calls < 2 or args.every < 1:
        parser.error("--calls must be at least 2 and --every at least 1")
    with tempfile.TemporaryDirectory() as folder:
        result = measure(args.model or tiny_model(folder), args.calls, args.every, args.leak)
    if args.json:
        print(json.dumps(result))
        return
    print(f"model: {result['model']}")
    print(f"{result['calls']} predict calls in {result['seconds']} s")
    print(f"{'calls':>8}  {'VmRSS KiB':>10}")
    for call, kib in result["rss_kib"]:
        print(f"{call:>8}  {kib:>10}")
    print(f"growth, first half:  {result['growth_first_half_kib']} KiB")
    print(f"growth, second half: {result['growth_second_half_kib']} KiB "
          f"({result['second_half_bytes_per_call']} bytes per call)")
    print(f"peak (VmHWM): {result['peak_kib']} KiB")


if __name__ == "__main__":
    main()
