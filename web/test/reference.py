"""Expected outputs for the web package's parity tests, computed by the Python runtime at test time.

Reads a JSON list of tasks on stdin and writes a JSON list of results on stdout, one per task. Each
task names its kind; options use the Python runtime's names (top_k, top_p, ...). Run by the node tests
with the interpreter in $SEQGEN_PYTHON (default python3), which must have seqgen installed.
"""

from __future__ import annotations

import json
import sys

import numpy as np

import seqgen
from seqgen.cells import CELLS, Cell
from seqgen.modelfile import file_checksum


def distributions(model: seqgen.Model, prompts: list[str]) -> list[list[float]]:
    """Next-token probabilities after each prompt, from a fresh session."""
    rows = []
    for prompt in prompts:
        session = model.session()
        session.feed(prompt)
        rows.append(session.distribution()[0].tolist())
    return rows


def score(model: seqgen.Model, text: str) -> dict[str, object]:
    result = model.score(text)
    return {"logprobs": result.logprobs.astype(float).tolist(), "loss": result.loss, "accuracy": result.accuracy}


def accepts(pattern: str, chars: tuple[str, ...], texts: list[str]) -> list[bool]:
    """Whether the runtime's table of `pattern` over `chars` fully matches each text."""
    from seqgen.pattern import pattern_table

    table, accepting, state = pattern_table(pattern, chars)
    token = {char: i + 1 for i, char in enumerate(chars)}
    result = []
    for text in texts:
        at = state
        for char in text:
            at = table[at, token[char]] if at >= 0 else -1
        result.append(bool(at >= 0 and accepting[at]))
    return result


def cell_row(row: Cell) -> dict[str, object]:
    """A row of the runtime's cell table under the web package's names."""
    result = {"stateNames": list(row.state_names), "bounded": row.bounded, "onnxOp": row.onnx_op, "gates": row.gates,
              "quantizedOp": row.quantized_op}
    if "activations" in row.onnx_attributes:
        result["activations"] = row.onnx_attributes["activations"]
    return result


def error(call: object) -> str | None:
    """The SeqgenError message of a call, or None when it succeeds."""
    try:
        call()  # type: ignore[operator]
    except seqgen.SeqgenError as exc:
        return str(exc)
    return None


def run(task: dict) -> object:
    kind = task["kind"]
    if kind == "random":  # numpy's generator, which the sampler draws from
        return np.random.default_rng(int(task["seed"])).random(task["n"]).tolist()
    if kind == "repr":  # how Python quotes texts in its messages
        return [repr(text) for text in task["texts"]]
    if kind == "checksum":  # the file_crc32 the Python runtime computes for some bytes
        with open(task["path"], "rb") as handle:
            return file_checksum(handle.read())
    if kind == "sampling_error":  # the refusal of a set of sampling options ({"float": "inf"}: what JSON lacks)
        options = {k: float(v["float"]) if isinstance(v, dict) else v for k, v in task["options"].items()}
        return error(lambda: seqgen.Sampling(**options))
    if kind == "pattern":  # which texts the pattern's token table (the runtime's own) accepts, or its refusal
        chars = tuple(task["chars"])
        result: list[bool] = []
        message = error(lambda: result.extend(accepts(seqgen.Sampling(pattern=task["pattern"]).pattern, chars,
                                                      task["texts"])))
        return {"error": message} if message else {"accepts": result}
    if kind == "cells":  # the runtime's cell table, which the web package's (src/cells.js) must equal
        return {name: cell_row(row) for name, row in CELLS.items()}
    if kind == "load_error":
        return error(lambda: seqgen.load(task["path"]))
    model = seqgen.load(task["model"])
    if kind == "info":
        return model.info
    if kind == "distributions":
        return distributions(model, task["prompts"])
    if kind == "generate":  # seeds come as text: JSON numbers cannot hold 2**64 - 1 exactly
        options = {k: int(v) if k == "seed" else v for k, v in task.get("options", {}).items()}
        text: list[str] = []
        message = error(lambda: text.append(model.generate(task["prompt"], task["n"], **options)))
        return {"error": message} if message else {"text": text[0]}
    if kind == "score":
        return score(model, task["text"])
    if kind == "encode":
        vocab = model.with_unknown(task["unknown"], task.get("replacement")).vocab if "unknown" in task else model.vocab
        message = error(lambda: vocab.encode(task["text"]))
        return {"error": message} if message else {"ids": vocab.encode(task["text"]).tolist()}
    raise ValueError(f"unknown task kind {kind!r}")


def main() -> None:
    tasks = json.load(sys.stdin)
    json.dump([run(task) for task in tasks], sys.stdout)


if __name__ == "__main__":
    main()
