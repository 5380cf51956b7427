"""benchmarks/bench_constrained.py runs end to end on a tiny model and reports every case (no timing assertions)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_constrained.py"


def test_bench_constrained_reports_every_case(tiny_model: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("interegular")
    spec = importlib.util.spec_from_file_location("bench_constrained", SCRIPT)
    bench = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = bench
    spec.loader.exec_module(bench)
    out = tmp_path / "bench.json"
    args = ["--model", str(tiny_model), "--prompt", "the ", "--chars", "15", "--repeats", "1", "--json", str(out)]
    assert bench.main(args) == 0
    report = json.loads(out.read_text())
    assert {"command", "date", "machine", "model", "settings", "rows"} <= set(report)
    assert [row["case"] for row in report["rows"]] == list(bench.CASES)
    for row in report["rows"]:
        assert row["chars"] == 15 and row["us_per_char"] > 0  # every case ran to full length
        assert row["status"] in ("info", "PASS", "FAIL")
        assert (row["compile_ms"] is None) == (row["case"] == "unconstrained")
    assert "best ratio <= 1.2x" in capsys.readouterr().out
