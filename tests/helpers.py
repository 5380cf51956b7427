"""Helpers shared by several test files: running the CLI, checking its errors, editing model files."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from seqgen import cli
from seqgen.modelfile import CHECKSUM_KEY, seqgen_entries, stored_key


def run(*args: object, stdin: str | bytes | None = None) -> Result:
    """seqgen-run in this process, through click's test runner."""
    return CliRunner().invoke(cli.main, [str(a) for a in args], input=stdin)


def assert_input_error(result: Result, *words: str) -> None:
    """Exit code 2 and exactly one `Error:` line on stderr (containing `words`), nothing on stdout."""
    assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
    lines = result.stderr.splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith("Error: ")
    assert "Traceback" not in result.output
    assert result.stdout == ""
    for word in words:
        assert word in lines[0], lines[0]


def seqgen_run() -> list[str]:
    """The installed console script, or the same entry point through this interpreter."""
    script = shutil.which("seqgen-run", path=str(Path(sys.executable).parent))
    return [script] if script else [sys.executable, "-c", "from seqgen.cli import run; run()"]


def edited(source: Path, target: Path, *, stamp: bool = True, **changes: str | None) -> Path:
    """A copy of `source` with seqgen metadata keys changed (None removes a key). With `stamp` its
    file_crc32 is computed afresh, as a careless (or hostile) writer would, so the load checks behind
    the checksum are tested on their own; without it the old checksum stays (or goes, if removed)."""
    onnx = pytest.importorskip("onnx")
    from seqgen.train.export import stamped

    model = onnx.load(source)
    entries = {p.key: p.value for p in model.metadata_props}
    for key, value in changes.items():
        entries.pop(stored_key(key), None)
        if value is not None:
            entries[stored_key(key)] = value
    if stamp:
        metadata = seqgen_entries(entries.items())
        metadata.pop(CHECKSUM_KEY, None)
        target.write_bytes(stamped(model, metadata))
        return target
    del model.metadata_props[:]
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)
    onnx.save(model, target)
    return target
