"""The seqgen model file: one ONNX file whose metadata_props describe everything needed to use it.

This module reads and checks a file (see docs/model-format.md) without the onnx package, and
finds the shipped models by short name.
"""

from __future__ import annotations

import contextlib
import json
import math
import mmap
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

from .cells import NAMES as CELLS
from .cells import state_names as state_names
from .errors import SeqgenError
from .vocab import Vocabulary
from .wire import BYTES, VARINT, WireError, fields

FORMAT_VERSION = 1
PREFIX = "seqgen."
REQUIRED_KEYS = ("format_version", "vocabulary", "cell", "layers", "hidden_size", "embedding_size", "vocab_size")
DEFAULT_MODEL = "shakespeare"
TEXT_KEYS = frozenset({"graph_crc32", "graph_sha256", "corpus", "corpus_sha256", "created", "seqgen_version"})
"""Metadata that is text even when it reads as a number (a hex digest of digits only, a file named 2024)."""
# Limits that no sensible character model reaches; larger declared sizes mean a damaged or hostile file.
MAX_LAYERS, MAX_HIDDEN, MAX_VOCAB = 64, 65_536, 1_114_113

# Field numbers of onnx.proto that the checks below read.
_MODEL_GRAPH, _MODEL_METADATA = 7, 14
_GRAPH_INITIALIZER, _GRAPH_INPUT = 5, 11
_VALUE_NAME, _VALUE_TYPE, _TYPE_TENSOR, _TENSOR_SHAPE, _SHAPE_DIM, _DIM_VALUE = 1, 2, 1, 2, 1, 1
_TENSOR_DATA_LOCATION, _TENSOR_EXTERNAL_DATA = 14, 13
_EXTERNAL = 1


@dataclass(frozen=True)
class ModelFile:
    """A checked model file: where it is, its metadata and vocabulary."""

    path: Path
    metadata: dict[str, str]
    vocab: Vocabulary
    cell: str
    layers: int
    hidden_size: int
    embedding_size: int
    line_items: bool

    @property
    def info(self) -> dict[str, object]:
        """Metadata with the seqgen prefix removed and JSON/number values decoded."""
        info: dict[str, object] = {}
        for key, value in self.metadata.items():
            name = key.removeprefix(PREFIX)
            info[name] = value if name in TEXT_KEYS else _decoded(value)
        info["vocabulary"] = "".join(self.vocab.chars)
        return info


def _decoded(value: str) -> object:
    """A metadata value as the JSON it holds (numbers, structures); text, and numbers JSON cannot write
    back (1e999 is infinite), stay strings."""
    try:
        decoded = json.loads(value)
    except ValueError:
        return value
    return value if isinstance(decoded, float) and not math.isfinite(decoded) else decoded


def artifacts_dir() -> Path:
    """Folder of the shipped models (package data)."""
    from . import artifacts  # a tiny package, imported only when a model is resolved

    return Path(artifacts.__file__).parent


def shipped_models() -> list[str]:
    """Short names of the shipped models, sorted."""
    return sorted(p.stem for p in artifacts_dir().glob("*.onnx"))


def resolve(model: str | Path | None) -> Path:
    """A path for a model argument: None is the default model; a bare name (a string without a
    folder or the .onnx suffix) is a shipped model when one has that name, so a file of the same
    name in the current folder does not shadow it (write ./name for the file); anything else is a path."""
    if model is None:
        model = DEFAULT_MODEL
    text = str(model)
    bare = isinstance(model, str) and "/" not in text and os.sep not in text and not text.endswith(".onnx")
    if bare and (artifacts_dir() / f"{text}.onnx").exists():
        return artifacts_dir() / f"{text}.onnx"
    path = Path(model)
    if path.exists() or not bare:
        return path
    raise SeqgenError(
        f"no model file or shipped model named {text!r}; give a path to a .onnx file "
        f"or one of: {', '.join(shipped_models()) or '(none shipped)'}"
    )


def graph_checksums(data: bytes) -> dict[str, str]:
    """The metadata an exporter records about the serialized graph (operators and weights) inside an
    ONNX file's bytes: `graph_crc32`, which every load checks, and `graph_sha256`, the weights' identity."""
    for number, kind, value in fields(data):
        if number == _MODEL_GRAPH and kind == BYTES:
            return {"graph_crc32": _crc32(value), "graph_sha256": _sha256(value)}
    raise WireError("no graph")


