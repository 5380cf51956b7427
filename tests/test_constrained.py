"""Constrained generation: every output fully matches its pattern, uses only allowed characters and holds no
banned word (even across the prompt boundary); impossible constraints are refused before generating."""

from __future__ import annotations

import gc
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_input_error, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import seqgen
from seqgen.sampling import Sampler, Sampling

pytest.importorskip("interegular")
ROOT = Path(__file__).resolve().parents[1]
PROPERTY = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
ROWS = 16  # samples per example: each row draws its own text from the seed's stream


@pytest.fixture(scope="module")
def models(tiny_models: dict[str, Path]) -> dict[str, seqgen.Model]:
    return {"text": seqgen.load(tiny_models["gru"]), "lines": seqgen.load(tiny_models["lines"])}


def patterns(chars: str) -> st.SearchStrategy[str]:
    """Small regular expressions over `chars` (and a few characters outside them): literals, classes, dots,
    groups, alternatives and every kind of repeat."""
    literal = st.sampled_from([*chars, "Z", "-"]).map(re.escape)
    ranges = st.sampled_from(["[a-e]", "[^a ]", "[ho]", ".", "[lo]", "\\s", "[A-Z]"])
    atom = st.one_of(literal, ranges)

    def extend(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        repeat = st.tuples(inner, st.sampled_from(["?", "*", "+", "{2}", "{1,3}", "{0,2}", "{2,}"])).map(
            lambda p: f"(?:{p[0]}){p[1]}")
        return st.one_of(repeat, st.lists(inner, min_size=2, max_size=3).map("".join),
                         st.lists(inner, min_size=2, max_size=3).map(lambda parts: "(?:" + "|".join(parts) + ")"))

    return st.recursive(atom, extend, max_leaves=6)


def accepted(text: str, pattern: str) -> bool:
    """Python's own full match, with the ASCII classes the pattern engine reads."""
    return re.fullmatch(pattern, text, re.ASCII) is not None


def sample_rows(model: seqgen.Model, prompts: list[str], length: int, seeds: list[int],
                **options: object) -> list[str]:
    """Each row with its own Sampler and seed, all stepped together (the per-row API a server uses); a row's
    text ends at its end token, and before its first stop string."""
    singles = []
    for prompt in prompts:
        single = model.session()
        single.feed(prompt)
        singles.append(single)
    session = seqgen.Session.stack(singles)
    samplers = [Sampler(Sampling(seed=seed, **options)) for seed in seeds]
    for row, sampler in enumerate(samplers):
        sampler.start(session, length, row=row)
    made: list[list[str]] = [[] for _ in prompts]
    for _ in range(length):
        for chars, token in zip(made, session.sample(samplers).tolist()):
            if not chars or chars[-1] != "":  # "" marks a row that has ended
                chars.append(model.vocab.char(token))
    texts = ["".join(chars) for chars in made]
    stop = options.get("stop")
    return [text[: text.index(stop)] if stop and stop in text else text for text in texts]  # type: ignore[operator]


@pytest.mark.parametrize("kind", ["text", "lines"])
@PROPERTY
@given(data=st.data())
def test_every_output_fully_matches_its_pattern(models: dict[str, seqgen.Model], kind: str,
                                                data: st.DataObject) -> None:
    """ROWS (pattern, seed) pairs an example: 3,840 in all over both models."""
    model = models[kind]
    chars = "".join(model.vocab.chars)
    pattern = data.draw(patterns(chars), label="pattern")
    first = data.draw(st.integers(0, 2**32), label="seed")
    length = data.draw(st.integers(0, 12), label="max_new_chars")
    stop = data.draw(st.one_of(st.none(), st.sampled_from(chars)), label="stop")
    prompts = [""] * (ROWS // 2) + ["ab"] * (ROWS // 2)
    seeds = [first + row for row in range(ROWS)]
    try:
        texts = sample_rows(model, prompts, length, seeds, pattern=pattern, stop=stop)
    except seqgen.SeqgenError as error:  # refused before generating, with its reason
        assert re.search("shortest text|can fully match|every text would be empty", str(error)), error
        need = re.search(r"accept has (\d+) characters", str(error))
        if need is None:
            return
        length = int(need[1])  # the length the refusal names is enough
        texts = sample_rows(model, prompts, length, seeds, pattern=pattern, stop=stop)
    for text in texts:
        assert accepted(text, pattern), (pattern, text)
        assert len(text) <= length and (stop is None or stop not in text)
    assert texts[0] == model.generate(prompts[0], length, pattern=pattern, seed=seeds[0], stop=stop)


@PROPERTY
@given(data=st.data())
def test_allowed_and_banned_hold_across_the_prompt_boundary(models: dict[str, seqgen.Model],
                                                            data: st.DataObject) -> None:
    model = models["text"]
    chars = "".join(model.vocab.chars)
    allowed = data.draw(st.one_of(st.none(), st.text(st.sampled_from(chars), min_size=3, max_size=8)), label="allowed")
    banned = data.draw(st.lists(st.text(st.sampled_from("helo "), min_size=1, max_size=3), max_size=4), label="banned")
    prompt = data.draw(st.text(st.sampled_from("helo "), max_size=4), label="prompt")
    seed = data.draw(st.integers(0, 2**32), label="seed")
    try:
        texts = model.generate_batch([prompt] * ROWS, 15, allowed=allowed, banned=banned, seed=seed)
    except seqgen.SeqgenError as error:
        assert "every text would be empty" in str(error), error
        return
    for text in texts:
        assert allowed is None or set(text) <= set(allowed)
        joined = prompt + text
        for word in banned:  # every occurrence lies wholly inside the prompt
            assert all(i + len(word) <= len(prompt) for i in range(len(joined)) if joined.startswith(word, i))


def test_a_banned_word_never_spans_the_prompt_boundary(models: dict[str, seqgen.Model]) -> None:
    model = models["text"]
    free = [model.generate("h", 3, allowed="eh", seed=seed) for seed in range(40)]
    assert any(text.startswith("e") for text in free)  # without the ban, "he" would be made across the boundary
    for seed in range(40):
        assert "he" not in "h" + model.generate("h", 3, allowed="eh", banned="he", seed=seed)


def test_running_text_ends_where_its_match_cannot_grow(models: dict[str, seqgen.Model]) -> None:
    assert models["text"].generate("x", 50, pattern="hello", seed=1) == "hello"
    assert all(t in ("lo", "hello") for t in models["text"].generate_batch(["a"] * 8, 50, pattern="lo|hello", seed=2))


def test_impossible_constraints_are_refused_before_generating(models: dict[str, seqgen.Model]) -> None:
    model = models["text"]
    for options, words in [
        ({"pattern": "[a-z]{6}"}, "shortest text the constraints accept has 6 characters, but max_new_chars is 5"),
        ({"pattern": "Z+"}, "can fully match the pattern 'Z+'"),
        ({"pattern": "[a-c]+", "allowed": "xyz"}, "allowed"),
        ({"allowed": "Z9"}, "none of the allowed characters"),
        ({"pattern": ""}, "every text would be empty"),
        ({"pattern": "^a"}, "anchors"), ({"pattern": "(a)\\1"}, "backreferences"),
        ({"pattern": "a(?=b)"}, "lookarounds"),
        ({"pattern": "["}, "not a valid regular expression"), ({"pattern": 5}, "pattern must be"),
        ({"allowed": ""}, "allowed must be"), ({"banned": [""]}, "banned words"), ({"banned": 3}, "banned words"),
    ]:
        with pytest.raises(seqgen.SeqgenError, match=re.escape(words)):
            list(model.stream("a", 5, **options))
    session = model.session()
    sampler = Sampler(Sampling(pattern="[a-c]+"))
    session.sample(sampler)
    session.feed("zzz")  # text fed by hand that the pattern refuses
    with pytest.raises(seqgen.SeqgenError, match="breaks the constraints"):
        session.sample(sampler)
    with pytest.raises(seqgen.SeqgenError, match="through Session"):
        sampler(np.zeros((1, model.vocab.size), np.float32))


def test_session_sample_follows_a_constrained_sampler(models: dict[str, seqgen.Model]) -> None:
    session = models["text"].session()
    session.feed("hello ")
    sampler = Sampler(Sampling(pattern="[a-e]+", seed=3))
    for _ in range(30):
        session.sample(sampler)
    assert re.fullmatch("[a-e]+", session.text[0][len("hello "):])


@pytest.mark.parametrize(("row", "length", "says"), [(5, 3, "row"), (-1, 3, "row"), (True, 3, "row"),
                                                   (0, 1.5, "max_new_chars"), (0, -1, "max_new_chars")])
def test_sampler_start_checks_its_row_and_length(models: dict[str, seqgen.Model], row: object, length: object,
                                                 says: str) -> None:
    """(an IndexError, or a misleading "raise max_new_chars" for -1, before)"""
    with pytest.raises(seqgen.SeqgenError, match=says):
        Sampler(Sampling(pattern="a")).start(models["text"].session(2), length, row=row)


@pytest.mark.parametrize("kind", ["text", "lines"])
def test_session_sample_past_the_end_of_a_match_only_ends_again(models: dict[str, seqgen.Model], kind: str) -> None:
    """Sampled on after its text has ended, a constrained sampler gives only the end token (it drew freely
    before: "krig" then "sidat" with the names model and pattern k[a-z]{3})."""
    session = models[kind].session()
    sampler = Sampler(Sampling(pattern="[a-e]{3}", seed=3))
    drawn = [int(session.sample(sampler)[0]) for _ in range(12)]
    assert re.fullmatch("[a-e]{3}", session.text[0]), session.text[0]
    assert drawn[3:] == [0] * 9


def test_kept_mass_is_the_model_probability_of_the_offered_characters(models: dict[str, seqgen.Model],
                                                                       tiny_models: dict[str, Path]) -> None:
    model = models["text"]
    session = model.session()
    session.feed("the ")
    expected = sum(p for c, p in model.predict("the ", k=model.vocab.size) if c in "aeiou")
    sampler = Sampler(Sampling(allowed="aeiou", seed=1), report_kept=True)
    session.sample(sampler)
    assert np.isclose(sampler.kept[0][0], expected, rtol=1e-5)
    result = run("generate", "the ", "-n", 6, "--allowed", "aeiou", "--seed", 1, "--num-samples", 2, "--json",
                 "--model", tiny_models["gru"])
    report = json.loads(result.stdout)
    assert report["samples"] == model.generate_batch(["the "] * 2, 6, allowed="aeiou", seed=1)
    assert [len(k) for k in report["kept"]] == [6, 6] and np.isclose(report["kept"][0][0], expected, rtol=1e-5)
    assert "kept" not in json.loads(run("generate", "-n", 3, "--json", "--model", tiny_models["gru"]).stdout)


def test_cli_flags_constrain_and_refuse(tiny_models: dict[str, Path]) -> None:
    result = run("generate", "a", "-n", 12, "--pattern", "[eh]{2,4}", "--num-samples", 5, "--seed", 4,
                 "--model", tiny_models["gru"])
    assert result.exit_code == 0, result.output
    assert all(re.fullmatch("[eh]{2,4}", text) for text in result.stdout.removesuffix("\n").split("\n\n"))
    assert_input_error(run("generate", "-n", 2, "--pattern", "abc", "--model", tiny_models["gru"]), "max_new_chars")
    assert_input_error(run("generate", "--pattern", "(", "--model", tiny_models["gru"]), "pattern")


def test_without_the_extra_a_pattern_names_it_and_the_rest_works(monkeypatch: pytest.MonkeyPatch,
                                                                 tiny_models: dict[str, Path]) -> None:
    monkeypatch.setitem(sys.modules, "interegular", None)  # as if seqgen[constrain] were not installed
    with pytest.raises(seqgen.SeqgenError, match=re.escape("pip install 'seqgen[constrain]'")):
        Sampling(pattern="a+")
    assert_input_error(run("generate", "--pattern", "a+", "--model", tiny_models["gru"]), "seqgen[constrain]")
    result = run("generate", "h", "-n", 8, "--allowed", "eh", "--ban", "he", "--model", tiny_models["gru"])
    assert result.exit_code == 0 and set(result.stdout.strip()) <= set("eh") and "he" not in "h" + result.stdout


def test_the_names_model_makes_matching_names_as_new_as_prompting_does(shared_data: Path) -> None:
    """Measured (docs/constrained.md): at temperature 1 the names model repeats a training name about 59% of the
    time whether prompted with "k" or held to k[a-z]{3,7}; at 1.2 most of its names are new."""
    path = ROOT / "artifacts" / "names.onnx"
    names_file = shared_data / "names.txt"
    if not path.is_file() or not names_file.is_file():
        pytest.skip(f"needs {path} and {names_file}")
    known = set(names_file.read_text().split())
    model = seqgen.load(path)

    def new(names: list[str]) -> float:
        return sum(name not in known for name in names) / len(names)

    prompted = ["k" + name for name in model.generate_batch(["k"] * 300, 20, seed=0)]
    for temperature in (1.0, 1.2):
        names = model.generate_batch([""] * 300, 20, pattern="k[a-z]{3,7}", seed=0, temperature=temperature)
        assert all(re.fullmatch("k[a-z]{3,7}", name) for name in names)
        assert new(names) > (new(prompted) - 0.1 if temperature == 1.0 else 0.5), (temperature, new(names))


def test_a_pattern_that_explodes_into_states_is_refused_in_bounded_time(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("interegular")
    from seqgen import pattern as pattern_module

    monkeypatch.setattr(pattern_module, "MAX_COMPILE_SECONDS", 0.2)
    started = time.monotonic()
    with pytest.raises(seqgen.SeqgenError, match=r"did not compile to an automaton within 0\.2 s"):
        pattern_module.pattern_table("[ab]*a[ab]{14}", ("a", "b"))
    assert time.monotonic() - started < 5
    assert sys.gettrace() is None or "coverage" in repr(sys.gettrace())  # the hook is taken back
    table, _, _ = pattern_module.pattern_table("k[a-z]{3,7}", tuple("abcdefghijklmnopqrstuvwxyz"))
    assert table.shape[1] == 27


def test_the_compile_time_limit_holds_while_other_code_swallows_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    """A garbage-collector callback (hypothesis installs one) runs inside the compile; a deadline raised there
    was swallowed and switched the limit off, so CI compiled the exploding pattern to the end."""
    pytest.importorskip("interegular")
    from seqgen import pattern as pattern_module

    monkeypatch.setattr(pattern_module, "MAX_COMPILE_SECONDS", 0.2)

    def nothing() -> None:
        pass

    def slow_callback(phase: str, info: object) -> None:  # the deadline passes in here, then a Python call
        time.sleep(0.001)
        nothing()

    gc.callbacks.append(slow_callback)
    threshold = gc.get_threshold()
    gc.set_threshold(1)  # a collection, and so the callback, at nearly every allocation
    try:
        with pytest.raises(seqgen.SeqgenError, match=r"within 0\.2 s"):
            pattern_module.pattern_table("[ab]*a[ab]{14}", ("a", "b"))
    finally:
        gc.callbacks.remove(slow_callback)
        gc.set_threshold(*threshold)


def test_a_long_refused_pattern_is_named_by_its_start_and_length() -> None:
    pattern = "^" + "a" * 9_999
    with pytest.raises(seqgen.SeqgenError) as refused:
        seqgen.Sampling(pattern=pattern)
    message = str(refused.value)
    assert f"'^{'a' * 59}'... (10000 characters) uses anchors" in message and len(message) < 250


def test_stop_strings_the_model_cannot_write_cost_no_automaton_states() -> None:
    """64 stop strings of 1,000 characters that start with a character the model lacks never end a text, so
    they are not compiled (they counted against MAX_CELLS and were refused)."""
    stops = [f"é{i:02}" + "a" * 997 for i in range(64)]  # 64 x 999 distinct prefixes
    assert "é" not in seqgen.load("shakespeare").vocab.chars
    text = seqgen.load("shakespeare").generate("ROMEO:", 20, banned=["zzz"], stop=stops, seed=1)
    assert text == seqgen.load("shakespeare").generate("ROMEO:", 20, banned=["zzz"], seed=1)


def test_distances_are_the_fewest_characters_to_an_accepting_state() -> None:
    """The backward breadth-first search against a direct definition: the shortest accepted walk, found by
    relaxing every transition until nothing changes."""
    from seqgen.constrain import NEVER, _distances

    rng = np.random.default_rng(0)
    for _ in range(300):
        states, width = int(rng.integers(1, 25)), int(rng.integers(1, 5))
        next_ = np.where(rng.random((states, width)) < 0.4, -1, rng.integers(0, states, (states, width)))
        accepting = rng.random(states) < 0.2
        expected = [0 if a else NEVER for a in accepting]
        for _ in range(states):
            for state in range(states):
                for target in next_[state]:
                    if target >= 0 and expected[target] < NEVER:
                        expected[state] = min(expected[state], expected[target] + 1)
        assert _distances(next_.astype(np.int32), accepting).tolist() == expected


def test_a_pattern_that_re_warns_about_prints_no_warning(tiny_model: Path) -> None:
    pytest.importorskip("interegular")
    result = run("generate", "--model", tiny_model, "-n", "5", "--pattern", "[[:alpha:]]+", "--seed", "1")
    assert "FutureWarning" not in result.output and "Traceback" not in result.output


def test_a_stop_string_that_cuts_every_match_short_is_named() -> None:
    pytest.importorskip("interegular")
    names = seqgen.load("names")
    with pytest.raises(seqgen.SeqgenError, match="no stop string cuts every match short"):
        names.generate("", 10, pattern="k[a-z]{3,7}", stop=["k"])
    with pytest.raises(seqgen.SeqgenError, match=r"vocabulary \(seqgen-run info\)$"):
        names.generate("", 10, pattern="K[a-z]{3,7}")
