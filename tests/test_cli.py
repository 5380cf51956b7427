"""seqgen-run: output structure, agreement with the library, options, exit codes and the process's own behaviour.

The tiny models have random weights, so the tests check structure and agreement, never particular characters.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import assert_input_error, run, seqgen_run

import seqgen
from seqgen import cli, modelfile

# -- predict -------------------------------------------------------------------------------------


def test_predict_prints_the_k_most_likely_characters(tiny_model: Path) -> None:
    result = run("predict", "hello wor", "-k", 4, "--model", tiny_model)
    assert result.exit_code == 0, result.output
    expected = seqgen.load(tiny_model).predict("hello wor", 4)
    lines = result.stdout.splitlines()
    assert len(lines) == 4
    for line, (char, prob) in zip(lines, expected):
        label, shown = line.rsplit(maxsplit=1)
        assert label.rstrip() == repr(char)
        assert shown == f"{prob:.4f}"
    assert len({line.rindex(" ") for line in lines}) == 1  # probabilities aligned in one column


def test_predict_json_matches_the_library(tiny_model: Path) -> None:
    result = run("predict", "the ", "--json", "--model", tiny_model)
    assert result.exit_code == 0, result.output
    chars, probs = zip(*seqgen.load(tiny_model).predict("the ", 5))
    items = json.loads(result.stdout)
    assert [item["char"] for item in items] == list(chars)
    assert [item["prob"] for item in items] == pytest.approx(probs)


def test_predict_clamps_k_to_the_vocabulary_and_shows_the_end_of_an_item(tiny_models: dict[str, Path]) -> None:
    size = seqgen.load(tiny_models["lstm"]).vocab.size
    text_lines = run("predict", "a", "-k", 1000, "--model", tiny_models["lstm"]).stdout.splitlines()
    assert len(text_lines) == size - 1  # a running text never ends
    assert not any(line.startswith("<end>") for line in text_lines)

    size = seqgen.load(tiny_models["lines"]).vocab.size
    item_lines = run("predict", "an", "-k", 1000, "--model", tiny_models["lines"]).stdout.splitlines()
    assert len(item_lines) == size
    assert sum(line.startswith("<end> ") for line in item_lines) == 1
    as_json = json.loads(run("predict", "an", "-k", 1000, "--json", "--model", tiny_models["lines"]).stdout)
    assert sum(item["char"] == "" for item in as_json) == 1


def test_predict_reads_stdin_for_dash_without_echos_newline(tiny_model: Path) -> None:
    from_stdin = run("predict", "-", "--json", "--model", tiny_model, stdin="hello\n")
    from_argument = run("predict", "hello", "--json", "--model", tiny_model)
    assert from_stdin.exit_code == 0, from_stdin.output
    assert from_stdin.stdout == from_argument.stdout


def test_predict_rejects_k_below_one(tiny_model: Path) -> None:
    assert_input_error(run("predict", "a", "-k", 0, "--model", tiny_model), "k must be")


# -- generate ------------------------------------------------------------------------------------


def test_generate_streams_what_the_library_generates(tiny_model: Path) -> None:
    result = run("generate", "the ", "-n", 40, "--seed", 7, "--model", tiny_model)
    assert result.exit_code == 0, result.output
    assert result.stdout == seqgen.load(tiny_model).generate("the ", 40, seed=7) + "\n"
    assert run("generate", "the ", "-n", 40, "--seed", 7, "--model", tiny_model).stdout == result.stdout
    assert run("generate", "the ", "-n", 40, "--seed", 8, "--model", tiny_model).stdout != result.stdout


def test_generate_passes_the_sampling_options(tiny_model: Path) -> None:
    options = {"temperature": 0.7, "top_k": 5, "top_p": 0.9, "min_p": 0.01, "repetition_penalty": 1.3}
    flags = [part for name, value in options.items() for part in (f"--{name.replace('_', '-')}", value)]
    result = run("generate", "a", "-n", 30, "--seed", 3, *flags, "--model", tiny_model)
    assert result.exit_code == 0, result.output
    assert result.stdout == seqgen.load(tiny_model).generate("a", 30, seed=3, **options) + "\n"


def test_generate_show_prompt_prints_the_prompt_first(tiny_model: Path) -> None:
    plain = run("generate", "hello", "-n", 20, "--seed", 1, "--model", tiny_model).stdout
    shown = run("generate", "hello", "-n", 20, "--seed", 1, "--show-prompt", "--model", tiny_model).stdout
    assert shown == "hello" + plain


def test_generate_stops_before_a_stop_string(tiny_model: Path) -> None:
    full = run("generate", "-n", 60, "--seed", 5, "--model", tiny_model).stdout.removesuffix("\n")
    stop = full[10:12]
    stopped = run("generate", "-n", 60, "--seed", 5, "--stop", stop, "--stop", "zzzz", "--model", tiny_model)
    assert stopped.exit_code == 0, stopped.output
    assert stopped.stdout == full[: full.index(stop)] + "\n"


def test_stop_strings_understand_backslash_escapes(tiny_model: Path) -> None:
    assert cli.unescape(r"a\nb\tc\\n\q") == "a\nb\tc\\n\\q"
    full = run("generate", "-n", 300, "--seed", 11, "--model", tiny_model).stdout.removesuffix("\n")
    assert "\n" in full  # the seed is chosen so that the text has a newline
    stopped = run("generate", "-n", 300, "--seed", 11, "--stop", r"\n", "--model", tiny_model)
    assert stopped.stdout == full[: full.index("\n")] + "\n"


def test_generate_many_samples(tiny_models: dict[str, Path]) -> None:
    model = seqgen.load(tiny_models["lstm"])
    expected = model.generate_batch(["ab"] * 3, 25, seed=2)
    args = ("generate", "ab", "-n", 25, "--seed", 2, "--num-samples", 3, "--model", tiny_models["lstm"])
    assert json.loads(run(*args, "--json").stdout) == {"prompt": "ab", "samples": expected}
    assert run(*args).stdout == "\n\n".join(expected) + "\n"  # running-text samples: a blank line between

    names = run("generate", "-n", 12, "--seed", 4, "--num-samples", 6, "--model", tiny_models["lines"])
    assert names.exit_code == 0, names.output
    assert names.stdout.endswith("\n")
    assert len(names.stdout.splitlines()) == 6  # one name per line
    assert all(len(name) <= 12 for name in names.stdout.splitlines())


def test_generate_marks_samples_found_in_a_known_file(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    names = seqgen.load(tiny_models["lines"]).generate_batch(["a"] * 6, 8, seed=2)
    known = tmp_path / "known.txt"
    known.write_text("a" + names[0] + "\nsomeone-else\n", encoding="utf-8")
    result = run("generate", "a", "--model", tiny_models["lines"], "-n", 8, "--num-samples", 6, "--seed", 2,
                 "--known", known, "--json")
    report = json.loads(result.stdout)
    assert report["samples"] == ["a" + n for n in names]
    assert report["known"] == ["a" + n == "a" + names[0] for n in names]
    assert report["new"] == report["known"].count(False)
    text = run("generate", "a", "--model", tiny_models["lines"], "-n", 8, "--num-samples", 6, "--seed", 2,
               "--known", known)
    assert text.stdout.splitlines()[0] == f"a{names[0]}\tknown"
    assert f"{report['new']} of 6 samples are new" in text.stderr


def test_generate_json_for_one_sample_matches_the_stream(tiny_model: Path) -> None:
    streamed = run("generate", "x", "-n", 30, "--seed", 9, "--model", tiny_model).stdout
    as_json = json.loads(run("generate", "x", "-n", 30, "--seed", 9, "--json", "--model", tiny_model).stdout)
    assert as_json == {"prompt": "x", "samples": [streamed.removesuffix("\n")]}


@pytest.mark.parametrize(("option", "value", "words"), [
    ("--temperature", "-1", "temperature"),
    ("--temperature", "nan", "temperature"),
    ("--top-p", "0", "top_p"),
    ("--top-p", "1.5", "top_p"),
    ("--top-k", "0", "top_k"),
    ("--min-p", "2", "min_p"),
    ("--repetition-penalty", "0", "repetition_penalty"),
    ("-n", "-1", "max_new_chars"),
    ("--stop", "", "stop"),
])
@pytest.mark.parametrize("samples", ["1", "2"])
def test_generate_rejects_bad_options_before_printing(tiny_model: Path, option: str, value: str, words: str,
                                                      samples: str) -> None:
    result = run("generate", "ab", option, value, "--show-prompt", "--num-samples", samples, "--model", tiny_model)
    assert_input_error(result, words)


def test_generate_rejects_zero_samples_as_a_usage_error(tiny_model: Path) -> None:
    result = run("generate", "--num-samples", 0, "--model", tiny_model)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "--num-samples" in result.stderr


# -- score ---------------------------------------------------------------------------------------


def test_score_reports_loss_bits_and_perplexity(tiny_model: Path, tmp_path: Path) -> None:
    text = "hello world, the lazy dog.\n"
    path = tmp_path / "text.txt"
    path.write_text(text, encoding="utf-8")
    as_json = json.loads(run("score", path, "--json", "--model", tiny_model).stdout)
    expected = seqgen.load(tiny_model).score(text)
    assert as_json["tokens"] == expected.tokens == len(text)
    assert as_json["loss"] == pytest.approx(expected.loss)
    assert as_json["bits_per_char"] == pytest.approx(as_json["loss"] / math.log(2))
    assert as_json["perplexity"] == pytest.approx(math.exp(as_json["loss"]))

    lines = run("score", path, "--model", tiny_model).stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == ["tokens", "loss", "bits per char", "perplexity"]
    assert lines[0].split()[-1] == str(len(text))
    assert lines[1].split()[-2:] == [f"{expected.loss:.4f}", "nats/char"]

    from_stdin = run("score", "-", "--json", "--model", tiny_model, stdin=text)
    assert json.loads(from_stdin.stdout) == {**as_json, "file": "-"}


def test_text_that_is_not_utf8_is_an_input_error(tiny_model: Path, tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("héllo".encode("latin-1"))
    assert_input_error(run("score", path, "--model", tiny_model), str(path), "UTF-8")
    assert_input_error(run("score", "-", "--model", tiny_model, stdin=b"\xff\xfe"), "standard input", "UTF-8")
    assert_input_error(run("predict", "-", "--model", tiny_model, stdin=b"ab\xc3"), "standard input", "UTF-8")


def test_inputs_larger_than_the_cli_reads_are_refused_without_reading_them_whole(
        tiny_model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # /dev/zero never ends: read whole it filled the machine's memory until the kernel killed the process
    assert_input_error(run("score", "/dev/zero", "--model", tiny_model), "/dev/zero", "split")
    monkeypatch.setattr(cli, "MAX_INPUT_BYTES", 8)
    path = tmp_path / "nine.txt"
    path.write_text("abcdefghi", encoding="utf-8")
    assert_input_error(run("score", path, "--model", tiny_model), str(path), "8 bytes")
    assert_input_error(run("score", "-", "--model", tiny_model, stdin=b"abcdefghi"), "standard input", "8 bytes")
    assert_input_error(run("generate", "--known", path, "-n", 1, "--model", tiny_model), str(path))
    path.write_text("abcdefgh", encoding="utf-8")  # at the limit: read
    assert run("score", path, "--model", tiny_model).exit_code == 0


def test_missing_files_are_input_errors(tiny_model: Path, tmp_path: Path) -> None:
    assert_input_error(run("score", tmp_path / "absent.txt", "--model", tiny_model), "absent.txt")
    assert_input_error(run("score", tmp_path, "--model", tiny_model), str(tmp_path))
    assert_input_error(run("predict", "a", "--model", tmp_path / "absent.onnx"), "absent.onnx")
    assert_input_error(run("info", "--model", tmp_path / "absent.onnx"), "absent.onnx")
    assert_input_error(run("bench", "--model", "no-such-model"), "no-such-model")


def test_unknown_characters_follow_the_chosen_policy(tiny_model: Path) -> None:
    assert_input_error(run("predict", "HELLO", "--model", tiny_model), "--unknown")
    skipped = run("predict", "heLLo", "--unknown", "skip", "--json", "--model", tiny_model)
    assert skipped.stdout == run("predict", "heo", "--json", "--model", tiny_model).stdout
    replaced = run("predict", "heLLo", "--replacement", " ", "--json", "--model", tiny_model)
    assert replaced.stdout == run("predict", "he  o", "--json", "--model", tiny_model).stdout
    assert run("score", "-", "--unknown", "skip", "--model", tiny_model, stdin="HI hi").exit_code == 0
    assert_input_error(run("predict", "X", "--unknown", "replace", "--model", tiny_model), "--replacement")
    assert_input_error(run("predict", "X", "--unknown", "skip", "--replacement", " ", "--model", tiny_model),
                       "--replacement")
    assert run("predict", "X", "--unknown", "everything", "--model", tiny_model).exit_code == 2


def test_threads_must_be_at_least_one(tiny_model: Path) -> None:
    assert_input_error(run("predict", "a", "--threads", 0, "--model", tiny_model), "threads")
    assert run("predict", "a", "--threads", 2, "--model", tiny_model).exit_code == 0


# -- info, bench, version ------------------------------------------------------------------------


def test_info_describes_a_model(tiny_model: Path) -> None:
    model = seqgen.load(tiny_model)
    result = run("info", tiny_model)
    assert result.exit_code == 0, result.output
    fields = dict(line.split(":", 1) for line in result.stdout.splitlines())
    fields = {key: value.strip() for key, value in fields.items()}
    assert fields["path"] == str(tiny_model)
    assert fields["size"] == f"{tiny_model.stat().st_size} bytes"
    assert fields["vocabulary"] == repr("".join(model.vocab.chars))
    assert fields["cell"] == "lstm"
    assert "shipped models" not in fields

    described = json.loads(run("info", "--json", "--model", tiny_model).stdout)
    assert described == {"path": str(tiny_model), "size": tiny_model.stat().st_size, "info": model.info}


def test_info_takes_the_model_once(tiny_model: Path) -> None:
    result = run("info", tiny_model, "--model", tiny_model)
    assert result.exit_code == 2
    assert "not both" in result.stderr


@pytest.fixture()
def shipped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty folder standing in for the shipped models."""
    monkeypatch.setattr(modelfile, "artifacts_dir", lambda: tmp_path)
    return tmp_path