def _crc32(graph: bytes | memoryview) -> str:
    return f"{zlib.crc32(graph):08x}"


def _sha256(graph: bytes | memoryview) -> str:
    import hashlib  # here: loading OpenSSL costs 3.6 MiB and 5 ms, and only exporters and older files need it

    return hashlib.sha256(graph).hexdigest()


def _verify(path: Path, graph: memoryview, metadata: dict[str, str]) -> None:
    """Refuse a graph whose bytes changed since export. A checksum in the same file guards against damage,
    not tampering, so crc32 serves (7 ms at 13 MB, no OpenSSL); files from before it carry only sha256."""
    if (expected := metadata.get(PREFIX + "graph_crc32")) is not None:
        intact = _crc32(graph) == expected.lower()
    elif (expected := metadata.get(PREFIX + "graph_sha256")) is not None:
        intact = _sha256(graph) == expected.lower()
    else:
        return
    if not intact:
        raise SeqgenError(f"{path}: weights do not match their recorded checksum; the file is corrupted, get it again")


def read(model: str | Path | None = None, *, verify: bool = True) -> ModelFile:
    """Read and check a model file; every problem is one SeqgenError naming the file and the fix.

    The file is memory-mapped for the checks and unmapped before onnxruntime loads it by path, so
    no copy of its bytes stays in (or passes through) the Python heap: that keeps peak memory low.
    """
    path = resolve(model)
    if not path.exists():
        raise SeqgenError(f"model file {path} does not exist; check the path or use a shipped model name")
    if path.is_dir():
        raise SeqgenError(f"model path {path} is a directory; give the .onnx file inside it")
    try:
        with path.open("rb") as handle:
            if os.fstat(handle.fileno()).st_size == 0:
                raise SeqgenError(f"model file {path} is empty; export or download it again")
            mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as exc:
        raise SeqgenError(f"cannot read model file {path}: {exc.strerror}; check its permissions") from None
    try:
        return _read_mapped(path, memoryview(mapped), verify)
    finally:
        with contextlib.suppress(BufferError):  # a view kept by an error's traceback: unmapped when collected
            mapped.close()


def _read_mapped(path: Path, data: memoryview, verify: bool) -> ModelFile:
    with data:
        try:
            metadata, graph = _scan(data)
        except WireError:
            raise SeqgenError(f"{path} is not a readable ONNX file (truncated or not ONNX); export it again") from None
        except SeqgenError as exc:  # external data: name the file like every other refusal
            raise SeqgenError(f"{path}: {exc}") from None
        if graph is None:
            raise SeqgenError(f"{path} has no graph; it is not a complete ONNX model, export it again")
        with graph:
            return _checked(path, metadata, graph, verify)


def _scan(data: memoryview) -> tuple[dict[str, str], memoryview | None]:
    metadata: dict[str, str] = {}
    graph = None
    for number, kind, value in fields(data):
        if number == _MODEL_GRAPH and kind == BYTES:
            graph = value
        elif number == _MODEL_METADATA and kind == BYTES:
            try:
                entry = {n: bytes(v).decode("utf-8") for n, k, v in fields(value) if k == BYTES}
            except UnicodeDecodeError:
                raise WireError("metadata is not UTF-8") from None
            metadata[entry.get(1, "")] = entry.get(2, "")
    if graph is not None:
        for number, kind, value in fields(graph):
            if number == _GRAPH_INITIALIZER and kind == BYTES and _is_external(value):
                raise SeqgenError("model stores weights in external data files; a seqgen model is one file")
    return metadata, graph


def _is_external(tensor: memoryview) -> bool:
    return any(
        (n == _TENSOR_DATA_LOCATION and k == VARINT and v == _EXTERNAL) or n == _TENSOR_EXTERNAL_DATA
        for n, k, v in fields(tensor)
    )


