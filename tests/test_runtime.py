"""The runtime API: predict, generate, stream, batches, score, sessions, sampling, threads."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

import seqgen
from seqgen.sampling import Sampler, Sampling


@pytest.fixture(scope="module")
def model(tiny_models: dict[str, Path]) -> seqgen.Model:
    return seqgen.load(tiny_models["lstm"])


def test_predict_returns_k_sorted_probabilities(model: seqgen.Model) -> None:
    top = model.predict("hello wor", k=5)
    assert len(top) == 5
    probs = [p for _, p in top]
    assert probs == sorted(probs, reverse=True)
    assert all(c in model.vocab.chars for c, _ in top)
    full = model.predict("hello wor", k=1000)  # clamped to the characters (the boundary is never next)
    assert len(full) == model.vocab.size - 1
    assert math.isclose(sum(p for _, p in full), 1.0, rel_tol=1e-5)


def test_predict_batch_matches_single(model: seqgen.Model) -> None:
    texts = ["hello", "the quick", "", "z"]
    batch = model.predict_batch(texts, k=3)
    for text, row in zip(texts, batch):
        single = model.predict(text, k=3)
        assert [c for c, _ in row] == [c for c, _ in single]
        assert np.allclose([p for _, p in row], [p for _, p in single], atol=1e-6)


def test_generate_is_deterministic_with_a_seed(model: seqgen.Model) -> None:
    a = model.generate("the ", 50, temperature=0.9, top_k=10, seed=3)
    b = model.generate("the ", 50, temperature=0.9, top_k=10, seed=3)
    c = model.generate("the ", 50, temperature=0.9, top_k=10, seed=4)
    assert a == b and len(a) == 50
    assert a != c
    assert set(a) <= set(model.vocab.chars)


def test_greedy_equals_argmax_of_predict(model: seqgen.Model) -> None:
    text = model.generate("he", 5, temperature=0)
    context = "he"
    for char in text:
        assert model.predict(context, k=1)[0][0] == char
        context += char


def test_stream_yields_what_generate_returns(model: seqgen.Model) -> None:
    pieces = list(model.stream("a", 30, seed=5))
    assert all(pieces) and "".join(pieces) == model.generate("a", 30, seed=5)


def test_stop_strings_end_generation_and_are_not_emitted(model: seqgen.Model) -> None:
    free = model.generate("", 300, temperature=0, stop=None)
    stop = free[10:12]
    cut = model.generate("", 300, temperature=0, stop=[stop, "never-there"])
    assert cut == free[: free.index(stop)]
    with pytest.raises(seqgen.SeqgenError, match="stop"):
        model.generate("", 5, stop="")


def test_generate_batch_rows_match_single_generation(model: seqgen.Model) -> None:
    prompts = ["the", "a quick", "the"]
    batch = model.generate_batch(prompts, 20, temperature=0)
    assert batch == [model.generate(p, 20, temperature=0) for p in prompts]


def test_line_model_stops_at_end_of_item(tiny_models: dict[str, Path]) -> None:
    lines = seqgen.load(tiny_models["lines"])
    outs = lines.generate_batch([""] * 40, 500, seed=0)
    assert all("\n" not in o for o in outs)
    assert any(len(o) < 500 for o in outs)  # an untrained model still ends some items
    ends = [c for c, _ in lines.predict("ann", k=lines.vocab.size)]
    assert "" in ends  # the end of the item is a possible prediction


def test_each_new_character_costs_one_step_whatever_the_context(model: seqgen.Model) -> None:
    for prompt in ("", "a" * 10, "the quick " * 200):
        session = model.session()
        session.feed(prompt)
        before = session.steps
        assert before == 1  # the whole prompt in one call
        sampler = Sampler(Sampling(temperature=0.8, top_k=5), 0)
        for _ in range(25):
            session.sample(sampler)
        assert session.steps - before == 25


@pytest.mark.parametrize("cell", ["lstm", "rnn_relu"])
def test_the_graph_runs_what_a_session_runs_and_names_its_state_by_input(tiny_models: dict[str, Path],
                                                                         cell: str) -> None:
    """Graph.run from zero_state gives a fresh session's logits, and hands back each state under its input
    name, so feeding it again continues the text exactly as the session's bound single-token step does."""
    model = seqgen.load(tiny_models[cell])
    graph = model.graph
    assert (graph.layers, graph.hidden_size, graph.vocab_size) == (model.file.layers, model.file.hidden_size,
                                                                   model.vocab.size)
    assert graph.state_names == (("state", "cell") if cell == "lstm" else ("state",))
    assert graph.bounded == (cell != "rnn_relu") and graph.path == model.path
    ids = np.concatenate([[seqgen.BOUNDARY], model.vocab.encode("the quick")])[None]
    state = graph.zero_state(3)
    assert {name: (a.shape, a.dtype, a.any()) for name, a in state.items()} == {
        name: ((graph.layers, 3, graph.hidden_size), np.float32, False) for name in graph.state_names}
    logits, state = graph.run(ids[:, :-1], graph.zero_state(1))
    assert list(state) == list(graph.state_names) and logits.shape == (1, ids.shape[1] - 1, graph.vocab_size)
    after, _ = graph.run(ids[:, -1:], state)
    session = model.session()
    session.feed("the quic")
    np.testing.assert_allclose(session.logits(), logits[:, -1], atol=1e-6)
    session.step(ids[:, -1])  # the bound path
    np.testing.assert_allclose(session.logits(), after[:, -1], atol=1e-6)
    assert not np.allclose(logits[:, -1], after[:, -1])


