"""benchmarks/bench_runtime.py runs end to end on a tiny model and reports every metric (no timing assertions)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_runtime.py"


def load_script():
    spec = importlib.util.spec_from_file_location("bench_runtime", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_bench_script_reports_every_metric(tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    bench = load_script()
    out = tmp_path / "bench.json"
    code = bench.main(["--model", str(tiny_model), "--repeats", "1", "--chars", "20", "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert {"command", "date", "machine", "versions", "model", "settings"} <= set(report)
    assert set(report["metrics"]) == {key for key, metric in bench.METRICS.items() if metric.label}
    assert set(report["samples"]) == {key for key, metric in bench.METRICS.items() if metric.sampler}  # none skipped
    for key, row in report["metrics"].items():
        assert row["status"] in ("PASS", "FAIL", "info", "skipped"), key
        assert row["status"] == "skipped" or row["value"] is not None, key
    assert report["metrics"]["prompt"]["calls"] == [1]  # the long prompt went in one call
    printed = capsys.readouterr().out
    assert "greedy" in printed and "target" in printed


def test_bench_script_without_a_default_model_says_to_pass_one(monkeypatch: pytest.MonkeyPatch,
                                                               capsys: pytest.CaptureFixture) -> None:
    bench = load_script()
    monkeypatch.setattr(bench.modelfile, "shipped_models", lambda: [])
    assert bench.main(["--repeats", "1"]) == 2
    assert "--model" in capsys.readouterr().err


def test_benchkit_rounds_alternate_direction_after_one_warm_up_each(tmp_path: Path) -> None:
    import benchkit

    calls: list[str] = []
    taken = benchkit.interleaved({key: lambda key=key: calls.append(key) or len(calls) for key in "abc"}, 3)
    assert calls == list("abc" "abc" "cba" "abc")  # warm-up, then A B C, C B A, A B C
    assert taken == {"a": [4, 9, 10], "b": [5, 8, 11], "c": [6, 7, 12]}
    out = tmp_path / "report.json"
    benchkit.write_json(out, {"µs": 1.5})
    assert json.loads(out.read_text()) == {"µs": 1.5} and [p.name for p in tmp_path.iterdir()] == ["report.json"]
    assert {"cpu", "cpu_count", "python", "vector_flags"} <= set(benchkit.machine())


def test_benchkit_process_usage_measures_a_child_and_names_a_failure() -> None:
    import benchkit

    wall, cpu, rss = benchkit.process_usage([sys.executable, "-c", "b = bytearray(64 << 20); b[::4096] = b'x' * 16384"])
    assert wall > 0 and cpu >= 0 and (rss is None or rss >= 64)  # the child's 64 MiB, not the launcher's
    with pytest.raises(RuntimeError, match="exited with 3"):
        benchkit.process_usage([sys.executable, "-c", "raise SystemExit(3)"])
    assert benchkit.versions("numpy", "no-such-distribution")["no-such-distribution"] == "not installed"
