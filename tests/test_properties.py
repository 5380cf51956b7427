"""Property tests: on any Unicode text and any sampling options, predict, score and generate either give a
valid result or raise the documented SeqgenError, and exactly when the documented rules say so.

The tiny models have random weights, so the properties are about structure (probabilities, lengths,
vocabulary, determinism), never particular characters. The vocabulary round trip is in test_vocab.py.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import seqgen

PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])



@pytest.fixture(scope="module")
def models(tiny_models: dict[str, Path]) -> dict[str, seqgen.Model]:
    """The running-text LSTM under each unknown-character policy, and the line-item model."""
    lstm = seqgen.load(tiny_models["lstm"])
    return {"error": lstm, "skip": lstm.with_unknown("skip"), "replace": lstm.with_unknown("replace", " "),
            "lines": seqgen.load(tiny_models["lines"])}


def vocabulary_text(model: seqgen.Model) -> st.SearchStrategy[str]:
    return st.text(alphabet=st.sampled_from(model.vocab.chars), max_size=40)


def any_text(model: seqgen.Model) -> st.SearchStrategy[str]:
    """Arbitrary Unicode, with the model's own characters mixed in often enough to reach valid paths."""
    return st.one_of(st.text(max_size=40), vocabulary_text(model),
                     st.lists(st.one_of(vocabulary_text(model), st.text(max_size=3)), max_size=6).map("".join))


def expected_ids(model: seqgen.Model, text: str) -> list[int] | None:
    """What the documented unknown-character policy makes of `text`: the kept characters, or None for an error."""
    vocab = model.vocab
    kept = []
    for char in text.lower() if vocab.lowercase else text:
        if char in vocab.chars:
            kept.append(vocab.chars.index(char) + 1)
        elif vocab.unknown == "error":
            return None
        elif vocab.unknown == "replace":
            kept.append(vocab.chars.index(vocab.replacement) + 1)
    return kept


POLICIES = ["error", "skip", "replace", "lines"]


# -- predict -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
@PROPERTY
@given(data=st.data())
def test_predict_on_any_text_is_a_distribution_or_the_documented_error(
        models: dict[str, seqgen.Model], policy: str, data: st.DataObject) -> None:
    model = models[policy]
    text = data.draw(any_text(model), label="text")
    k = model.vocab.size
    if expected_ids(model, text) is None:
        with pytest.raises(seqgen.SeqgenError, match="not in the model's vocabulary"):
            model.predict(text, k)
        return
    ranked = model.predict(text, k)
    chars = [c for c, _ in ranked]
    probs = np.array([p for _, p in ranked])
    allowed = set(model.vocab.chars) | ({""} if model.file.line_items else set())
    assert set(chars) <= allowed and len(set(chars)) == len(chars) == len(allowed)
    assert np.isfinite(probs).all() and (probs >= 0).all() and (probs <= 1).all()
    assert math.isclose(probs.sum(), 1.0, rel_tol=1e-5)
    assert (np.diff(probs) <= 0).all()  # most likely first


# -- score ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICIES)
@PROPERTY
@given(data=st.data())
def test_score_on_any_text_is_finite_or_the_documented_error(
        models: dict[str, seqgen.Model], policy: str, data: st.DataObject) -> None:
    model = models[policy]
    text = data.draw(any_text(model), label="text")
    if model.file.line_items:  # each non-empty line is an item, its end token counted
        items = [expected_ids(model, line) for line in text.split("\n") if line]
        tokens = None if None in items else sum(len(i) + 1 for i in items)
        empty = "no non-empty lines"
    else:
        ids = expected_ids(model, text)
        tokens = None if ids is None else len(ids)
        empty = "text is empty"
    if tokens is None:
        with pytest.raises(seqgen.SeqgenError, match="not in the model's vocabulary"):
            model.score(text)
        return
    if tokens == 0:
        with pytest.raises(seqgen.SeqgenError, match=empty):
            model.score(text)
        return
    score = model.score(text)
    assert score.tokens == tokens
    assert np.isfinite(score.logprobs).all() and (score.logprobs <= 1e-5).all()
    assert math.isfinite(score.loss) and score.loss >= -1e-5
    assert 0 <= score.accuracy <= 1


# -- generate ------------------------------------------------------------------------------------------

FLOATS = st.floats(allow_nan=True, allow_infinity=True)


def sampling_options() -> st.SearchStrategy[dict[str, object]]:
    """Any value for each option: valid ones often, out-of-range, NaN and infinite ones as well."""
    temperature = st.one_of(st.just(0.0), st.floats(0.01, 5.0), st.floats(1e-300, 1e300), FLOATS)
    top_k = st.one_of(st.none(), st.integers(1, 40), st.integers(-5, 10**6))
    unit = st.one_of(st.none(), st.floats(0.05, 1.0), st.floats(5e-324, 1.0), FLOATS)
    penalty = st.one_of(st.just(1.0), st.floats(0.5, 2.0), st.floats(1e-30, 1e30), FLOATS)
    stop = st.one_of(st.none(), st.text(max_size=3), st.lists(st.text(max_size=3), max_size=3))
    return st.fixed_dictionaries({"temperature": temperature, "top_k": top_k, "top_p": unit, "min_p": unit,
                                  "repetition_penalty": penalty, "stop": stop, "seed": st.integers(0, 2**32)})