def test_save_and_load_state_continue_exactly(model: seqgen.Model) -> None:
    session = model.session()
    session.feed("the quick ")
    saved = session.save_state()
    expected = [session.sample(Sampler(Sampling(temperature=0)))[0] for _ in range(10)]
    resumed = model.session()
    resumed.load_state({k: v.copy() for k, v in saved.items()})
    assert [resumed.sample(Sampler(Sampling(temperature=0)))[0] for _ in range(10)] == expected
    assert resumed.text == session.text
    with pytest.raises(seqgen.SeqgenError, match="saved state"):
        model.session(2).load_state(saved)


def test_score_matches_predictions(model: seqgen.Model) -> None:
    text = "the lazy dog"
    score = model.score(text)
    assert score.tokens == len(text)
    context, expected = "", []
    for char in text:
        dist = dict(model.predict(context, k=1000))
        # predict masks the boundary for running text; score keeps the raw distribution
        expected.append(math.log(dist[char]))
        context += char
    assert np.allclose(score.logprobs, expected, atol=0.05)
    assert math.isclose(score.bits_per_char, score.loss / math.log(2))
    assert math.isclose(score.perplexity, math.exp(score.loss))


def test_score_long_text_in_chunks_equals_one_pass(model: seqgen.Model, monkeypatch: pytest.MonkeyPatch) -> None:
    text = "the quick brown fox " * 60
    whole = model.score(text).logprobs
    monkeypatch.setattr("seqgen.session.MAX_CHUNK", 50)
    chunked = model.score(text).logprobs
    assert np.allclose(whole, chunked, atol=1e-5)


def test_line_model_score_counts_end_tokens(tiny_models: dict[str, Path]) -> None:
    lines = seqgen.load(tiny_models["lines"])
    score = lines.score("anna\nbob\n\ncarl\n")
    assert score.tokens == len("anna") + len("bob") + len("carl") + 3


