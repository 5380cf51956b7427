"""Each shipped model loads, carries the metadata its card in docs/models.md claims, and scores the
card's figure on a slice of its held-out text (through the runtime, as a user would)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import seqgen
from seqgen.modelfile import DEFAULT_MODEL, shipped_models

CARDS = Path(__file__).resolve().parents[1] / "docs" / "models.md"
SLICE_CHARS = 5000  # running text: the first characters of the held-out tail
SLICE_ITEMS = 200  # line items: the first held-out items


def cards() -> dict[str, dict[str, str]]:
    """The fact tables of docs/models.md: one per '## name' section, '| fact | value |' rows."""
    found: dict[str, dict[str, str]] = {}
    name = None
    for line in CARDS.read_text(encoding="utf-8").splitlines():
        if heading := re.match(r"## `?([\w-]+)`?", line):
            name = heading[1]
            found[name] = {}
        elif name and (row := re.match(r"\|\s*([^|]+?)\s*\|\s*([^|]*?)\s*\|$", line)):
            found[name][row[1]] = row[2].strip("`")
    return found


def test_the_default_model_is_shipped_and_every_shipped_model_has_a_card() -> None:
    assert DEFAULT_MODEL in shipped_models()
    assert set(shipped_models()) <= set(cards())


@pytest.mark.parametrize("name", shipped_models())
def test_metadata_matches_the_card(name: str) -> None:
    card, model = cards()[name], seqgen.load(name)
    assert model.info["cell"] == card["cell"]
    assert str(model.info["parameters"]) == card["parameters"].replace(",", "")
    assert model.info["quantization"] == card["quantization"]
    assert model.info["corpus_sha256"] == card["corpus sha256"]
    assert f"{model.path.stat().st_size:,} bytes" in card["file"]
    if model.info["quantization"] == "int8":  # its own check: agreement with the float model it came from
        assert model.info["int8_top1_agreement"] >= 0.95 and "parity_max_rel_diff" not in model.info
    else:
        assert model.info["parity_max_rel_diff"] <= 1e-4


@pytest.mark.parametrize("name", shipped_models())
def test_the_model_scores_its_cards_figure_on_a_slice_of_held_out_text(name: str, shared_data: Path) -> None:
    pytest.importorskip("torch")  # the held-out split is computed by seqgen.train, as in training
    from seqgen.train.heldout import model_held_out_text
    from seqgen.train.presets import preset_pairs

    card, model = cards()[name], seqgen.load(name)
    corpus = str(model.info["corpus"])
    if corpus.startswith("preset:"):
        _, pairs = preset_pairs(corpus.removeprefix("preset:"))
        answers = model.predict_batch([source for source, _ in pairs], k=1)
        accuracy = sum(top[0][0] == target[-1] for top, (_, target) in zip(answers, pairs)) / len(pairs)
        assert accuracy == float(card["accuracy"])
        return
    text = model_held_out_text(model, (shared_data / corpus).read_text(encoding="utf-8"))
    piece = "\n".join(text.split("\n")[:SLICE_ITEMS]) if model.file.line_items else text[:SLICE_CHARS]
    assert model.score(piece).loss == pytest.approx(float(card["held-out loss, test slice"]), abs=1e-3)