def test_info_without_a_default_model_is_a_clear_error(shipped: Path) -> None:
    assert_input_error(run("info"), modelfile.DEFAULT_MODEL, "none shipped")
    assert_input_error(run("predict", "a"), modelfile.DEFAULT_MODEL)


def test_info_describes_the_default_model_and_lists_the_shipped_ones(shipped: Path, tiny_models: dict[str, Path]
                                                                      ) -> None:
    shutil.copy(tiny_models["gru"], shipped / f"{modelfile.DEFAULT_MODEL}.onnx")
    shutil.copy(tiny_models["lines"], shipped / "names.onnx")
    result = run("info")
    assert result.exit_code == 0, result.output
    assert "cell:" in result.stdout
    listed = next(line for line in result.stdout.splitlines() if line.startswith("shipped models:"))
    assert listed.split(":", 1)[1].strip() == ", ".join(sorted(["names", modelfile.DEFAULT_MODEL]))
    assert json.loads(run("info", "--json").stdout)["shipped_models"] == sorted(["names", modelfile.DEFAULT_MODEL])
    assert json.loads(run("info", "names", "--json").stdout)["info"]["line_items"] is True
    assert run("predict", "an", "--model", "names").exit_code == 0


def test_bench_times_batch_one_and_the_larger_batch(tiny_model: Path) -> None:
    rows = json.loads(run("bench", "-n", 8, "--batch", 3, "--json", "--model", tiny_model).stdout)
    assert [(row["batch"], row["chars"]) for row in rows] == [(1, 8), (3, 24)]
    for row in rows:
        assert row["us_per_char"] > 0
        assert row["chars_per_second"] == pytest.approx(1e6 / row["us_per_char"])

    table = run("bench", "-n", 8, "--batch", 1, "--model", tiny_model)
    assert table.exit_code == 0, table.output
    header, *lines = table.stdout.splitlines()
    assert header.split() == ["batch", "chars", "us/char", "chars/s"]
    assert len(lines) == 1
    assert lines[0].split()[:2] == ["1", "8"]
    assert all(len(number.split(".")[1]) == 1 for number in lines[0].split()[2:])


