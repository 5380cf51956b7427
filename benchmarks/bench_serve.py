"""`seqgen-run serve` under load: concurrent streaming clients against the same requests one at a time.

    python benchmarks/bench_serve.py [--model NAME_OR_PATH] [--levels 1,4,16,32,64] [--chars 64]
                                     [--requests-per-client 2] [--overhead-chars 300] [--json OUT]

The server runs in a subprocess (`seqgen-run serve --port 0`); the clients are one asyncio process
speaking HTTP/1.1 on raw sockets (no client library, so the clients' own cost stays small).

For each level C: C clients start together, each sends --requests-per-client streamed completions
back to back (a distinct prompt and seed each, --chars characters, temperature 0.8). Then the same
requests are sent one at a time. Reported: aggregate generated characters per second (all characters
/ wall time), time to first character (TTFC, request sent to the first chunk holding text) p50 and
p99, and whether every text made concurrently equals the one made alone (seeded). Beside each
level, the bare batched step of the model at batch C in this process (Session.step, no sampling, no
HTTP) shows what the graph alone allows.

Streaming overhead: one client, one seeded stream of --overhead-chars characters, server time per
character / `Model.stream` time per character in this process (medians of --repeats interleaved runs).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from benchkit import machine, timed, write_json

import seqgen
from seqgen.session import Session

PROMPTS = ("ROMEO:", "JULIET:\nO ",
           "To be, or not", "KING HENRY:", "First Citizen:\n", "What light", "O, ", "MENENIUS:")
GOALS = {"throughput_32": 5.0, "ttfc_p99_32": 0.5, "overhead_1": 1.5}


def request_body(model: seqgen.Model, index: int, chars: int) -> dict[str, object]:
    """The index-th request: a prompt (its characters outside the model's vocabulary dropped) and a seed."""
    prompt = "".join(c for c in PROMPTS[index % len(PROMPTS)] if c in model.vocab.chars)
    return {"model": model.path.stem, "prompt": prompt, "max_tokens": chars, "temperature": 0.8,
            "seed": 1000 + index, "stream": True}


async def stream(port: int, body: dict[str, object]) -> tuple[float, float, str]:
    """One streamed completion over a raw socket: (seconds to the first text, seconds in all, the text)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    payload = json.dumps(body).encode()
    start = time.perf_counter()
    writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                 b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(payload), payload))
    head = await reader.readuntil(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"the server answered {head.splitlines()[0]!r}: {await reader.read(2000)!r}")
    first, pieces, pending = None, [], b""
    while True:  # chunked transfer encoding around server-sent events
        size = int((await reader.readline()).strip(), 16)
        if size == 0:
            break
        pending += (await reader.readexactly(size + 2))[:-2]
        *events, pending = pending.split(b"\n\n")
        for event in events:
            if event.startswith(b"data: {"):
                text = "".join(c["text"] for c in json.loads(event[6:])["choices"])
                if text and first is None:
                    first = time.perf_counter() - start
                pieces.append(text)
    writer.close()
    return first if first is not None else float("nan"), time.perf_counter() - start, "".join(pieces)


async def client(port: int, bodies: list[dict[str, object]]) -> list[tuple[float, float, str]]:
    return [await stream(port, body) for body in bodies]


def run_level(port: int, model: seqgen.Model, clients: int, per_client: int, chars: int,
              together: bool) -> dict[str, object]:
    """`clients` x `per_client` requests, all clients at once (together) or every request alone."""
    bodies = [[request_body(model, c * per_client + r, chars) for r in range(per_client)] for c in range(clients)]

    async def main() -> list[list[tuple[float, float, str]]]:
        if together:
            return await asyncio.gather(*(client(port, b) for b in bodies))
        return [await client(port, [body]) for group in bodies for body in group]

    before = health(port)
    start = time.perf_counter()
    results = [r for group in asyncio.run(main()) for r in group]
    wall = time.perf_counter() - start
    after = health(port)
    ttfc = np.array([r[0] for r in results])
    chars_made = sum(len(r[2]) for r in results)
    return {"requests": len(results), "chars": chars_made, "wall_s": wall, "chars_per_s": chars_made / wall,
            "ttfc_p50_s": float(np.percentile(ttfc, 50)), "ttfc_p99_s": float(np.percentile(ttfc, 99)),
            "texts": [r[2] for r in results], "scheduler": scheduler_share(before, after, wall)}


def health(port: int) -> dict[str, object]:
    """The server's counters for its one model."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=30) as reply:
        return next(iter(json.load(reply)["models"].values()))


def scheduler_share(before: dict, after: dict, wall: float) -> dict[str, float]:
    """Where the scheduler thread's time went during a level: steps, rows per step, and the share of the
    wall time spent in graph calls, in per-row sampling and bookkeeping, and in regrouping the batch."""
    steps = after["steps"] - before["steps"]
    spent = {key: after["seconds"][key] - before["seconds"][key] for key in after["seconds"]}
    return {"steps": steps, "rows_per_step": (after["generated"] - before["generated"]) / max(steps, 1),
            **{f"{key}_share": value / wall for key, value in spent.items()},
            **{f"{key}_ms_per_step": value / max(steps, 1) * 1e3 for key, value in spent.items()}}


def bare_step_s(model: seqgen.Model, batch: int, steps: int = 50) -> float:
    """Median seconds of one bound batched step at `batch` in this process."""
    session = Session(model, batch)
    ids = np.ones(batch, np.int64)
    session.step(ids)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        session.step(ids)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def process_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) a process has used so far (Linux /proc; NaN elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return float("nan")
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def overhead(port: int, pid: int, model: seqgen.Model, chars: int, repeats: int) -> dict[str, object]:
    """Per-character time of one seeded stream: the server against Model.stream, interleaved; in wall
    time, and in CPU time (the server process's against this process's), which other load disturbs less."""
    body = request_body(model, 0, chars)
    local, served, local_cpu, served_cpu = [], [], [], []
    for _ in range(repeats):
        seconds, cpu_seconds, text = timed(lambda: "".join(model.stream(str(body["prompt"]), chars, temperature=0.8,
                                                                         seed=1000)))
        local.append(seconds / len(text))
        local_cpu.append(cpu_seconds / len(text))
        cpu = process_cpu_s(pid)
        _, seconds, served_text = asyncio.run(stream(port, body))
        served.append(seconds / len(served_text))
        served_cpu.append((process_cpu_s(pid) - cpu) / len(served_text))
        if served_text != text:
            raise RuntimeError("the server's seeded stream differs from Model.stream")
    return {"model_stream_us_per_char": statistics.median(local) * 1e6,
            "server_us_per_char": statistics.median(served) * 1e6,
            "ratio": statistics.median(served) / statistics.median(local),
            "model_stream_cpu_us_per_char": statistics.median(local_cpu) * 1e6,
            "server_cpu_us_per_char": statistics.median(served_cpu) * 1e6,
            "cpu_ratio": statistics.median(served_cpu) / statistics.median(local_cpu)}


def start_server(model: str) -> tuple[subprocess.Popen[str], int]:
    """The server with its default settings (batch of 64, queue of 256) on a free port."""
    command = [sys.executable, "-c", "from seqgen.cli import run; run()", "serve", "--model", model, "--port", "0"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()  # type: ignore[union-attr]
    if "127.0.0.1:" not in line:
        process.kill()
        raise RuntimeError(f"the server did not start: {line!r}")
    return process, int(line.split("127.0.0.1:")[1].split("/")[0])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="shakespeare")
    parser.add_argument("--levels", default="1,4,16,32,64")
    parser.add_argument("--chars", type=int, default=64)
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--overhead-chars", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    levels = [int(level) for level in args.levels.split(",")]
    model = seqgen.load(args.model)
    name = model.path.stem
    report: dict[str, object] = {
        "command": "python benchmarks/bench_serve.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(), "model": name, "settings": vars(args) | {"json": str(args.json)}}
    process, port = start_server(args.model)
    try:
        asyncio.run(stream(port, request_body(model, 0, 8)))  # warm-up
        report["overhead"] = overhead(port, process.pid, model, args.overhead_chars, args.repeats)
        rows = []
        for clients in levels:
            together = run_level(port, model, clients, args.requests_per_client, args.chars, True)
            alone = run_level(port, model, clients, args.requests_per_client, args.chars, False)
            rows.append({"clients": clients, "together": together, "alone": alone,
                         "same_texts": together.pop("texts") == alone.pop("texts"),
                         "bare_step_ms": bare_step_s(model, max(clients, 2)) * 1e3})
        report["levels"] = rows
    finally:
        process.terminate()
        report["server_exit_code"] = process.wait(30)
    single = rows[0]["together"]["chars_per_s"]
    print(f"{report['date']}  {report['machine']['cpu']}  model {name}")
    cost = report["overhead"]
    print(f"streaming overhead at 1 client: {cost['ratio']:.2f}x Model.stream ({cost['server_us_per_char']:.0f} vs "
          f"{cost['model_stream_us_per_char']:.0f} us/char; goal <= {GOALS['overhead_1']}x); in CPU time "
          f"{cost['cpu_ratio']:.2f}x ({cost['server_cpu_us_per_char']:.0f} vs "
          f"{cost['model_stream_cpu_us_per_char']:.0f} us/char)")
    print("clients  chars/s  x1client  TTFC p50  TTFC p99 | alone: chars/s  TTFC p50  TTFC p99 | same  bare step"
          " | rows/step  graph  sampling  regroup (ms/step)")
    for row in rows:
        t, a = row["together"], row["alone"]
        print(f"{row['clients']:>7}  {t['chars_per_s']:>7.0f}  {t['chars_per_s'] / single:>7.1f}x  "
              f"{t['ttfc_p50_s'] * 1e3:>6.0f}ms  {t['ttfc_p99_s'] * 1e3:>6.0f}ms | {a['chars_per_s']:>13.0f}  "
              f"{a['ttfc_p50_s'] * 1e3:>6.0f}ms  {a['ttfc_p99_s'] * 1e3:>6.0f}ms | {row['same_texts']!s:>5}  "
              f"{row['bare_step_ms']:.2f}ms | {t['scheduler']['rows_per_step']:>9.1f}  "
              f"{t['scheduler']['graph_ms_per_step']:.2f}  {t['scheduler']['sampling_ms_per_step']:.2f}  "
              f"{t['scheduler']['regroup_ms_per_step']:.2f}")
    if args.json:
        write_json(args.json, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
