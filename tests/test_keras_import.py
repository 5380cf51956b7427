"""import-keras: Keras files made once by Keras (tests/fixtures/keras/make_fixtures.py) read without
TensorFlow, answering as Keras answered; what cannot be imported exactly is refused with one line."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner, Result
from helpers import assert_input_error

import seqgen
from seqgen.errors import SeqgenError
from seqgen.train import keras_file
from seqgen.train.cli import main as train_cli
from seqgen.train.keras_vocab import tokenizer_vocabulary
from seqgen.window import keras_predict, keras_windows

FIXTURES = Path(__file__).parent / "fixtures" / "keras"
KERAS = json.loads((FIXTURES / "keras_probabilities.json").read_text(encoding="utf-8"))
MODELS = sorted(name for name in KERAS if name.endswith((".keras", ".h5")))


def import_keras(*args: object) -> Result:
    return CliRunner().invoke(train_cli, ["import-keras", *map(str, args)])


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every fixture imported once through the command line, with its tokenizer."""
    folder = tmp_path_factory.mktemp("imported")
    paths = {}
    for name in MODELS:
        out = folder / f"{name}.onnx"
        result = import_keras(FIXTURES / name, "--tokenizer", FIXTURES / KERAS[name]["tokenizer"], "--out", out)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["model"] == str(out)
        paths[name] = out
    return paths


def test_the_fixtures_cover_every_cell_in_both_formats_and_stay_small() -> None:
    assert {"rnn_relu.keras", "rnn_relu.h5", "lstm.keras", "lstm.h5", "gru.keras", "gru.h5",
            "notebook.keras", "keras2_notebook.h5"} <= set(MODELS)
    assert all(path.stat().st_size < 200_000 for path in FIXTURES.iterdir())


@pytest.mark.parametrize("name", MODELS)
def test_imported_model_gives_keras_probabilities(name: str, imported: dict[str, Path]) -> None:
    expected = KERAS[name]
    model = seqgen.load(imported[name])
    length = len(expected["padded"][0])
    assert model.info["keras_input_length"] == length
    assert keras_windows(model.vocab, expected["texts"], length).tolist() == expected["padded"]
    got = keras_predict(model, expected["texts"])
    assert got.shape == (len(expected["texts"]), model.vocab.size)
    assert float(np.abs(got - np.array(expected["probabilities"])).max()) <= 1e-5


@pytest.mark.parametrize("name", ["notebook.keras", "keras2_notebook.h5"])
def test_notebook_model_continues_the_alphabet(name: str, imported: dict[str, Path]) -> None:
    """The seed notebook's model (embedding 8, SimpleRNN 64 relu, trained by Keras 3 and by Keras 2): cde -> f."""
    model = seqgen.load(imported[name])
    assert (model.file.cell, model.file.hidden_size, model.file.embedding_size) == ("rnn_relu", 64, 8)
    alphabet = "abcdefghijklmnopqrstuvwxyz"
    windows = [alphabet[i : i + 3] for i in range(23)]
    answers = [model.vocab.char(int(i)) for i in keras_predict(model, windows).argmax(axis=1)]
    assert answers[2] == "f"  # cde
    assert answers == [alphabet[i + 3] for i in range(23)]


def test_chars_give_the_same_model_as_the_tokenizer(imported: dict[str, Path], tmp_path: Path) -> None:
    result = import_keras(FIXTURES / "notebook.keras", "--chars", "abcdefghijklmnopqrstuvwxyz", "--out",
                          tmp_path / "chars.onnx")
    assert result.exit_code == 0, result.output
    with_chars, with_tokenizer = seqgen.load(tmp_path / "chars.onnx"), seqgen.load(imported["notebook.keras"])
    assert with_chars.vocab.chars == with_tokenizer.vocab.chars
    texts = ["cde", "xyz", "a"]
    np.testing.assert_array_equal(keras_predict(with_chars, texts), keras_predict(with_tokenizer, texts))


