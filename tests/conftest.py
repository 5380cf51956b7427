"""Shared fixtures: tiny exported models (random weights, seconds to build) and the corpora folder."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"
ALPHABET = ["abcde", "bcdef", "cdefg", "defgh", "efghi", "fghij"]


def export_tiny(path: Path, cell: str = "lstm", *, texts: list[str] | None = None, line_items: bool = False,
                layers: int = 2, hidden: int = 16, seed: int = 0) -> Path:
    """Export an untrained CharRNN over the characters of `texts` (needs torch; skips without it)."""
    torch = pytest.importorskip("torch")
    from seqgen import Vocabulary
    from seqgen.train import CharRNN, export_onnx

    vocab = Vocabulary.fit(texts or ["hello world, the quick brown fox jumps over the lazy dog.\n"])
    torch.manual_seed(seed)
    export_onnx(CharRNN(vocab.size, cell, 8, hidden, layers), vocab, path, line_items=line_items)
    return path


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One tiny running-text model per cell, plus a line-item model ('lines')."""
    from seqgen.cells import NAMES

    folder = tmp_path_factory.mktemp("tiny")
    models = {cell: export_tiny(folder / f"{cell}.onnx", cell) for cell in NAMES}
    models["lines"] = export_tiny(folder / "lines.onnx", "gru", texts=["anna", "bob", "carl"], line_items=True)
    return models


@pytest.fixture(scope="session")
def tiny_model(tiny_models: dict[str, Path]) -> Path:
    return tiny_models["lstm"]


@pytest.fixture()
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real corpora not found at {SHARED_DATA} (the project's ../shared/data)")
    return SHARED_DATA
