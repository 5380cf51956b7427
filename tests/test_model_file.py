"""Loading checks: every damaged, foreign or edited file is one clear SeqgenError naming the file."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import edited

import seqgen

onnx = pytest.importorskip("onnx")


def refused(path: Path | str, match: str) -> None:
    with pytest.raises(seqgen.SeqgenError, match=match) as caught:
        seqgen.load(path)
    assert "\n" not in str(caught.value)


def test_missing_directory_and_empty_files(tmp_path: Path) -> None:
    refused(tmp_path / "nope.onnx", "does not exist")
    refused(tmp_path, "is a directory")
    (tmp_path / "empty.onnx").write_bytes(b"")
    refused(tmp_path / "empty.onnx", "is empty")


def test_unknown_short_name_lists_the_shipped_models() -> None:
    refused("no-such-model", "no model file or shipped model named 'no-such-model'")


def test_truncated_and_random_bytes(tmp_path: Path, tiny_model: Path) -> None:
    data = tiny_model.read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])
    refused(tmp_path / "cut.onnx", "not a readable ONNX file|onnxruntime cannot load")
    (tmp_path / "noise.onnx").write_bytes(bytes(range(256)) * 40)
    refused(tmp_path / "noise.onnx", "not a readable ONNX file|not a seqgen model")


def test_valid_onnx_that_is_not_a_seqgen_model(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph), tmp_path / "other.onnx")
    refused(tmp_path / "other.onnx", "not a seqgen model")


@pytest.mark.parametrize(("version", "message"), [
    ("2", "version '2' is newer than this seqgen reads (up to 1.x); upgrade seqgen: pip install -U seqgen"),
    ("2.0", "version '2.0' is newer than this seqgen reads (up to 1.x); upgrade seqgen: pip install -U seqgen"),
    ("0", "version '0' is older than this seqgen reads (from 1.x); re-export the model with this seqgen "
          "(seqgen-train export)"),
    ("0.9", "version '0.9' is older than this seqgen reads (from 1.x); re-export the model"),
    *((version, f"version {version!r} is not MAJOR or MAJOR.MINOR; the file is damaged, get it again or re-export it")
      for version in ("1.x", "", "1.", ".1", "1.2.3", " 1", "+1", "-1", "v1", "\u0661", "1" * 13, "01", "1.01", "00")),
])
def test_a_newer_or_older_major_version_or_a_damaged_one_is_refused_naming_the_fix(
        tiny_model: Path, tmp_path: Path, version: str, message: str) -> None:
    refused(edited(tiny_model, tmp_path / "version.onnx", format_version=version), re.escape(message))


def test_any_minor_version_of_the_current_major_is_read_and_its_unknown_keys_kept(tiny_model: Path,
                                                                                   tmp_path: Path) -> None:
    """A newer minor version only adds what an older reader may ignore, so this seqgen runs the file as before."""
    original = seqgen.load(tiny_model)
    for version in ("1.7", "1.0", "1.10", "1.123456789012"):
        newer = seqgen.load(edited(tiny_model, tmp_path / "minor.onnx", format_version=version, minor_extra="x"))
        assert newer.info["format_version"] == version and newer.info["minor_extra"] == "x"  # "1.10", not 1.1
        assert newer.generate("the ", 30, seed=4) == original.generate("the ", 30, seed=4)


def test_edited_metadata(tmp_path: Path, tiny_model: Path) -> None:
    refused(edited(tiny_model, tmp_path / "a.onnx", vocab_size="7"), "vocabulary has .* tokens but metadata")
    refused(edited(tiny_model, tmp_path / "b.onnx", format_version="99"), "format version '99' is newer")
    refused(edited(tiny_model, tmp_path / "c.onnx", cell=None), "missing cell")
    refused(edited(tiny_model, tmp_path / "d.onnx", hidden_size="1000000000"), "outside 1..")
    refused(edited(tiny_model, tmp_path / "e.onnx", layers="two"), "not a number")
    refused(edited(tiny_model, tmp_path / "f.onnx", vocabulary="{not json"), "vocabulary JSON is malformed")


def test_vocabulary_not_matching_the_logits(tmp_path: Path, tiny_model: Path) -> None:
    model = seqgen.load(tiny_model)
    shorter = model.vocab.chars[:-1]
    vocab = seqgen.Vocabulary(shorter).to_json()
    refused(edited(tiny_model, tmp_path / "v.onnx", vocabulary=vocab, vocab_size=str(len(shorter) + 1)),
            rf"vocab_size={len(shorter) + 1} .* embedding tables have shapes \[\[{len(shorter) + 2}, 8\]\]")


def _with_changed_weight(source: Path, target: Path) -> Path:
    model = onnx.load(source)
    weights = next(t for t in model.graph.initializer if t.name == "head_bias")
    values = onnx.numpy_helper.to_array(weights).copy()
    values[0] += 1.0
    weights.CopyFrom(onnx.numpy_helper.from_array(values, "head_bias"))
    onnx.save(model, target)
    return target


def test_corrupted_weights_are_caught_by_the_checksum(tmp_path: Path, tiny_model: Path) -> None:
    flipped = _with_changed_weight(tiny_model, tmp_path / "flipped.onnx")
    refused(flipped, "contents do not match their recorded checksum")
    assert seqgen.load(flipped, verify=False).predict("the", 1)  # the check can be turned off


def test_a_file_without_its_checksum_is_refused_and_restamp_gives_an_older_file_one(
        tmp_path: Path, tiny_model: Path) -> None:
    """Deleting the checksum must not switch the check off; a file from before file_crc32 (graph
    checksums only) is refused until `restamp` checks its graph and stamps it."""
    from seqgen.train.export import restamp

    older = edited(tiny_model, tmp_path / "older.onnx", stamp=False, file_crc32=None)
    refused(older, "has no file_crc32 checksum")
    bare = edited(older, tmp_path / "bare.onnx", stamp=False, graph_crc32=None, graph_sha256=None)
    refused(bare, "has no file_crc32 checksum")
    assert seqgen.load(bare, verify=False).predict("the", 1)  # the check can be turned off
    restamp(older, tmp_path / "stamped.onnx")
    assert seqgen.load(tmp_path / "stamped.onnx").predict("the", 2) == seqgen.load(tiny_model).predict("the", 2)
    with pytest.raises(seqgen.SeqgenError, match="does not match a recorded graph checksum"):
        restamp(_with_changed_weight(older, tmp_path / "flipped.onnx"))
    with pytest.raises(seqgen.SeqgenError, match="does not match a recorded graph checksum"):
        restamp(bare)


def test_the_exporter_records_the_file_checksum_and_both_graph_checksums(tiny_model: Path) -> None:
    """file_crc32 as docs/model-format.md defines it, computed here with onnx: the CRC-32 of the model
    serialized without metadata, continued over each seqgen key and value (sorted by key, each preceded
    by its UTF-8 length as 4 little-endian bytes), the file_crc32 entry left out."""
    import hashlib
    import zlib

    model = onnx.load(tiny_model)
    graph = model.graph.SerializeToString()
    metadata = {p.key: p.value for p in model.metadata_props}
    assert metadata["seqgen.graph_crc32"] == f"{zlib.crc32(graph):08x}"
    assert metadata["seqgen.graph_sha256"] == hashlib.sha256(graph).hexdigest()
    del model.metadata_props[:]
    crc = zlib.crc32(model.SerializeToString())
    for key in sorted(k for k in metadata if k != "seqgen.file_crc32"):
        for text in (key.encode(), metadata[key].encode()):
            crc = zlib.crc32(len(text).to_bytes(4, "little") + text, crc)
    assert metadata["seqgen.file_crc32"] == f"{crc:08x}"


def test_an_uppercase_crc_from_another_writer_is_accepted(tmp_path: Path, tiny_model: Path) -> None:
    crc = seqgen.load(tiny_model).info["file_crc32"]
    assert seqgen.load(edited(tiny_model, tmp_path / "upper.onnx", stamp=False, file_crc32=crc.upper()))


def test_digests_stay_text_and_json_never_decodes_to_infinity(tmp_path: Path, tiny_model: Path) -> None:
    """A CRC of digits only ("12345678", "1234e567" reads as a float) must not turn into a number, and
    `info --json` must stay valid JSON."""
    odd = edited(tiny_model, tmp_path / "odd.onnx", graph_crc32="1234e567", corpus="2024", val_loss="1e999")
    info = seqgen.load(odd, verify=False).info
    assert (info["graph_crc32"], info["corpus"], info["val_loss"]) == ("1234e567", "2024", "1e999")
    assert info["layers"] == 2  # numbers still decode


def test_loading_a_model_does_not_load_openssl(tiny_model: Path) -> None:
    """hashlib (OpenSSL) costs 3.6 MiB of resident memory: only exporters and older files need it."""
    probe = ("import sys, seqgen; seqgen.load(sys.argv[1]).predict('the', 1); "
             "print(sorted({'hashlib', '_hashlib'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", probe, str(tiny_model)], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_external_data_is_refused(tmp_path: Path, tiny_model: Path) -> None:
    model = onnx.load(tiny_model)
    onnx.save(model, tmp_path / "ext.onnx", save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    refused(tmp_path / "ext.onnx", "external data files")


def test_a_good_copy_loads(tmp_path: Path, tiny_model: Path) -> None:
    shutil.copy(tiny_model, tmp_path / "copy.onnx")
    assert seqgen.load(tmp_path / "copy.onnx").path == tmp_path / "copy.onnx"


def test_metadata_that_is_not_utf8_is_refused(tmp_path: Path, tiny_model: Path) -> None:
    model = onnx.load(tiny_model)
    model.metadata_props.add(key="x", value="y")
    data = model.SerializeToString().replace(b"\x0a\x01x\x12\x01y", b"\x0a\x01\xff\x12\x01y")
    (tmp_path / "bad.onnx").write_bytes(data)
    refused(tmp_path / "bad.onnx", "not a readable ONNX file")


def test_a_shipped_name_is_not_shadowed_by_a_file_in_the_current_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from seqgen.modelfile import resolve, shipped_models

    name = shipped_models()[0]
    (tmp_path / name).mkdir()
    monkeypatch.chdir(tmp_path)
    assert resolve(name).parent.name == "artifacts"
    assert resolve(f"./{name}") == Path(f"./{name}")  # the folder, when asked for by path
    assert resolve(Path(name)) == Path(name)


def test_metadata_edits_are_caught_by_the_checksum(tmp_path: Path, tiny_models: dict[str, Path]) -> None:
    """The issue's reproducer, rnn_relu edited to rnn_tanh, meets the graph check (with its checksum
    recomputed or not); the checksum covers every other seqgen key, those that change nothing included."""
    relu = tiny_models["rnn_relu"]
    for stamp in (False, True):
        refused(edited(relu, tmp_path / "cell.onnx", stamp=stamp, cell="rnn_tanh"),
                "cell='rnn_tanh' but the graph's recurrent layers are rnn_relu")
    refused(edited(relu, tmp_path / "loss.onnx", stamp=False, val_loss="0.1"),
            "contents do not match their recorded checksum")
    model = seqgen.load(relu)
    chars = "".join(reversed(model.vocab.chars))  # a permutation: only the checksum can tell
    refused(edited(relu, tmp_path / "chars.onnx", stamp=False, vocabulary=_vocabulary(relu, chars=chars)),
            "contents do not match their recorded checksum")


def _vocabulary(path: Path, **changes: object) -> str:
    import json

    data = json.loads(seqgen.load(path).file.metadata["seqgen.vocabulary"])
    return json.dumps({**data, **changes})


@pytest.mark.parametrize(("model", "changes", "message"), [
    ("lstm", {"cell": "gru"}, "cell='gru' but the graph's recurrent layers are lstm"),
    ("gru", {"cell": "lstm"}, "cell='lstm' but the graph's recurrent layers are gru"),
    ("rnn_tanh", {"cell": "rnn_relu"}, "cell='rnn_relu' but the graph's recurrent layers are rnn_tanh"),
    ("lstm", {"layers": "1"}, "layers=1 but the graph has 2 recurrent layers"),
    ("lstm", {"hidden_size": "8"}, "hidden_size=8"),
    ("lstm", {"embedding_size": "16"}, "embedding_size=16 but the graph's embedding tables have shapes"),
    ("lstm", {"quantization": "int8"}, "quantization=int8 but the graph's weights are not int8"),
    ("lstm", {"line_items": "true"}, "line_items=true but the vocabulary holds a line end"),
    ("lstm", {"line_items": "True"}, "line_items='True' is not one of true, false"),
    ("lstm", {"quantization": "INT8"}, "quantization='INT8' is not one of none, int8"),
    ("lstm", {"layers": "+2"}, "layers='\\+2' is not a number"),
    ("lstm", {"layers": " 2"}, "not a number"),
    ("lstm", {"hidden_size": "١٦"}, "not a number"),
    ("lstm", {"hidden_size": "16.0"}, "not a number"),
])
def test_every_fact_that_changes_behaviour_is_tied_to_the_graph_or_parsed_strictly(
        tmp_path: Path, tiny_models: dict[str, Path], model: str, changes: dict[str, str], message: str) -> None:
    refused(edited(tiny_models[model], tmp_path / "edited.onnx", **changes), message)


def test_quantization_none_on_an_int8_graph_is_refused(tmp_path: Path) -> None:
    from seqgen.modelfile import artifacts_dir

    refused(edited(artifacts_dir() / "names-int8.onnx", tmp_path / "q.onnx", quantization="none"),
            "quantization=none but the graph's weights are int8")


@pytest.mark.parametrize(("changes", "message"), [
    ({"lowercase": "false"}, "vocabulary lowercase is 'false', not of its type \\(bool\\)"),
    ({"lowercase": 1}, "vocabulary lowercase is 1"),
    ({"boundary": False}, "vocabulary boundary is False"),
    ({"boundary": 0.0}, "vocabulary boundary is 0.0"),
    ({"chars": ["a", "b"]}, "vocabulary chars is"),
    ({"replacement": 5}, "vocabulary replacement is 5"),
    ({"extra": 1}, "only the documented keys"),
    ({"lowercase": True}, "lowercase=true but holds upper-case characters"),
])
def test_the_vocabulary_json_is_parsed_strictly_by_type(tmp_path: Path, tiny_models: dict[str, Path],
                                                        changes: dict[str, object], message: str) -> None:
    source = export_upper(tmp_path) if "lowercase" in changes and changes["lowercase"] is True \
        else tiny_models["lstm"]
    refused(edited(source, tmp_path / "v.onnx", vocabulary=_vocabulary(source, **changes)), message)


def export_upper(tmp_path: Path) -> Path:
    from conftest import export_tiny

    return export_tiny(tmp_path / "upper.onnx", "gru", texts=["Hello World"], layers=1, hidden=4)


def test_deep_json_and_lone_surrogates_are_refused_on_load(tmp_path: Path, tiny_model: Path) -> None:
    deep = "[" * 100_000 + "]" * 100_000
    refused(edited(tiny_model, tmp_path / "v.onnx", vocabulary=deep), "vocabulary JSON is malformed")
    refused(edited(tiny_model, tmp_path / "t.onnx", training=deep), "nested deeper than 32 levels")
    refused(edited(tiny_model, tmp_path / "t2.onnx", training="[" * 40 + "]" * 40), "nested deeper than 32 levels")
    chars = "".join(seqgen.load(tiny_model).vocab.chars[:-1]) + "\ud800"
    refused(edited(tiny_model, tmp_path / "s.onnx", vocabulary=_vocabulary(tiny_model, chars=chars)), "lone surrogate")
    refused(edited(tiny_model, tmp_path / "s2.onnx", corpus='"\\udc80.txt"'), "lone surrogate")


def test_a_hidden_size_edit_in_a_graph_with_dynamic_dimensions_is_refused_on_load(
        tmp_path: Path, tiny_model: Path) -> None:
    """The state inputs say nothing of the sizes here: the recurrent layers' attribute and weights do."""
    from seqgen.train.export import stamped

    model = onnx.load(tiny_model)
    for value in (*model.graph.input, *model.graph.output):
        for dim in value.type.tensor_type.shape.dim:
            dim.dim_param = "any"
    metadata = {p.key.removeprefix("seqgen."): p.value for p in model.metadata_props if p.key != "seqgen.file_crc32"}
    (tmp_path / "dynamic.onnx").write_bytes(stamped(model, metadata))
    assert seqgen.load(tmp_path / "dynamic.onnx").predict("the", 1)
    (tmp_path / "hidden.onnx").write_bytes(stamped(model, {**metadata, "hidden_size": "17"}))
    refused(tmp_path / "hidden.onnx", "hidden_size=17 but a recurrent layer of the graph has hidden_size 16")


def test_a_metadata_key_given_twice_is_refused(tmp_path: Path, tiny_model: Path) -> None:
    model = onnx.load(tiny_model)
    model.metadata_props.add(key="seqgen.cell", value="gru")
    onnx.save(model, tmp_path / "twice.onnx")
    refused(tmp_path / "twice.onnx", "metadata key 'seqgen.cell' appears twice")


def test_a_graph_field_of_an_unexpected_wire_kind_is_a_damaged_file(tiny_model: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The fuzz test found a tensor whose dims field was fixed32, not a varint: a TypeError deep in the reader."""
    from seqgen import graph, modelfile

    with pytest.raises((TypeError, ValueError)):
        graph._tensor(memoryview(b"\x0d\x01\x00\x00\x00"))  # field 1 (dims) as fixed32
    monkeypatch.setattr(modelfile, "graph_facts", lambda _graph: graph._tensor(memoryview(b"\x0d\x01\x00\x00\x00")))
    with pytest.raises(seqgen.SeqgenError, match="not a readable ONNX file"):
        seqgen.load(tiny_model)