@pytest.mark.parametrize("tokenizer", ["tokenizer.json", "tokenizer_oov.json"])
def test_vocabulary_encodes_as_keras_tokenizer(tokenizer: str) -> None:
    """Lowercasing, dropped unknown characters, num_words and an oov_token: Keras' own sequences."""
    vocab = tokenizer_vocabulary(FIXTURES / tokenizer)
    case = KERAS["sequences"][tokenizer]
    assert [vocab.encode(text).tolist() for text in case["texts"]] == case["sequences"]


# -- when the stateful answer is Keras' window -------------------------------------------------------------------


def session_probabilities(model: seqgen.Model, text: str) -> np.ndarray:
    session = model.session()
    session.feed(text)
    logits = session.logits()[0]
    exp = np.exp(logits - logits.max())
    return exp / exp.sum()


def test_stateful_answer_is_the_window_answer_exactly_when_one_pad_is_left(imported: dict[str, Path]) -> None:
    """Keras pre-pads to L ids and starts from zero; a Session starts with one boundary (id 0): the same
    inputs exactly when the text has L - 1 characters."""
    model = seqgen.load(imported["lstm.keras"])
    length = model.info["keras_input_length"]
    for text in ("the qui", "quick b"):  # L - 1 = 7 characters
        assert float(np.abs(session_probabilities(model, text) - keras_predict(model, [text])[0]).max()) <= 1e-6
    for text in ("the", "the quick", "the quick brown"):  # more padding; truncated windows
        assert len(text) != length - 1
        assert float(np.abs(session_probabilities(model, text) - keras_predict(model, [text])[0]).max()) > 1e-3


def test_padding_that_leaves_the_zero_state_makes_every_shorter_window_equal(tmp_path: Path) -> None:
    """If a padding step keeps the zero state (here: the padding embedding row and every bias zero), any
    number of pads is one boundary, so every text of up to L characters gets Keras' answer."""
    source = tmp_path / "zeroed.h5"
    shutil.copy(FIXTURES / "lstm.h5", source)
    with h5py.File(source, "r+") as weights:
        for layer in weights["model_weights"].values():
            for name in layer.attrs["weight_names"]:
                name = name.decode() if isinstance(name, bytes) else name
                if "bias" in name:
                    layer[name][...] = 0
                elif "embedding" in name:
                    layer[name][0] = 0
    result = import_keras(source, "--tokenizer", FIXTURES / "tokenizer.json", "--out", tmp_path / "zeroed.onnx")
    assert result.exit_code == 0, result.output
    model = seqgen.load(tmp_path / "zeroed.onnx")
    for text in ("t", "the", "the qui", "the quic"):
        assert float(np.abs(session_probabilities(model, text) - keras_predict(model, [text])[0]).max()) <= 1e-6
    assert float(np.abs(session_probabilities(model, "the quick") - keras_predict(model, ["the quick"])[0]).max()) \
        > 1e-4  # longer than the window: Keras forgets the start, the session does not


def test_windowed_call_needs_a_length_for_other_models(tiny_model: Path) -> None:
    model = seqgen.load(tiny_model)
    with pytest.raises(SeqgenError, match="length="):
        keras_predict(model, ["the"])
    assert keras_predict(model, ["the", ""], length=4).shape == (2, model.vocab.size)
    with pytest.raises(SeqgenError, match="list"):
        keras_predict(model, "the", length=4)


def test_windowed_call_stays_in_the_runtime(imported: dict[str, Path]) -> None:
    script = ("import sys, seqgen; from seqgen.window import keras_predict; "
              "print(keras_predict(seqgen.load(sys.argv[1]), ['cde']).argmax(), "
              "sorted(m for m in ('torch', 'onnx', 'h5py', 'tensorflow', 'keras') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script, str(imported["notebook.keras"])], capture_output=True,
                          text=True, check=True)
    model = seqgen.load(imported["notebook.keras"])
    assert done.stdout.split(None, 1) == [str(model.vocab.encode("f")[0]), "[]\n"]


