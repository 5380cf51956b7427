"""seqgen-train's commands end to end: the seed notebook's presets answered through seqgen-run, int8
export, held-out evaluation and loss plots."""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import seqgen
from seqgen.errors import SeqgenError
from seqgen.train import TrainConfig, fit_texts, train
from seqgen.train.cli import main as train_cli
from seqgen.train.config import parse_duration
from seqgen.train.heldout import held_out_text
from seqgen.train.quantize import quantize_int8

torch.set_num_threads(1)

BIN = Path(sys.executable).parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def seqgen_run(*args: str) -> list[dict[str, object]]:
    """`seqgen-run predict ... --json` in its own process (the runtime CLI users call)."""
    done = subprocess.run([str(BIN / "seqgen-run"), "predict", *args, "--json"], capture_output=True, text=True,
                          env=ENV, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def fit(*args: str) -> dict[str, object]:
    result = CliRunner().invoke(train_cli, ["fit", *args, "--no-progress", "--threads", "1"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_version_is_in_clicks_form_as_seqgen_run_prints_it() -> None:
    result = CliRunner().invoke(train_cli, ["--version"])
    assert result.exit_code == 0 and result.stdout == f"seqgen-train, version {seqgen.__version__}\n"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(2)
    words = ["rain", "falls", "on", "the", "plain", "in", "spain", "mainly", "and", "snow", "on", "hills"]
    path = tmp_path_factory.mktemp("corpus") / "spain.txt"
    path.write_text(" ".join(str(w) for w in rng.choice(words, size=600)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def lstm_run(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "lstm"
    train(TrainConfig(corpus=[str(corpus)], out=str(out), cell="lstm", layers=1, hidden=64, embedding=8,
                      seq_len=32, batch_size=8, lr=1e-2, warmup_steps=5, max_steps=40, eval_every=10, samples=0,
                      progress=False, device="cpu", threads=1))
    return out


# -- the seed notebook ----------------------------------------------------------------------------


def test_alphabet_seq2seq_preset_reaches_full_accuracy_and_continues_the_alphabet(tmp_path: Path) -> None:
    out = tmp_path / "alphabet"
    report = fit("--preset", "alphabet-seq2seq", "--out", str(out))
    assert report["train_accuracy"] == 1.0 and report["best_val_accuracy"] == 1.0
    model = out / "model.onnx"
    info = seqgen.load(model).info
    assert info["cell"] == "rnn_relu" and info["hidden_size"] == 64 and info["embedding_size"] == 8
    assert info["corpus"] == "preset:alphabet-seq2seq"
    for prompt, expected in (("cde", "f"), ("def", "g"), ("efg", "h"), ("abcd", "e")):
        ranked = seqgen_run("--model", str(model), prompt, "-k", "3")
        assert ranked[0]["char"] == expected, (prompt, ranked)
        assert ranked[0]["prob"] > 0.5


def test_alphabet_next_preset_predicts_the_third_letter_from_two(tmp_path: Path) -> None:
    out = tmp_path / "next"
    report = fit("--preset", "alphabet-next", "--out", str(out))
    assert report["train_accuracy"] == 1.0
    model = seqgen.load(out / "model.onnx")
    assert "".join(model.vocab.chars) == "cdefghbiaj"  # Keras' frequency order, ties by first appearance
    for first, second, third in ("abc", "bcd", "cde", "def", "efg", "fgh", "ghi", "hij"):
        assert model.predict(first + second, 1)[0][0] == third
    for prompt, expected in (("ab", "c"), ("cd", "e")):
        assert seqgen_run("--model", str(out / "model.onnx"), prompt)[0]["char"] == expected


def test_preset_options_can_be_overridden(tmp_path: Path) -> None:
    report = fit("--preset", "alphabet-next", "--out", str(tmp_path / "short"), "--epochs", "3")
    assert report["steps"] == 3 and report["stopped"] == "epochs"


def test_a_preset_with_corpus_files_is_refused(corpus: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(train_cli, ["fit", str(corpus), "--preset", "alphabet-next", "--out",
                                            str(tmp_path / "run")])
    assert result.exit_code == 2 and "--preset" in result.stderr and len(result.stderr.splitlines()) == 1
    none = CliRunner().invoke(train_cli, ["fit", "--out", str(tmp_path / "run")])
    assert none.exit_code == 2 and "no corpus given" in none.stderr


def test_val_fraction_is_refused_where_it_would_be_ignored(corpus: Path, tmp_path: Path) -> None:
    """Line items and presets have their own held-out sets: a --val-fraction there is an error, not a no-op."""
    for extra in (["--lines", str(corpus)], ["--preset", "alphabet-next"]):
        result = CliRunner().invoke(train_cli, ["fit", *extra, "--val-fraction", "0.2", "--out", str(tmp_path / "r")])
        assert result.exit_code == 2 and "--val-fraction splits running text only" in result.stderr, result.output
        assert not (tmp_path / "r").exists()


def test_seq_len_is_refused_where_it_would_be_ignored(corpus: Path, tmp_path: Path) -> None:
    """Line items and presets are framed by their own lengths: --seq-len there was accepted and did nothing."""
    for extra in (["--lines", str(corpus)], ["--preset", "alphabet-next"]):
        result = CliRunner().invoke(train_cli, ["fit", *extra, "--seq-len", "64", "--out", str(tmp_path / "r")])
        assert result.exit_code == 2 and "--seq-len" in result.stderr, result.output
        assert len(result.stderr.splitlines()) == 1 and not (tmp_path / "r").exists()
    with pytest.raises(SeqgenError, match="--seq-len"):
        fit_texts(["anna", "bob"], tmp_path / "r", seq_len=64)


def test_dropout_with_one_layer_is_a_usage_error(corpus: Path, tmp_path: Path) -> None:
    out = tmp_path / "r"
    result = CliRunner().invoke(train_cli, ["fit", str(corpus), "--layers", "1", "--dropout", "0.5", "--out", str(out)])
    assert result.exit_code == 2 and "--output-dropout" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not out.exists()


@pytest.mark.parametrize("sizes", [["--hidden", "65536", "--layers", "64"], ["--layers", "64", "--hidden", "8192"]])
def test_a_model_too_large_to_allocate_is_refused_before_torch_tries(corpus: Path, tmp_path: Path,
                                                                      sizes: list[str]) -> None:
    """Each size is within its own limit, but together they asked torch for 68 GB (exit 1, or the machine's
    memory filled): the parameter count is checked first, in one line."""
    out = tmp_path / "r"
    result = CliRunner().invoke(train_cli, ["fit", str(corpus), *sizes, "--max-steps", "1", "--out", str(out)])
    assert result.exit_code == 2 and "parameters" in result.stderr and sizes[0] in result.stderr, result.output
    assert len(result.stderr.splitlines()) == 1 and not (out / "model.onnx").exists()


@pytest.mark.parametrize(("text", "seconds"), [("90", 90), ("90s", 90), ("3m", 180), ("1h30m", 5400), ("2.5h", 9000)])
def test_time_budget_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "0", "3x", "m"])
def test_bad_time_budget_is_a_usage_error(text: str) -> None:
    with pytest.raises(SeqgenError):
        parse_duration(text)
    result = CliRunner().invoke(train_cli, ["fit", "--preset", "alphabet-next", "--time-budget", text])
    assert result.exit_code == 2 and "--time-budget" in result.stderr


# -- export ---------------------------------------------------------------------------------------


def test_int8_export_is_smaller_loads_in_the_runtime_and_reports_agreement(lstm_run: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    plain = runner.invoke(train_cli, ["export", str(lstm_run), "--out", str(tmp_path / "float.onnx")])
    assert plain.exit_code == 0, plain.output
    assert json.loads(plain.stdout)["quantization"] == "none"
    result = runner.invoke(train_cli, ["export", str(lstm_run), "--out", str(tmp_path / "int8.onnx"),
                                       "--quantize", "int8"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    float_size, int8_size = (tmp_path / "float.onnx").stat().st_size, (tmp_path / "int8.onnx").stat().st_size
    assert int8_size < 0.6 * float_size  # the LSTM's weights are stored as int8
    assert report["model"] == str(tmp_path / "int8.onnx") and report["bytes"] == report["int8_bytes"] == int8_size
    assert report["float_bytes"] == float_size
    assert report["size_ratio"] == round(int8_size / float_size, 3)
    assert 0.9 <= report["top1_agreement"] <= 1.0 and report["top1_positions"] >= 4000

    quantized, reference = seqgen.load(tmp_path / "int8.onnx"), seqgen.load(tmp_path / "float.onnx")
    assert quantized.info["quantization"] == "int8" and reference.info["quantization"] == "none"
    assert quantized.info["best_step"] == reference.info["best_step"]
    assert quantized.predict("the pla", 1)[0][0] == reference.predict("the pla", 1)[0][0]
    assert abs(quantized.score("rain on the plain").loss - reference.score("rain on the plain").loss) < 0.1


def test_int8_export_of_a_run_prints_only_its_report(lstm_run: Path, tmp_path: Path) -> None:
    """onnxruntime.quantization's WARNING:root lines stay out of the user's terminal."""
    done = subprocess.run([str(BIN / "seqgen-train"), "export", str(lstm_run), "--out", str(tmp_path / "q.onnx"),
                           "--quantize", "int8"], capture_output=True, text=True, env=ENV, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    assert json.loads(done.stdout)["quantization"] == "int8"


def test_quantizing_logs_no_warnings_and_leaves_the_root_logger_alone(
        lstm_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    report = quantize_int8(lstm_run / "model.onnx", tmp_path / "q.onnx")
    assert report["int8_bytes"] < report["float_bytes"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert root.level == level and root.handlers == handlers


def test_int8_agreement_of_a_line_item_model_covers_many_items(tmp_path: Path) -> None:
    names = ["anna", "bob", "carl", "dora", "emil", "fred", "gina", "hugo", "ida", "jan"] * 3
    result = fit_texts(names, tmp_path / "names", cell="gru", layers=1, hidden=32, embedding=8, max_steps=20,
                       eval_every=10, samples=0, progress=False, device="cpu", threads=1)
    report = quantize_int8(result.model_path, tmp_path / "q.onnx")
    assert report["top1_positions"] >= 4000  # not just the first sampled item
    assert 0.0 <= report["top1_agreement"] <= 1.0
    assert seqgen.load(tmp_path / "q.onnx").file.line_items


def test_int8_of_a_relu_model_whose_state_overflows_measures_agreement_on_rows_it_can_run(tmp_path: Path) -> None:
    """The shipped alphabet model overflows after ~80 sampled characters: its agreement sample is cut into
    rows short enough, where one 4,000-character sample made the export fail after writing a file."""
    alphabet = seqgen.load("alphabet")
    report = quantize_int8(alphabet.path, tmp_path / "q.onnx")
    assert report["top1_positions"] >= 4000 and 0.0 <= report["top1_agreement"] <= 1.0
    assert seqgen.load(tmp_path / "q.onnx").info["int8_top1_agreement"] == report["top1_agreement"]


def test_int8_of_a_line_item_relu_model_whose_state_overflows_measures_shorter_items(tmp_path: Path) -> None:
    from seqgen.train import CharRNN, export_onnx

    vocab = seqgen.Vocabulary.fit(["anna", "bob", "carl", "dave"])
    net = CharRNN(vocab.size, "rnn_relu", 8, 16, 1)
    with torch.no_grad():  # a growing state and an end token that never comes: items run on until they overflow
        net.rnn.weight_hh_l0.copy_(torch.eye(16) * 3.0)
        net.head.bias.fill_(0.0)
        net.head.bias[0] = -50.0
    export_onnx(net, vocab, tmp_path / "m.onnx", line_items=True)
    with pytest.raises(SeqgenError, match="overflowed"):
        seqgen.load(tmp_path / "m.onnx").generate("", 200, seed=0)
    report = quantize_int8(tmp_path / "m.onnx", tmp_path / "q.onnx")
    assert report["top1_positions"] >= 4000 and seqgen.load(tmp_path / "q.onnx").file.line_items


def test_an_int8_export_that_fails_leaves_no_file(lstm_run: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from seqgen.train import quantize

    def failing(*args: object) -> tuple[float, int]:
        raise seqgen.SeqgenError("agreement failed")

    monkeypatch.setattr(quantize, "top1_agreement", failing)
    with pytest.raises(seqgen.SeqgenError, match="agreement failed"):
        quantize_int8(lstm_run / "model.onnx", tmp_path / "q.onnx")
    assert not (tmp_path / "q.onnx").exists()


def test_export_of_a_folder_that_is_not_a_run_is_one_clear_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(train_cli, ["export", str(tmp_path), "--out", str(tmp_path / "x.onnx")])
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: ") and "best.pt" in result.stderr


# -- eval and plot --------------------------------------------------------------------------------


def test_eval_scores_the_held_out_split_through_the_runtime(lstm_run: Path, corpus: Path) -> None:
    for target in (lstm_run, lstm_run / "model.onnx"):
        result = CliRunner().invoke(train_cli, ["eval", str(target), str(corpus)])
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        tail = held_out_text(corpus.read_text(encoding="utf-8"), line_items=False, val_fraction=0.1)
        expected = seqgen.load(lstm_run / "model.onnx").score(tail)
        assert report["tokens"] == expected.tokens == len(tail)
        assert report["loss"] == round(expected.loss, 4)
        assert report["bits_per_char"] == pytest.approx(report["loss"] / math.log(2), abs=1e-3)
        assert report["accuracy"] == round(expected.accuracy, 4)
        assert 0 < report["accuracy"] <= 1
        assert report["loss"] < math.log(seqgen.load(lstm_run / "model.onnx").vocab.size)


def test_eval_refuses_a_seed_for_running_text(lstm_run: Path, corpus: Path) -> None:
    result = CliRunner().invoke(train_cli, ["eval", str(lstm_run), str(corpus), "--seed", "3"])
    assert result.exit_code == 2 and "drop --seed" in result.stderr and len(result.stderr.splitlines()) == 1


def test_eval_of_a_line_item_model_scores_the_held_out_items(tmp_path: Path) -> None:
    names = [f"{a}{b}" for a in ("an", "bo", "ca", "do") for b in ("na", "ra", "to", "li", "mo")]
    corpus = tmp_path / "names.txt"
    corpus.write_text("\n".join(names) + "\n", encoding="utf-8")
    fit(str(corpus), "--lines", "--out", str(tmp_path / "run"), "--cell", "gru", "--layers", "1", "--hidden", "16",
        "--embedding", "8", "--max-steps", "10", "--eval-every", "5", "--seed", "4", "--samples", "0")
    result = CliRunner().invoke(train_cli, ["eval", str(tmp_path / "run"), str(corpus)])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["line_items"] is True
    held = held_out_text(corpus.read_text(encoding="utf-8"), line_items=True, seed=4).split("\n")
    assert len(held) == 2 and report["tokens"] == sum(len(item) + 1 for item in held)
    refused = CliRunner().invoke(train_cli, ["eval", str(tmp_path / "run"), str(corpus), "--val-fraction", "0.5"])
    assert refused.exit_code == 2 and "--val-fraction splits running text only" in refused.stderr
    for seed in ("-1", str(2**64)):  # -1 reached numpy's generator: internal error, exit 1
        refused = CliRunner().invoke(train_cli, ["eval", str(tmp_path / "run"), str(corpus), "--seed", seed])
        assert refused.exit_code == 2 and "--seed must be an integer" in refused.stderr, refused.output


def test_plot_draws_the_loss_curves_to_a_png(lstm_run: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(train_cli, ["plot", str(lstm_run)])
    assert result.exit_code == 0, result.output
    png = Path(result.stdout.strip())
    assert png == lstm_run / "loss.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    other = CliRunner().invoke(train_cli, ["plot", str(lstm_run), "--out", str(tmp_path / "curves.png")])
    assert other.exit_code == 0 and (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"
    empty = CliRunner().invoke(train_cli, ["plot", str(tmp_path)])
    assert empty.exit_code == 2 and "metrics.jsonl" in empty.stderr


@pytest.mark.parametrize("rank", ["0", "1"])
def test_fit_reports_once_under_torchrun_in_json(rank: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from seqgen.train import loop

    finished = loop.Result(tmp_path, 3, math.inf, 0.0, 0.5, "time budget", 1.0, None)  # no evaluation, no model
    monkeypatch.setattr(loop, "train", lambda config, resume=False, overwrite=False: finished)
    monkeypatch.setenv("RANK", rank)
    result = CliRunner().invoke(train_cli, ["fit", "--preset", "alphabet-next", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    if rank != "0":
        assert result.stdout == ""
        return
    report = json.loads(result.stdout)  # strict JSON: no Infinity, no "None"
    assert report["model"] is None and report["best_val_loss"] is None and report["steps"] == 3


def test_resume_refuses_options_it_would_otherwise_ignore(tmp_path: Path) -> None:
    from seqgen.train.cli import main as train_main

    result = CliRunner().invoke(train_main, ["fit", "--resume", str(tmp_path), "--lr", "0.1", "--seed", "3"])
    assert result.exit_code == 2
    assert "--lr, --seed cannot change" in result.stderr and "Traceback" not in result.output


def test_seqgen_train_help_does_not_wait_for_torch() -> None:
    code = "import sys; from seqgen.train import cli; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout == "False\n"


def test_forget_bias_takes_a_number_or_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from seqgen.train.cli import ForgetBias

    kind = ForgetBias()
    assert kind.convert("1.5", None, None) == 1.5 and kind.convert("Torch", None, None) == "torch"
    refused = CliRunner().invoke(train_cli, ["fit", "--preset", "alphabet-next", "--forget-bias", "nan",
                                             "--out", str(tmp_path / "run")])
    assert refused.exit_code == 2 and "neither a finite number nor 'torch'" in refused.stderr
    chosen = []
    monkeypatch.setattr("seqgen.train.loop.train", lambda config, **_: chosen.append(config) or 1 / 0)
    for flag, expected in (("torch", None), ("2", 2.0)):
        CliRunner().invoke(train_cli, ["fit", "--preset", "alphabet-next", "--cell", "lstm", "--forget-bias", flag])
        assert chosen.pop().forget_bias == expected
    gru = CliRunner().invoke(train_cli, ["fit", "c.txt", "--cell", "gru", "--forget-bias", "5"])
    assert gru.exit_code == 2 and "a gru has none" in gru.stderr and not chosen
    CliRunner().invoke(train_cli, ["fit", "--preset", "alphabet-next"])
    assert chosen.pop().forget_bias == 1.0
    CliRunner().invoke(train_cli, ["fit", "--preset", "alphabet-next", "--cell", "lstm", "--forget-bias", "2"])
    assert chosen.pop().forget_bias == 2.0


def test_export_does_not_import_the_training_loop() -> None:
    """`seqgen-train export` needs the export module alone, not the loop with its optimiser and data plumbing."""
    probe = "import sys; from seqgen.train.cli import export; from seqgen.train.export import export_run; " \
            "print('seqgen.train.loop' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
