"""What the benchmarks share: a call timed in wall and CPU time, interleaved rounds, a process's time and peak
memory, the machine and package versions, and reports written atomically.

The scripts import it as a sibling module (`python benchmarks/X.py` puts this folder on the path; the tests
add it through pytest's pythonpath).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def timed(action: Callable[[], T]) -> tuple[float, float, T]:
    """Wall and CPU seconds (this process's user + system time) of one call of `action`, and what it returned."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = action()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def interleaved(samplers: dict[str, Callable[[], T]], repeats: int,
                log: Callable[[str], None] = lambda _: None) -> dict[str, list[T]]:
    """Each sampler called once to warm up, then `repeats` times in rounds, A B C ... then ... C B A, so that
    load and drift hit all alike; what each call returned, in order."""
    for sampler in samplers.values():
        sampler()
    taken: dict[str, list[T]] = {key: [] for key in samplers}
    order = list(samplers)
    for round_index in range(repeats):
        for key in order if round_index % 2 == 0 else order[::-1]:
            taken[key].append(samplers[key]())
        log(f"round {round_index + 1}/{repeats} done")
    return taken


def machine() -> dict[str, object]:
    """The machine's facts for a report: platform, CPU model and vector extensions, cores usable, load at the start."""
    cpuinfo: dict[str, str] = {}
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as info:
        for line in info:
            key, _, value = line.partition(":")
            cpuinfo.setdefault(key.strip(), value.strip())
    return {"platform": platform.platform(), "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "cpu": cpuinfo.get("model name", platform.processor() or "?"),
            "usable_cpus": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
            "vector_flags": [flag for flag in cpuinfo.get("flags", "").split()
                             if flag.startswith(("avx", "sse4", "fma", "amx"))]}


def write_json(path: str | Path, document: object) -> None:
    """`document` as indented JSON at `path`, atomically: a reader never sees half a report."""
    path = Path(path)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    partial.replace(path)


def versions(*names: str) -> dict[str, str]:
    """The installed version of each distribution in `names`, or 'not installed'."""

    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {name: version(name) for name in names}


LAUNCHER = """import json, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
wall = time.perf_counter() - start
try:
    import resource
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu, rss = usage.ru_utime + usage.ru_stime, usage.ru_maxrss / (2**20 if sys.platform == "darwin" else 2**10)
except ImportError:
    cpu, rss = wall, None
print(json.dumps([wall, cpu, rss, done.returncode, done.stderr.decode(errors="replace").strip()[-300:]]))"""
"""Runs one command: its wall and CPU time, peak RSS (MiB), exit code and the end of its error output."""


def process_usage(command: list[str], env: dict[str, str] | None = None) -> tuple[float, float, float | None]:
    """Wall and CPU seconds and peak RSS (MiB; None without the resource module) of one run of `command`; raises
    RuntimeError if it fails. A child's ru_maxrss includes the RSS of the process it was forked from (Linux keeps
    the pre-exec high-water mark), so `command` starts from a small launcher, not from the measuring process."""
    launched = subprocess.run([sys.executable, "-c", LAUNCHER, *command], capture_output=True, text=True, env=env)
    if launched.returncode != 0:
        raise RuntimeError(f"the process launcher failed: {launched.stderr.strip()[-300:]}")
    wall, cpu, rss, code, error = json.loads(launched.stdout)
    if code != 0:
        raise RuntimeError(f"{shlex.join(command)} exited with {code}: {error}")
    return wall, cpu, rss