# -- refusals ------------------------------------------------------------------------------------------------------


def edited_archive(tmp_path: Path, source: str, edit) -> Path:
    """A copy of a .keras fixture whose config.json went through `edit` (a function of the config)."""
    target = tmp_path / f"edited_{source}"
    with zipfile.ZipFile(FIXTURES / source) as original, zipfile.ZipFile(target, "w") as copy:
        for item in original.infolist():
            data = original.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                edit(config)
                data = json.dumps(config).encode()
            copy.writestr(item, data)
    return target


def layer_of(config: dict, kind: str) -> dict:
    return next(layer for layer in config["config"]["layers"] if layer["class_name"] == kind)


def set_option(kind: str, **options: object):
    return lambda config: layer_of(config, kind)["config"].update(options)


def wrap_bidirectional(config: dict) -> None:
    layers = config["config"]["layers"]
    index = layers.index(layer_of(config, "GRU"))
    layers[index] = {"class_name": "Bidirectional", "config": {"name": "bidirectional", "layer": layers[index]}}


def insert_layer(kind: str, index: int = -1):
    """An edit inserting an option-less layer (by default just before the output layer)."""
    def edit(config: dict) -> None:
        config["config"]["layers"].insert(index, {"class_name": kind, "config": {"name": kind.lower()}})
    return edit


REFUSED = [
    ("gru.keras", wrap_bidirectional, ["'bidirectional'", "backwards"]),
    ("gru.keras", set_option("Embedding", mask_zero=True), ["mask_zero", "boundary"]),
    ("gru.keras", set_option("GRU", stateful=True), ["stateful=True"]),
    ("gru.keras", set_option("GRU", reset_after=False), ["reset_after=False"]),
    ("gru.keras", set_option("GRU", go_backwards=True), ["go_backwards"]),
    ("gru.keras", set_option("GRU", return_state=True), ["return_state"]),
    ("lstm.keras", set_option("LSTM", recurrent_activation="hard_sigmoid"), ["hard_sigmoid"]),
    ("rnn_relu.keras", set_option("SimpleRNN", activation="sigmoid"), ["'sigmoid'", "tanh or relu"]),
    ("rnn_relu.keras", set_option("Dense", activation="relu"), ["softmax"]),
    ("rnn_relu.keras", insert_layer("Masking"), ["'masking'", "skips time steps"]),
    ("rnn_relu.keras", insert_layer("Masking", 1), ["'masking'", "skips time steps"]),
    ("rnn_relu.keras", insert_layer("Conv1D"), ["'conv1d'", "seqgen imports"]),
    ("rnn_relu.keras", lambda config: config.update(class_name="Functional"), ["Functional", "Sequential"]),
    ("rnn_relu.keras", set_option("Embedding", input_dim=40, output_dim=8), ["input_dim 40", "vocabulary"]),
    ("rnn_relu.keras", set_option("SimpleRNN", units=17), ["implies"]),
    ("lstm.keras", lambda config: layer_of(config, "LSTM")["config"].update(units=32), ["one cell type and size"]),
    ("gru.keras", set_option("Embedding", input_length=5), ["conflicting input lengths", "5, 8"]),
    ("gru.keras", set_option("InputLayer", batch_shape=[None, 8, 3]), ["not [batch, time]"]),
]


@pytest.mark.parametrize(("source", "edit", "words"), REFUSED, ids=[" ".join(r[2]) for r in REFUSED])
def test_unsupported_layers_and_options_are_refused_naming_the_layer(source, edit, words, tmp_path: Path) -> None:
    path = edited_archive(tmp_path, source, edit)
    out = tmp_path / "out.onnx"
    assert_input_error(import_keras(path, "--tokenizer", FIXTURES / "tokenizer.json", "--out", out), *words)
    assert not out.exists()