def _state_inputs(graph: memoryview) -> dict[str, list[int | None]]:
    """Name and dimensions (None where dynamic) of each graph input; the step graph has only a few."""
    inputs = {}
    for number, kind, value in fields(graph):
        if number != _GRAPH_INPUT or kind != BYTES:
            continue
        name, dims = "", []
        for n, k, v in fields(value):
            if n == _VALUE_NAME and k == BYTES:
                name = bytes(v).decode("utf-8", "replace")
            elif n == _VALUE_TYPE and k == BYTES:
                tensors = [t for m, j, t in fields(v) if m == _TYPE_TENSOR and j == BYTES]
                shapes = [s for t in tensors for m, j, s in fields(t) if m == _TENSOR_SHAPE and j == BYTES]
                for dim in (d for s in shapes for m, j, d in fields(s) if m == _SHAPE_DIM and j == BYTES):
                    values = [x for m, j, x in fields(dim) if m == _DIM_VALUE and j == VARINT]
                    dims.append(values[0] if values else None)
        inputs[name] = dims
    return inputs


def _check_state_inputs(path: Path, graph: memoryview, cell: str, layers: int, hidden: int) -> None:
    """The metadata's cell and sizes must be the graph's: a Session builds its states from them."""
    try:
        inputs = _state_inputs(graph)
    except WireError:
        raise SeqgenError(f"{path} is not a readable ONNX file (damaged graph); export it again") from None
    if ("cell" in inputs) != (cell == "lstm"):
        raise SeqgenError(f"{path}: metadata says cell={cell!r} but the graph is {'' if 'cell' in inputs else 'not '}"
                          "an LSTM; the file was edited or damaged, re-export it")
    for name in ("state", "cell"):
        dims = inputs.get(name)
        if dims is None or len(dims) != 3:
            continue  # a missing or malformed state input is reported when the graph is loaded
        for axis, key, declared in ((0, "layers", layers), (2, "hidden_size", hidden)):
            if dims[axis] is not None and dims[axis] != declared:
                raise SeqgenError(f"{path}: metadata says {key}={declared} but the graph's {name!r} input has "
                                  f"{dims[axis]}; the file was edited or damaged, re-export it")


def _checked(path: Path, metadata: dict[str, str], graph: memoryview, verify: bool) -> ModelFile:
    missing = [k for k in REQUIRED_KEYS if PREFIX + k not in metadata]
    if missing:
        hint = "it is not a seqgen model" if len(missing) == len(REQUIRED_KEYS) else "its metadata is incomplete"
        raise SeqgenError(f"{path}: {hint} (missing {', '.join(missing)}); export it with seqgen-train export")
    meta = {k: metadata[PREFIX + k] for k in REQUIRED_KEYS}
    if meta["format_version"] != str(FORMAT_VERSION):
        raise SeqgenError(
            f"{path}: model format version {meta['format_version']!r} is not supported by this seqgen "
            f"(reads version {FORMAT_VERSION}); upgrade seqgen or re-export the model"
        )
    if meta["cell"] not in CELLS:
        raise SeqgenError(f"{path}: unknown cell type {meta['cell']!r}; expected one of {', '.join(CELLS)}")
    sizes = {}
    for key, limit in (("layers", MAX_LAYERS), ("hidden_size", MAX_HIDDEN), ("embedding_size", MAX_HIDDEN),
                       ("vocab_size", MAX_VOCAB)):
        try:
            sizes[key] = int(meta[key])
        except ValueError:
            raise SeqgenError(f"{path}: metadata {key}={meta[key]!r} is not a number; re-export the model") from None
        if not 1 <= sizes[key] <= limit:
            raise SeqgenError(f"{path}: metadata {key}={sizes[key]} is outside 1..{limit}; the file is damaged")
    try:
        vocab = Vocabulary.from_json(meta["vocabulary"])
    except SeqgenError as exc:
        raise SeqgenError(f"{path}: {exc}") from None
    if vocab.size != sizes["vocab_size"]:
        raise SeqgenError(
            f"{path}: vocabulary has {vocab.size} tokens but metadata says vocab_size={sizes['vocab_size']}; "
            "the file was edited or damaged, re-export it"
        )
    _check_state_inputs(path, graph, meta["cell"], sizes["layers"], sizes["hidden_size"])
    if verify:
        _verify(path, graph, metadata)
    return ModelFile(
        path=path,
        metadata=metadata,
        vocab=vocab,
        cell=meta["cell"],
        layers=sizes["layers"],
        hidden_size=sizes["hidden_size"],
        embedding_size=sizes["embedding_size"],
        line_items=metadata.get(PREFIX + "line_items", "false") == "true",
    )
