"""Loading checks: every damaged, foreign or edited file is one clear SeqgenError naming the file."""

from __future__ import annotations

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


def test_edited_metadata(tmp_path: Path, tiny_model: Path) -> None:
    refused(edited(tiny_model, tmp_path / "a.onnx", vocab_size="7"), "vocabulary has .* tokens but metadata")
    refused(edited(tiny_model, tmp_path / "b.onnx", format_version="99"), "format version '99' is not supported")
    refused(edited(tiny_model, tmp_path / "c.onnx", cell=None), "missing cell")
    refused(edited(tiny_model, tmp_path / "d.onnx", hidden_size="1000000000"), "outside 1..")
    refused(edited(tiny_model, tmp_path / "e.onnx", layers="two"), "not a number")
    refused(edited(tiny_model, tmp_path / "f.onnx", vocabulary="{not json"), "vocabulary JSON is malformed")


def test_vocabulary_not_matching_the_logits(tmp_path: Path, tiny_model: Path) -> None:
    model = seqgen.load(tiny_model)
    shorter = model.vocab.chars[:-1]
    vocab = seqgen.Vocabulary(shorter).to_json()
    refused(edited(tiny_model, tmp_path / "v.onnx", vocabulary=vocab, vocab_size=str(len(shorter) + 1)),
            "logits have width")


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
    refused(flipped, "do not match their recorded checksum")
    assert seqgen.load(flipped, verify=False).predict("the", 1)  # the check can be turned off


def test_files_with_only_a_sha256_are_still_verified(tmp_path: Path, tiny_model: Path) -> None:
    """Files exported before graph_crc32 carry only graph_sha256; loading still checks it."""
    older = edited(tiny_model, tmp_path / "older.onnx", graph_crc32=None)
    assert seqgen.load(older).predict("the", 1)
    refused(_with_changed_weight(older, tmp_path / "flipped.onnx"), "do not match their recorded checksum")


def test_the_exporter_records_both_checksums_of_the_graph(tiny_model: Path) -> None:
    import hashlib
    import zlib

    model = onnx.load(tiny_model)
    graph = model.graph.SerializeToString()
    metadata = {p.key.removeprefix("seqgen."): p.value for p in model.metadata_props}
    assert metadata["graph_crc32"] == f"{zlib.crc32(graph):08x}"
    assert metadata["graph_sha256"] == hashlib.sha256(graph).hexdigest()


def test_an_uppercase_crc_from_another_writer_is_accepted(tmp_path: Path, tiny_model: Path) -> None:
    crc = seqgen.load(tiny_model).info["graph_crc32"]
    assert seqgen.load(edited(tiny_model, tmp_path / "upper.onnx", graph_crc32=crc.upper())).predict("the", 1)


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