def test_dropout_changes_nothing_at_inference(tmp_path: Path) -> None:
    path = edited_archive(tmp_path, "rnn_relu.keras", insert_layer("Dropout"))
    result = import_keras(path, "--tokenizer", FIXTURES / "tokenizer.json", "--out", tmp_path / "out.onnx")
    assert result.exit_code == 0, result.output
    expected = KERAS["rnn_relu.keras"]
    got = keras_predict(seqgen.load(tmp_path / "out.onnx"), expected["texts"])
    assert float(np.abs(got - np.array(expected["probabilities"])).max()) <= 1e-5


def test_file_sizes_are_bounded_before_reading(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(keras_file, "MAX_FILE_BYTES", 10_000)
    assert_input_error(import_keras(FIXTURES / "gru.h5", "--tokenizer", FIXTURES / "tokenizer.json", "--out",
                                    tmp_path / "out.onnx"), "bytes")
    monkeypatch.setattr(keras_file, "MAX_FILE_BYTES", 100_000)
    monkeypatch.setattr(keras_file, "MAX_CONFIG_BYTES", 1000)
    assert_input_error(import_keras(FIXTURES / "gru.keras", "--tokenizer", FIXTURES / "tokenizer.json", "--out",
                                    tmp_path / "out.onnx"), "config.json is larger than 1000 bytes")


def test_malformed_files_are_refused(tmp_path: Path) -> None:
    tokenizer = ["--tokenizer", FIXTURES / "tokenizer.json", "--out", tmp_path / "out.onnx"]
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes((FIXTURES / "lstm.h5").read_bytes()[:5000])
    assert_input_error(import_keras(truncated, *tokenizer), "damaged")
    truncated_zip = tmp_path / "truncated.keras"
    truncated_zip.write_bytes((FIXTURES / "gru.keras").read_bytes()[:20_000])
    assert_input_error(import_keras(truncated_zip, *tokenizer), "damaged")
    text = tmp_path / "model.keras"
    text.write_text("not a model", encoding="utf-8")
    assert_input_error(import_keras(text, *tokenizer), "neither a .keras archive nor an HDF5")
    no_config = tmp_path / "no_config.keras"
    with zipfile.ZipFile(no_config, "w") as archive:
        archive.writestr("model.weights.h5", b"")
    assert_input_error(import_keras(no_config, *tokenizer), "no config.json")
    bad_json = edited_archive(tmp_path, "gru.keras", lambda config: config.clear())
    assert_input_error(import_keras(bad_json, *tokenizer), "Sequential")
    weights_only = tmp_path / "weights.h5"
    with h5py.File(weights_only, "w") as handle:
        handle.create_dataset("kernel", data=np.zeros(3))
    assert_input_error(import_keras(weights_only, *tokenizer), "weights only")
    assert_input_error(import_keras(tmp_path, *tokenizer), "directory")


def test_weights_linking_to_other_files_are_refused(tmp_path: Path) -> None:
    source = tmp_path / "linked.h5"
    shutil.copy(FIXTURES / "rnn_relu.h5", source)
    with h5py.File(source, "r+") as weights:
        layer = next(name for name in weights["model_weights"] if name.startswith("embedding"))
        del weights["model_weights"][layer]
        weights["model_weights"][layer] = h5py.ExternalLink("/etc/hostname", "/")
    assert_input_error(import_keras(source, "--tokenizer", FIXTURES / "tokenizer.json", "--out",
                                    tmp_path / "out.onnx"), "link")


def test_vocabulary_options_are_checked(tmp_path: Path) -> None:
    model, out = FIXTURES / "notebook.keras", tmp_path / "out.onnx"
    assert_input_error(import_keras(model, "--out", out), "--tokenizer", "--chars")
    assert_input_error(import_keras(model, "--chars", "abc", "--tokenizer", FIXTURES / "notebook_tokenizer.json",
                                    "--out", out), "once")
    assert_input_error(import_keras(model, "--chars", "abc", "--out", out), "input_dim 27", "4 ids")
    assert_input_error(import_keras(model, "--chars", "abca", "--out", out), "repeats")
    assert_input_error(import_keras(model, "--chars", "abc", "--out", model), "overwrite")
    words = json.loads((FIXTURES / "notebook_tokenizer.json").read_text(encoding="utf-8"))
    words["config"]["char_level"] = False
    (tmp_path / "words.json").write_text(json.dumps(words), encoding="utf-8")
    assert_input_error(import_keras(model, "--tokenizer", tmp_path / "words.json", "--out", out), "char_level")
    words["config"].update(char_level=True, word_index=json.dumps({"a": 1, "b": 3}))
    (tmp_path / "holes.json").write_text(json.dumps(words), encoding="utf-8")
    assert_input_error(import_keras(model, "--tokenizer", tmp_path / "holes.json", "--out", out), "word_index")
    assert not out.exists()


def test_missing_h5py_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "h5py", None)
    result = import_keras(FIXTURES / "notebook.keras", "--chars", "abc", "--out", tmp_path / "out.onnx")
    assert_input_error(result, "seqgen[train,keras]")