def test_onnxruntime_runs_one_thread_by_default_and_prepacks_only_int8_weights(
        model: seqgen.Model, tiny_models: dict[str, Path]) -> None:
    """One intra-op thread unless asked (a busy second core makes two slower); no second, pre-packed copy
    of float weights (~25 MiB at H=512), but packed int8 weights (without them int8 is slower than float)."""
    options = model.graph._ort.get_session_options()
    assert options.intra_op_num_threads == 1
    assert options.get_session_config_entry("session.disable_prepacking") == "1"
    assert seqgen.load(tiny_models["lstm"], threads=2).graph._ort.get_session_options().intra_op_num_threads == 2
    int8 = seqgen.load("names-int8").graph._ort.get_session_options()
    with pytest.raises(RuntimeError, match="disable_prepacking"):  # int8 kernels need the packed weights
        int8.get_session_config_entry("session.disable_prepacking")


def test_an_overflowing_relu_state_is_an_error_not_garbage() -> None:
    """The shipped alphabet model (a ReLU RNN trained on 5-character windows) overflows its state after
    about 130 greedy characters; what comes after would be chosen from inf/NaN."""
    model = seqgen.load("alphabet")
    assert model.generate("abc", 100, temperature=0)  # well within: fine
    with pytest.raises(seqgen.SeqgenError, match="overflowed to inf/NaN after"):
        model.generate("abc", 1000, temperature=0)
    with pytest.raises(seqgen.SeqgenError, match="overflowed"):
        model.score("abcdefghij" * 100)


def test_sampling_filters_cut_the_distribution() -> None:
    rng = np.random.default_rng(0)
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]], np.float32))
    draws = lambda **kw: {int(Sampler(Sampling(**kw), rng)(logits.copy())[0]) for _ in range(400)}  # noqa: E731
    assert draws(top_k=2) == {0, 1}
    assert draws(top_p=0.7) == {0, 1}
    assert draws(min_p=0.5) == {0, 1}
    assert draws(temperature=0) == {0}
    assert draws() == {0, 1, 2, 3}


def test_repetition_penalty_lowers_recent_tokens(model: seqgen.Model) -> None:
    session = model.session()
    session.feed("aaaaaaaa")
    plain = session.logits()
    from seqgen.sampling import penalize

    penalized = plain.copy()
    penalize(penalized, session.tokens[:, -64:], 2.0)
    a = model.vocab.encode("a")[0]
    assert penalized[0, a] < plain[0, a]
    others = [i for i in range(model.vocab.size) if i not in set(session.tokens[0].tolist())]
    assert np.array_equal(penalized[0, others], plain[0, others])


def test_info_and_path(model: seqgen.Model) -> None:
    assert model.path.name == "lstm.onnx"
    assert model.info["cell"] == "lstm" and model.info["format_version"] == "1"
    assert model.info["vocabulary"] == "".join(model.vocab.chars)


def test_line_model_scores_crlf_text_like_lf_text(tiny_models: dict[str, Path]) -> None:
    lines = seqgen.load(tiny_models["lines"])
    assert lines.score("anna\r\nbob\r\n").loss == lines.score("anna\nbob\n").loss


def test_repetition_penalty_never_touches_the_end_of_an_item() -> None:
    from seqgen.sampling import penalize

    logits = np.array([[2.0, 1.0, -1.0, 0.5]], np.float32)
    penalize(logits, np.array([[0, 1, 2, 0]]), 2.0)
    assert logits.tolist() == [[2.0, 0.5, -2.0, 0.5]]


def test_bad_token_ids_and_bad_state_are_refused_at_once(model: seqgen.Model) -> None:
    session = model.session()
    for bad in ([[-1]], [[model.vocab.size]]):
        with pytest.raises(seqgen.SeqgenError, match="token ids"):
            session.chunk_logits(np.array(bad))  # refused before anything runs, not when iterated
    assert session.steps == 0 and session.tokens.size == 0
    saved = session.save_state()
    for tokens in (None, "abc", np.array([[0.5]])):
        with pytest.raises(seqgen.SeqgenError, match="tokens"):
            session.load_state({**saved, "tokens": tokens})
    with pytest.raises(seqgen.SeqgenError, match="stack"):
        seqgen.Session.stack([])
    with pytest.raises(seqgen.SeqgenError, match="stack"):
        seqgen.Session.stack([model.session(2)])