def refusals(options: dict[str, object], length: int) -> list[str]:
    """The documented rules for generation options (docs/reliability.md): the names of the refused ones."""
    t, k, r = options["temperature"], options["top_k"], options["repetition_penalty"]
    refused = []
    if not (math.isfinite(t) and t >= 0):
        refused.append("temperature")
    if k is not None and k < 1:
        refused.append("top_k")
    for name in ("top_p", "min_p"):
        value = options[name]
        if value is not None and not 0 < value <= 1:  # NaN fails the comparison too
            refused.append(name)
    if not (math.isfinite(r) and r > 0):
        refused.append("repetition_penalty")
    stop = options["stop"]
    if stop is not None and (stop == "" or (isinstance(stop, list) and "" in stop)):
        refused.append("stop")
    if length < 0:
        refused.append("max_new_chars")
    return refused


def raises_one_of(problems: list[str]) -> AbstractContextManager[object]:
    """A SeqgenError naming one of `problems` (which one first is not part of the contract)."""
    return pytest.raises(seqgen.SeqgenError, match="|".join(problems))


def options_and_length() -> st.SearchStrategy[tuple[dict[str, object], int]]:
    return st.tuples(sampling_options(), st.integers(-3, 25))


@pytest.mark.parametrize("policy", POLICIES)
@PROPERTY
@given(data=st.data())
def test_generate_on_any_prompt_and_options_is_valid_text_or_the_documented_error(
        models: dict[str, seqgen.Model], policy: str, data: st.DataObject) -> None:
    model = models[policy]
    prompt = data.draw(any_text(model), label="prompt")
    options, length = data.draw(options_and_length(), label="options")
    refused = refusals(options, length)
    if expected_ids(model, prompt) is None:
        refused.append("not in the model's vocabulary")
    if refused:
        with raises_one_of(refused):
            model.generate(prompt, length, **options)
        with raises_one_of(refused):
            "".join(model.stream(prompt, length, **options))
        return
    text = model.generate(prompt, length, **options)
    assert set(text) <= set(model.vocab.chars)
    stops = [options["stop"]] if isinstance(options["stop"], str) else options["stop"] or []
    assert not any(s in text for s in stops)  # a stop string is never emitted
    if model.file.line_items or stops:
        assert len(text) <= length
    else:
        assert len(text) == length  # a running text never ends early
    assert model.generate(prompt, length, **options) == text  # the seed fixes the text
    assert "".join(model.stream(prompt, length, **options)) == text


@PROPERTY
@given(data=st.data())
def test_generate_batch_rows_are_valid_text_or_the_documented_error(
        models: dict[str, seqgen.Model], data: st.DataObject) -> None:
    model = models["skip"]
    prompts = data.draw(st.lists(any_text(model), max_size=4), label="prompts")
    options, length = data.draw(options_and_length(), label="options")
    refused = refusals(options, length)
    if refused and prompts:
        with raises_one_of(refused):
            model.generate_batch(prompts, length, **options)
        return
    try:
        rows = model.generate_batch(prompts, length, **options)
    except seqgen.SeqgenError as error:  # an empty batch may be answered [] before the options are checked
        assert refused and not prompts, error
        return
    assert len(rows) == len(prompts)
    for row in rows:
        assert set(row) <= set(model.vocab.chars) and len(row) <= length
        if not options["stop"]:
            assert len(row) == length


# -- sessions --------------------------------------------------------------------------------------------


@PROPERTY
@given(data=st.data())
def test_text_fed_in_any_pieces_gives_the_distribution_of_one_feed(
        models: dict[str, seqgen.Model], data: st.DataObject) -> None:
    model = models["error"]
    pieces = data.draw(st.lists(vocabulary_text(model), max_size=6), label="pieces")
    whole = model.session()
    whole.feed("".join(pieces))
    split = model.session()
    for piece in pieces:
        split.feed(piece)
    assert split.text == whole.text == ["".join(pieces)]
    assert np.allclose(split.distribution(), whole.distribution(), atol=1e-5)
    assert np.isfinite(split.distribution()).all()


# -- the same seed in another process --------------------------------------------------------------------

MANY_CALLS = """
import json, sys, seqgen
model = seqgen.load(sys.argv[1])
print(json.dumps([
    model.generate("the ", 60, temperature=0.9, top_k=12, top_p=0.95, min_p=0.01, repetition_penalty=1.2,
                   stop=["q", "zz"], seed=5),
    model.generate_batch(["a", "the", ""], 30, temperature=1.3, seed=6),
    model.generate("", 40, seed=2**40),
    model.predict("hello", 3),
]))
"""


def test_the_same_seed_gives_the_same_text_in_processes_with_different_hash_seeds(tiny_model: Path) -> None:
    """Batches, stop strings and all options, in two processes whose str hashing (PYTHONHASHSEED) differs."""
    outputs = []
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed, "OMP_NUM_THREADS": "1"}
        outputs.append(subprocess.run([sys.executable, "-c", MANY_CALLS, str(tiny_model)], capture_output=True,
                                      text=True, check=True, env=env, timeout=120).stdout)
    assert outputs[0] == outputs[1]
    generated = json.loads(outputs[0])
    assert len(generated[0]) <= 60 and len(generated[1]) == 3 and len(generated[2]) == 40
