"""Issue 10, runtime half: bounded resources, values checked before anything changes, and the CLI's
contract when things go wrong (each test reproduces one report of the issue)."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_input_error, run, seqgen_run

import seqgen
from seqgen import checks
from seqgen import model as model_module
from seqgen.checks import MAX_BATCH
from seqgen.model import SCORE_TOKENS, usable_cpus
from seqgen.session import Session
from seqgen.vocab import IGNORE, frame_items

# -- resources ---------------------------------------------------------------------------------------


def test_threads_above_the_usable_cpus_are_refused_naming_the_limit(tiny_model: Path) -> None:
    limit = usable_cpus()
    with pytest.raises(seqgen.SeqgenError, match=rf"threads .* in \[1, {limit}\], got {limit + 1}"):
        seqgen.load(tiny_model, threads=limit + 1)
    assert_input_error(run("predict", "a", "--model", tiny_model, "--threads", 100_000), f"[1, {limit}]", "100000")
    assert seqgen.load(tiny_model, threads=np.int64(1)).predict("a", 1)
    for value in (True, None, 1.0, "1"):
        with pytest.raises(seqgen.SeqgenError, match="threads"):
            seqgen.load(tiny_model, threads=value)  # type: ignore[arg-type]


def test_counts_are_bounded_and_the_bound_is_named(tiny_model: Path) -> None:
    assert_input_error(run("generate", "--model", tiny_model, "--num-samples", 100_000_000), str(MAX_BATCH))
    assert_input_error(run("bench", "--model", tiny_model, "--batch", 10**6), str(MAX_BATCH))
    assert f"1..{MAX_BATCH}" in run("generate", "--help").stdout
    model = seqgen.load(tiny_model)
    with pytest.raises(seqgen.SeqgenError, match=rf"batch_size must be an integer in \[1, {MAX_BATCH}\]"):
        model.session(MAX_BATCH + 1)
    with pytest.raises(seqgen.SeqgenError, match=f"at most {MAX_BATCH} texts"):
        model.predict_batch(["a"] * (MAX_BATCH + 1))
    with pytest.raises(seqgen.SeqgenError, match=f"at most {MAX_BATCH} sequences"):
        Session.stack([model.session()] * (MAX_BATCH + 1))


@pytest.mark.parametrize("value", [True, None, 2.0, "2"])
def test_counts_of_the_python_api_follow_the_one_rule(model: seqgen.Model, value: object) -> None:
    for call in (lambda: model.predict("a", value), lambda: model.session(value)):  # type: ignore[arg-type]
        with pytest.raises(seqgen.SeqgenError, match="must be an integer"):
            call()


def test_numpy_integers_are_counts_too(model: seqgen.Model) -> None:
    assert len(model.predict("a", np.int64(2))) == 2
    assert model.session(np.uint8(2)).batch_size == 2


@pytest.fixture()
def model(tiny_model: Path) -> seqgen.Model:
    return seqgen.load(tiny_model)


def test_scoring_line_items_holds_the_batch_characters_not_count_times_longest(
        tiny_models: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """255 names and one 5,000-character line asked onnxruntime for items x longest positions at once
    (5.2 GB with the names model). Now every call stays within SCORE_TOKENS padded positions (a line
    longer than that goes alone), and the scores are those of the padded batches: exactly for the short
    items, and to float32 rounding for the long line, which now runs in a smaller batch (onnxruntime's
    kernels for few rows and for many may round differently)."""
    model = seqgen.load(tiny_models["lines"])
    rng = np.random.default_rng(0)
    chars = "".join(model.vocab.chars)
    items = ["".join(rng.choice(list(chars), size=int(rng.integers(1, 9)))) for _ in range(255)]
    items.insert(100, "".join(rng.choice(list(chars), size=5_000)))
    shapes = []
    run_graph = Session._run
    monkeypatch.setattr(Session, "_run", lambda self, tokens: shapes.append(tokens.shape) or run_graph(self, tokens))
    score = model.score("\n".join(items))
    assert max(rows * width for rows, width in shapes) <= SCORE_TOKENS  # was 256 x 5,001
    before = _padded_scores(model, items)
    short = len("".join(items[:100])) + 100  # the items before the long line, with their ends
    assert np.array_equal(score.logprobs[:short], before[:short])
    assert np.allclose(score.logprobs, before, rtol=0, atol=1e-5)
    del items[100]
    assert np.array_equal(model.score("\n".join(items)).logprobs, _padded_scores(model, items))


def _padded_scores(model: seqgen.Model, items: list[str]) -> np.ndarray:
    """The scores as seqgen computed them before issue 10: batches of SCORE_BATCH items in their order,
    each padded to its longest item."""
    parts = []
    for start in range(0, len(items), model_module.SCORE_BATCH):
        inputs, targets = frame_items([model.vocab.encode(item) for item in items[start : start + 256]])
        logits = np.concatenate(list(model.session(len(inputs)).chunk_logits(inputs[:, 1:])), axis=1)
        mask = targets != IGNORE
        parts.append(model_module._score_rows(logits[mask], targets[mask])[0])
    return np.concatenate(parts)


def test_a_fifo_or_device_as_the_model_is_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "model.onnx"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/zero")):
        result = subprocess.run([*seqgen_run(), "info", "--model", str(path)], capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 2, result.stderr
        assert "is not a regular file" in result.stderr and result.stdout == ""


# -- paths whose existence cannot be checked -----------------------------------------------------------


def test_a_model_path_that_cannot_be_checked_is_a_clear_input_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model: Path) -> None:
    assert_input_error(run("info", "--model", tmp_path / ("x" * 300 + ".onnx")), "File name too long")
    odd = os.fsdecode(bytes(tmp_path) + b"/\xff.onnx")
    assert_input_error(run("info", "--model", odd), "does not exist", "\\udcff")
    locked = tmp_path / "locked" / "model.onnx"
    real_stat = os.stat

    def denied(path: object, *args: object, **kwargs: object) -> os.stat_result:
        if str(path) == str(locked):  # as in a folder without permission (the tests may run as root)
            raise PermissionError(13, "Permission denied", str(path))
        return real_stat(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "stat", denied)
    assert_input_error(run("info", "--model", locked), "cannot check model path", "Permission denied")
    with pytest.raises(seqgen.SeqgenError, match="Permission denied"):
        seqgen.load(locked)


# -- sessions change nothing when refusing -----------------------------------------------------------


def _bad_states(saved: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    state = saved["state"]
    return {
        "strings": {**saved, "state": state.astype(str)},
        "complex": {**saved, "state": state.astype(complex)},
        "wrong shape": {**saved, "state": state[:, :, :-1]},
        "NaN": {**saved, "state": np.full_like(state, np.nan)},
        "inf": {**saved, "cell": np.full_like(state, np.inf)},
        "too large for float32": {**saved, "state": np.full(state.shape, 1e300)},
        "NaN logits": {**saved, "logits": np.full_like(saved["logits"], np.nan)},
        "tokens out of range": {**saved, "tokens": saved["tokens"] + 1000},
    }


@pytest.mark.parametrize("kind", ["strings", "complex", "wrong shape", "NaN", "inf", "too large for float32",
                                  "NaN logits", "tokens out of range"])
def test_load_state_refuses_bad_arrays_before_overwriting_anything(model: seqgen.Model, kind: str) -> None:
    session = model.session()
    session.feed("the qu")
    before = session.save_state()
    with pytest.raises(seqgen.SeqgenError, match="saved state"):
        session.load_state(_bad_states(model.session().save_state())[kind])
    after = session.save_state()
    assert all(np.array_equal(before[name], after[name]) for name in before)
    session.feed("ick")
    reference = model.session()
    reference.feed("the quick")
    assert np.array_equal(session.distribution(), reference.distribution())


@pytest.mark.parametrize("ids", [np.array([-1]), [999], np.array([1.5]), np.array(["a"]), np.array([1, 2]),
                                 np.array([2**63], np.uint64)])
def test_step_and_feed_refuse_bad_ids_before_changing_the_session(model: seqgen.Model, ids: object) -> None:
    session = model.session()
    session.feed("the")
    with pytest.raises(seqgen.SeqgenError, match="token id"):
        session.step(ids)  # type: ignore[arg-type]
    if np.asarray(ids).shape == (1,):
        with pytest.raises(seqgen.SeqgenError, match="token id"):
            session.feed_tokens(np.asarray(ids)[None])
    assert session.text == ["the"]
    session.feed(" quick")
    assert session.text == ["the quick"]


# -- the command line's contract ---------------------------------------------------------------------


def test_an_error_mid_stream_keeps_what_was_printed_and_says_why_on_stderr() -> None:
    """The alphabet model (a ReLU RNN) overflows after ~130 characters: the text already streamed stays on
    stdout (documented), then one Error line on stderr and exit code 2."""
    result = run("generate", "abc", "--model", "alphabet", "-n", 1000, "--temperature", 0)
    assert result.exit_code == 2
    assert len(result.stdout) > 50 and set(result.stdout) <= set("abcdefghij")
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("Error: the model's outputs overflowed")


def test_the_prompt_and_known_cannot_both_read_stdin(tiny_model: Path) -> None:
    assert_input_error(run("generate", "-", "--known", "-", "--model", tiny_model, stdin="the"),
                       "cannot both read standard input")


def test_line_items_all_skipped_leave_nothing_to_score(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    text = tmp_path / "items.txt"
    text.write_text("XYZ\nQQ\n\n")
    assert_input_error(run("score", text, "--model", tiny_models["lines"], "--unknown", "skip"), "nothing to score")
    with pytest.raises(seqgen.SeqgenError, match="nothing to score"):
        seqgen.load(tiny_models["lines"]).with_unknown("skip").score("XYZ\nQQ")


def test_with_stderr_closed_the_error_line_never_goes_to_stdout() -> None:
    command = " ".join(map(shlex.quote, seqgen_run())) + " predict a --model /no/such/model.onnx 2>&-"
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stdout == ""


def test_generated_length_is_bounded_per_row_and_per_batch(tiny_model: Path) -> None:
    model = seqgen.load(tiny_model)
    limit = checks.MAX_NEW_CHARS
    with pytest.raises(seqgen.SeqgenError, match=f"max_new_chars must be an integer in \\[0, {limit}\\]"):
        model.generate("the", checks.MAX_NEW_CHARS + 1)
    rows = checks.MAX_BATCH_CHARS // checks.MAX_NEW_CHARS + 1
    with pytest.raises(seqgen.SeqgenError, match="make fewer samples or shorter ones"):
        model.generate_batch(["the"] * rows, checks.MAX_NEW_CHARS)
    result = run("generate", "the", "--model", tiny_model, "-n", checks.MAX_NEW_CHARS, "--num-samples", rows)
    assert_input_error(result, "make fewer samples")


@pytest.mark.parametrize("value", [None, 5, b"the"])
def test_texts_that_are_not_str_are_one_clear_error(tiny_model: Path, tiny_models: dict[str, Path],
                                                    value: object) -> None:
    model, items = seqgen.load(tiny_model), seqgen.load(tiny_models["lines"])
    for call in (lambda: model.generate(value, 3), lambda: model.predict(value), lambda: model.score(value),
                 lambda: items.score(value), lambda: model.session().feed(value),
                 lambda: model.generate_batch([value], 3), lambda: next(model.stream(value, 3))):
        with pytest.raises(seqgen.SeqgenError, match="must be a str, got"):
            call()


@pytest.mark.parametrize(("path", "verify"), [(5, True), (b"names", True), ("alphabet", "no")])
def test_load_refuses_a_model_that_is_not_a_path_and_a_verify_that_is_not_a_bool(path: object,
                                                                                 verify: object) -> None:
    with pytest.raises(seqgen.SeqgenError, match=r"model is a path|verify must be True or False"):
        seqgen.load(path, verify=verify)


def test_an_empty_model_name_is_named_as_such() -> None:
    assert_input_error(run("predict", "a", "--model", ""), "model name is empty")
    with pytest.raises(seqgen.SeqgenError, match="model name is empty"):
        seqgen.load("  ")
