"""Fuzzing the model file (hypothesis): whatever bytes or metadata values change, `load` refuses the file
with a SeqgenError, or the model it gives behaves exactly as the unchanged file's does."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from conftest import export_tiny
from helpers import edited
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import seqgen

onnx = pytest.importorskip("onnx")

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
TIED = ("cell", "layers", "hidden_size", "embedding_size", "vocab_size", "quantization", "line_items", "format_version")
"""Facts the load check ties to the graph: edits of these fail even when the checksum is recomputed."""
INERT = ("parameters", "val_loss", "corpus", "created", "training", "graph_crc32", "graph_sha256")
"""Facts that change nothing the model computes."""
VALUES = st.one_of(
    st.sampled_from(["", "0", "1", "2", "3", "4", "16", "17", "-1", "true", "false", "True", "none", "int8",
                     "lstm", "gru", "rnn_tanh", "rnn_relu", "1e999", "NaN", "[]", "{}", "null", "[" * 50 + "]" * 50,
                     '"\\ud800"', "\x00"]),
    st.text(max_size=20),
)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("fuzz") / "small.onnx", "gru", layers=1, hidden=4)


@pytest.fixture(scope="module")
def expected(small: Path) -> tuple[object, ...]:
    return behaviour(small)


def behaviour(path: Path) -> tuple[object, ...]:
    """What a user gets from the model: every next-character probability, a sampled text, and a score."""
    model = seqgen.load(path)
    return (model.predict_batch(["", "the"], k=model.vocab.size), model.generate("t", 12, seed=1),
            model.score("hello world").logprobs.tolist(), model.file.line_items, model.vocab)


def refused_or_same(data: bytes, expected: tuple[object, ...]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "mutated.onnx"
        path.write_bytes(data)
        try:
            got = behaviour(path)
        except seqgen.SeqgenError as exc:
            assert "\n" not in str(exc)
            return
        assert got == expected


@FUZZ
@given(st.data())
def test_changed_bytes_are_refused_or_change_nothing(small: Path, expected: tuple[object, ...],
                                                     data: st.DataObject) -> None:
    original = small.read_bytes()
    mutated = bytearray(original)
    for _ in range(data.draw(st.integers(1, 4))):
        position = data.draw(st.integers(0, len(mutated) - 1))
        mutated[position] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        mutated = mutated[: data.draw(st.integers(1, len(mutated)))]
    refused_or_same(bytes(mutated), expected)


@FUZZ
@given(key=st.sampled_from(TIED + INERT + ("vocabulary", "file_crc32")), value=VALUES, stamp=st.booleans())
def test_changed_metadata_is_refused_or_changes_nothing(small: Path, expected: tuple[object, ...], key: str,
                                                        value: str, stamp: bool) -> None:
    """Unstamped, any edit meets the checksum; stamped afresh (a writer that recomputes the checksum),
    the edits of tied facts meet the graph check. The vocabulary's characters and the policies the
    graph cannot confirm are covered by the checksum alone, so they are edited unstamped only."""
    if stamp and key in ("vocabulary", "file_crc32"):
        stamp = False
    with tempfile.TemporaryDirectory() as folder:
        changed = edited(small, Path(folder) / "edited.onnx", stamp=stamp, **{key: value})
        refused_or_same(changed.read_bytes(), expected)
