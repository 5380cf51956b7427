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