def test_an_encrypted_archive_member_is_refused(tmp_path: Path) -> None:
    """zipfile raises RuntimeError (not an OSError) for a member with the encryption flag."""
    locked = tmp_path / "locked.keras"
    data = bytearray((FIXTURES / "gru.keras").read_bytes())
    for signature, flag_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):  # local and central headers
        start = data.find(signature)
        while start >= 0:
            data[start + flag_at] |= 1
            start = data.find(signature, start + 4)
    locked.write_bytes(bytes(data))
    assert_input_error(import_keras(locked, "--tokenizer", FIXTURES / "tokenizer.json", "--out",
                                    tmp_path / "out.onnx"), "encrypted")


class CountingGraph:
    """Stands in for a model's Graph, recording the logits each call returns."""

    def __init__(self, real) -> None:
        self.real, self.cells = real, []

    def run(self, tokens, state):
        logits, state = self.real.run(tokens, state)
        self.cells.append(logits.size)
        return logits, state

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)


def test_windowed_call_memory_is_bounded_whatever_the_window(imported: dict[str, Path],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows of any length run in pieces of time carrying the state: the same answers, bounded logits per
    call (256 windows of 20,000 ids took 2.2 GB in one call before)."""
    from seqgen import window

    model = seqgen.load(imported["lstm.keras"])
    texts = ["the quick brown fox", "jumps", "", "over the lazy dog"] * 3
    whole = keras_predict(model, texts, length=40)
    counting = model.graph = CountingGraph(model.graph)
    monkeypatch.setattr(window, "WINDOW_CELLS", 3 * 7 * model.vocab.size)
    np.testing.assert_allclose(keras_predict(model, texts, length=40), whole, rtol=0, atol=1e-6)
    assert len(counting.cells) > 4 and max(counting.cells) <= 3 * 7 * model.vocab.size
    with pytest.raises(SeqgenError, match="texts"):
        keras_predict(model, [b"the quick"])
    with pytest.raises(SeqgenError, match="list"):
        keras_predict(model, None)


@pytest.mark.parametrize("recorded", [" 8 ", "\u0668", "+8", "8.0", "0", "1000001"])
def test_a_recorded_input_length_is_read_as_strictly_as_the_files_sizes(imported: dict[str, Path], tmp_path: Path,
                                                                        recorded: str) -> None:
    from helpers import edited

    model = seqgen.load(edited(imported["lstm.keras"], tmp_path / "edited.onnx", keras_input_length=recorded))
    with pytest.raises(SeqgenError, match=r"keras_input_length=.* is not an integer"):
        keras_predict(model, ["the"])


def test_a_tokenizer_that_never_ends_is_refused_without_reading_it_whole(tmp_path: Path) -> None:
    """/dev/zero reports a size of 0, so the size check passed and reading it filled the memory."""
    result = import_keras(FIXTURES / "notebook.keras", "--tokenizer", "/dev/zero", "--out", tmp_path / "m.onnx")
    assert_input_error(result, "/dev/zero", "bytes")
    assert not (tmp_path / "m.onnx").exists()