def test_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout == f"seqgen-run, version {seqgen.__version__}\n"  # click's form, as seqgen-train


# -- failures that are not the user's ------------------------------------------------------------


def _raise(error: BaseException) -> object:
    def fail(*args: object, **kwargs: object) -> object:
        raise error

    return fail


def test_unexpected_errors_are_one_line_with_exit_code_1(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seqgen.Model, "predict", _raise(RuntimeError("boom\nsecond line")))
    result = run("predict", "a", "--model", tiny_model)
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        "Error: internal error: RuntimeError: boom second line (set SEQGEN_DEBUG=1 for a traceback)"]

    monkeypatch.setenv("SEQGEN_DEBUG", "1")
    assert isinstance(run("predict", "a", "--model", tiny_model).exception, RuntimeError)


def test_interrupt_exits_130_quietly(tiny_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seqgen.Model, "stream", _raise(KeyboardInterrupt()))
    result = run("generate", "--model", tiny_model)
    assert result.exit_code == 130
    assert result.output == ""


def _interrupted_import(*args: object, **kwargs: object) -> object:
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        raise ImportError("initialization failed") from None  # what an interrupted extension import raises


@pytest.mark.parametrize("where", ["parsing", "import"])
def test_interrupts_while_parsing_or_importing_exit_130_too(where: str, tiny_model: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    if where == "parsing":
        monkeypatch.setattr(cli.click.Group, "make_context", _raise(KeyboardInterrupt()))
    else:
        monkeypatch.setattr(cli.ModelChoice, "load", _interrupted_import)
    result = run("predict", "a", "--model", tiny_model)
    assert result.exit_code == 130
    assert result.output == ""


# -- the real process ----------------------------------------------------------------------------


def test_console_script_exit_codes(tiny_model: Path, tmp_path: Path) -> None:
    ok = subprocess.run([*seqgen_run(), "predict", "he", "--model", str(tiny_model)], capture_output=True, timeout=60)
    assert ok.returncode == 0, ok.stderr
    assert len(ok.stdout.decode().splitlines()) == 5

    bad = subprocess.run([*seqgen_run(), "predict", "he", "--model", str(tmp_path / "x.onnx")], capture_output=True,
                         timeout=60)
    assert bad.returncode == 2
    assert bad.stdout == b""
    assert len(bad.stderr.decode().splitlines()) == 1
    assert b"Traceback" not in bad.stderr


def test_console_script_writes_all_its_output_before_its_quick_exit(tiny_model: Path) -> None:
    """The script ends with os._exit (no interpreter teardown): nothing buffered may be lost."""
    args = ["generate", "the", "-n", "20000", "--seed", "3", "--model", str(tiny_model)]
    process = subprocess.run([*seqgen_run(), *args], capture_output=True, text=True, timeout=60)
    assert process.returncode == 0, process.stderr
    assert process.stdout == run(*args).output
    assert len(process.stdout) > 10000
    # click.echo flushes as it writes; run() must also flush what was written without a flush
    unflushed = ("import sys; from seqgen import cli; "
                 "cli.main = lambda: sys.stdout.write('x' * 100000) and sys.exit(3); cli.run()")
    process = subprocess.run([sys.executable, "-c", unflushed], capture_output=True, text=True, timeout=60)
    assert (process.returncode, len(process.stdout), process.stderr) == (3, 100000, "")


def test_console_script_with_its_output_closed_exits_quietly(tiny_model: Path) -> None:
    """`seqgen-run ... >&-`: Python has no sys.stdout; nothing to write to is not a crash."""
    process = subprocess.run([*seqgen_run(), "predict", "he", "--model", str(tiny_model)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.PIPE, timeout=60, preexec_fn=lambda: os.close(1))
    assert process.returncode == 0 and b"Traceback" not in process.stderr, process.stderr


def test_a_closed_pipe_ends_quietly(tiny_model: Path) -> None:
    with subprocess.Popen([*seqgen_run(), "generate", "-n", "100000", "--model", str(tiny_model)],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        assert len(process.stdout.read(10)) == 10  # like `| head -c 10`
        process.stdout.close()
        errors = process.stderr.read()
        assert process.wait(timeout=60) == 0
    assert errors == b""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child process is POSIX")
def test_ctrl_c_exits_130_quietly(tiny_model: Path) -> None:
    process = subprocess.Popen([*seqgen_run(), "generate", "-n", "1000000", "--model", str(tiny_model)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    process.stdout.read(10)  # generation has started
    process.send_signal(signal.SIGINT)
    _, errors = process.communicate(timeout=60)
    assert process.returncode == 130
    assert errors == b""


def test_importing_the_cli_never_imports_torch_or_onnx() -> None:
    probe = "import sys, seqgen.cli; print(sorted({'torch', 'onnx'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=60).stdout.strip() == "[]"
