"""The sampling pipeline: every stage is connected to generation, one options object serves every entry point,
and each option follows seqgen.checks' one rule."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_input_error, run

import seqgen
from seqgen import SeqgenError
from seqgen.sampling import Sampler, Sampling


@pytest.fixture(scope="module")
def model(tiny_models: dict[str, Path]) -> seqgen.Model:
    return seqgen.load(tiny_models["lstm"])


@pytest.fixture(scope="module")
def lines(tiny_models: dict[str, Path]) -> seqgen.Model:
    return seqgen.load(tiny_models["lines"])


def rigged(model: seqgen.Model, prompt: str, scores: dict[str, float]) -> seqgen.Session:
    """A session after `prompt` whose next logits are `scores` (boundary "" included) and -50 elsewhere."""
    session = model.session()
    session.feed(prompt)
    logits = session.current()  # the session's own array: what the next sample starts from
    logits[:] = -50.0
    for char, score in scores.items():
        logits[0, 0 if char == "" else int(model.vocab.encode(char)[0])] = score
    return session


def picked(model: seqgen.Model, session: seqgen.Session, **options: object) -> str:
    return model.vocab.char(int(session.sample(Sampler(Sampling(**options)))[0]))


# -- each stage is connected to Session.sample --------------------------------------------------------


def test_the_end_rule_is_applied_when_sampling(model: seqgen.Model, lines: seqgen.Model) -> None:
    assert picked(model, rigged(model, "hel", {"": 9.0, "l": 1.0}), temperature=0) == "l"  # running text never ends
    assert picked(lines, rigged(lines, "an", {"": 9.0, "n": 1.0}), temperature=0) == ""  # a line item may


def test_the_repetition_penalty_is_applied_when_sampling(model: seqgen.Model) -> None:
    scores = {"h": 5.0, "q": 4.0}
    assert picked(model, rigged(model, "hello", scores), temperature=0) == "h"
    assert picked(model, rigged(model, "hello", scores), temperature=0, repetition_penalty=2.0) == "q"  # 5/2 < 4
    assert picked(model, rigged(model, "qqq", scores), temperature=0, repetition_penalty=2.0) == "h"  # q is recent


@pytest.mark.parametrize(("options", "allowed"), [
    ({}, {"a", "b", "c", "d"}),
    ({"temperature": 0}, {"a"}),
    ({"temperature": 1e-3}, {"a"}),
    ({"top_k": 2}, {"a", "b"}),
    ({"min_p": 0.5}, {"a", "b"}),
    ({"top_p": 0.7}, {"a", "b"}),
])
def test_each_cut_is_applied_when_sampling(model: seqgen.Model, options: dict[str, object], allowed: set[str]) -> None:
    scores = {c: float(np.log(p)) for c, p in zip("abcd", (0.5, 0.3, 0.15, 0.05))}
    seen = set()
    for seed in range(200):
        seen.add(picked(model, rigged(model, "x", scores), seed=seed, **options))
    assert seen == allowed


def test_every_stage_changes_generate(model: seqgen.Model) -> None:
    """Through the public API: each option, pushed far enough, changes the seeded text."""
    free = model.generate("the ", 60, seed=3)
    greedy = model.generate("the ", 60, temperature=0)
    assert free != greedy
    for options in ({"temperature": 0.3}, {"top_k": 2}, {"top_p": 0.3}, {"min_p": 0.95}, {"repetition_penalty": 3.0}):
        assert model.generate("the ", 60, seed=3, **options) != free, options
    assert model.generate("the ", 60, temperature=0, repetition_penalty=3.0) != greedy
    assert model.generate("the ", 60, seed=3, stop=free[20:22]) == free[: free.index(free[20:22])]


def test_a_penalty_is_never_silently_skipped() -> None:
    logits = np.array([[-np.inf, 5.0, 4.0]], np.float32)
    sampler = Sampler(Sampling(temperature=0, repetition_penalty=1000))
    with pytest.raises(seqgen.SeqgenError, match="history"):
        sampler(logits.copy())
    assert int(sampler(logits.copy(), history=np.array([[1, 1]]))[0]) == 2


# -- one options object -------------------------------------------------------------------------------


def test_one_options_object_serves_every_entry_point(model: seqgen.Model) -> None:
    options = {"temperature": 0.9, "top_k": 8, "top_p": 0.95, "min_p": 0.01, "repetition_penalty": 1.2,
               "seed": 5, "stop": ["zz"]}
    sampling = Sampling.from_kwargs(**options)
    assert sampling == Sampling(**options) and sampling.stop == ("zz",)
    assert model.generate("a", 40, sampling=sampling) == model.generate("a", 40, **options)
    assert "".join(model.stream("a", 40, sampling=sampling)) == model.generate("a", 40, **options)
    assert model.generate_batch(["a", "b"], 40, sampling=sampling) == model.generate_batch(["a", "b"], 40, **options)
    with pytest.raises(seqgen.SeqgenError, match="not both"):
        model.generate("a", 5, sampling=sampling, seed=1)
    with pytest.raises(seqgen.SeqgenError, match="unknown sampling option 'temprature'"):
        model.generate("a", 5, temprature=0.5)
    with pytest.raises(seqgen.SeqgenError, match="unknown sampling option"):
        Sampling.from_kwargs(topk=3)


def test_each_row_can_have_its_own_options_and_random_stream(model: seqgen.Model) -> None:
    """A server batching requests: row r sampled with its own Sampler is exactly that request at batch 1."""
    requests = [({"temperature": 0.8, "seed": 1}, "the "), ({"top_k": 3, "seed": 2, "repetition_penalty": 1.5}, "a"),
                ({"temperature": 0}, "")]
    singles = []
    for _, prompt in requests:
        session = model.session()
        session.feed(prompt)
        singles.append(session)
    batch = seqgen.Session.stack(singles)
    samplers = [Sampler(Sampling(**options)) for options, _ in requests]
    for _ in range(30):
        batch.sample(samplers)
    for row, (options, prompt) in enumerate(requests):
        assert batch.text[row] == prompt + model.generate(prompt, 30, **options)
    with pytest.raises(seqgen.SeqgenError, match="one per row"):
        batch.sample(samplers[:2])


# -- one rule for every option (issue 10) ------------------------------------------------------------


@pytest.mark.parametrize(("name", "value"), [
    ("temperature", None), ("temperature", 10**400), ("temperature", True), ("temperature", "1"),
    ("top_k", True), ("top_k", 2.0), ("top_k", np.float64(2)), ("top_p", "0.5"), ("top_p", 10**400),
    ("min_p", False), ("repetition_penalty", None), ("repetition_penalty", 10**400),
    ("seed", -1), ("seed", 1.5), ("seed", True), ("seed", 2**64), ("seed", "7"),
    ("stop", 5), ("stop", [b"x"]), ("stop", ["ok", None]), ("stop", ["x" * 1001]), ("stop", ["x"] * 65),
])
def test_bad_option_types_are_one_seqgen_error(model: seqgen.Model, name: str, value: object) -> None:
    word = "stop strings" if name == "stop" else name
    for call in (lambda: Sampling(**{name: value}), lambda: model.generate("a", 3, **{name: value}),
                 lambda: model.generate_batch(["a", "b"], 3, **{name: value})):
        with pytest.raises(seqgen.SeqgenError, match=word):
            call()


def test_numpy_numbers_are_accepted_and_normalised(model: seqgen.Model) -> None:
    numpy_kind = Sampling(temperature=np.float32(0.5), top_k=np.int64(3), top_p=np.float64(0.9), seed=np.uint64(4))
    assert numpy_kind == Sampling(temperature=0.5, top_k=3, top_p=0.9, seed=4)
    assert type(numpy_kind.top_k) is int and type(numpy_kind.seed) is int
    assert model.generate("a", 20, top_k=np.int64(3), seed=np.int32(4)) == model.generate("a", 20, top_k=3, seed=4)


def test_cli_seed_and_stop_follow_the_same_rule(tiny_model: Path) -> None:
    assert_input_error(run("generate", "a", "--seed", -5, "--model", tiny_model), "seed")
    assert_input_error(run("generate", "a", "--seed", 2**64, "--num-samples", 2, "--model", tiny_model), "seed")
    assert_input_error(run("generate", "a", "--stop", "x\udcff", "--model", tiny_model), "--stop", "UTF-8")


@pytest.mark.parametrize(("logits", "history", "words"), [
    (np.zeros(5, np.float32), None, "float array [batch, vocab]"),
    (np.full((1, 5), np.nan, np.float32), None, "NaN or inf"),
    (np.full((1, 5), -np.inf, np.float32), None, "no finite value"),
    (np.zeros((1, 5), np.float32), np.array([[99]]), "history must be token ids"),
    (np.zeros((1, 5), np.float32), np.array([[-1]]), "history must be token ids"),
])
def test_sampler_on_bare_logits_refuses_what_it_cannot_sample(logits: np.ndarray, history: np.ndarray | None,
                                                             words: str) -> None:
    with pytest.raises(SeqgenError, match=re.escape(words)):
        Sampler(Sampling(repetition_penalty=1.2 if history is not None else 1.0, seed=0))(logits, history)
