"""Re-evaluate every shipped model through the runtime on its held-out split; print the table.

    python benchmarks/quality.py [--data ../shared/data] [--slice CHARS]

Running-text models are scored on the held-out tail of their corpus with state carried through
the whole text; line-item models on their held-out items, end-of-item predictions included.
Preset models (the seed notebook's) are checked on their own task.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import seqgen
from seqgen.modelfile import artifacts_dir, shipped_models

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def held_out(model: seqgen.Model, data: Path, limit: int | None = None) -> str | None:
    """The model's held-out text, split as its training run split it; None if the corpus is absent."""
    from seqgen.train.heldout import model_held_out_text

    corpus = data / str(model.info.get("corpus", ""))
    if not corpus.is_file():
        return None
    text = model_held_out_text(model, corpus.read_text(encoding="utf-8"))
    return text[:limit] if limit else text


def evaluate(name: str, data: Path, limit: int | None) -> dict[str, object]:
    model = seqgen.load(name)
    row: dict[str, object] = {"model": name, "cell": model.info["cell"], "parameters": model.info.get("parameters"),
                              "bytes": model.path.stat().st_size, "quantization": model.info.get("quantization")}
    corpus = str(model.info.get("corpus", ""))
    if corpus.startswith("preset:"):
        from seqgen.train.presets import preset_pairs

        _, pairs = preset_pairs(corpus.removeprefix("preset:"))
        hits = [model.predict(source[: i + 1], k=1)[0][0] == target[i - len(source) + len(target)]
                for source, target in pairs for i in range(len(source) - len(target), len(source))]
        row.update(split="its training set (as the notebook)", accuracy=sum(hits) / len(hits))
        return row
    text = held_out(model, data, limit)
    if text is None:
        row["split"] = f"corpus {corpus} not found in {data}"
        return row
    score = model.score(text)
    row.update(split="held-out items" if model.file.line_items else "held-out tail", tokens=score.tokens,
               loss=round(score.loss, 4), bits_per_char=round(score.bits_per_char, 4),
               accuracy=round(score.accuracy, 4))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--slice", type=int, default=None, help="score only the first CHARS of each held-out text")
    args = parser.parse_args()
    print(f"shipped models in {artifacts_dir()}")
    columns = ("model", "cell", "parameters", "bytes", "quantization", "split", "tokens", "loss", "bits_per_char",
               "accuracy")
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for name in shipped_models():
        row = evaluate(name, args.data, args.slice)
        print("| " + " | ".join(str(row.get(c, "")) for c in columns) + " |", flush=True)


if __name__ == "__main__":
    main()
