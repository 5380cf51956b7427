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
import re
import stat
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from .cells import NAMES as CELLS
from .errors import SeqgenError
from .graph import GraphFacts, check_against_graph, graph_facts
from .vocab import Vocabulary, is_text
from .wire import BYTES, WireError, fields, records

FORMAT_VERSION = 1
"""The format's major version: what an export writes, and the newest major this seqgen reads (any minor of it)."""
OLDEST_FORMAT_VERSION = 1
"""The oldest major version this seqgen still reads."""
VERSION_SYNTAX = re.compile(r"(0|[1-9][0-9]{0,11})(\.(0|[1-9][0-9]{0,11}))?")
"""MAJOR or MAJOR.MINOR in ASCII decimal, without leading zeros, each at most 12 digits."""
PREFIX = "seqgen."
REQUIRED_KEYS = ("format_version", "vocabulary", "cell", "layers", "hidden_size", "embedding_size", "vocab_size")
DEFAULT_MODEL = "shakespeare"
CHECKSUM_KEY = "file_crc32"
"""The key of the checksum that covers the whole file, its seqgen metadata included."""
GRAPH_CHECKSUM_KEYS = ("graph_crc32", "graph_sha256")
"""The keys of the checksums of the graph alone, recorded at export (see `graph_checksums`)."""
PARITY_ABS_KEY, PARITY_REL_KEY = "parity_max_abs_diff", "parity_max_rel_diff"
"""The keys of how far the exported float graph's outputs were from torch's (absolute, relative to their scale)."""
KERAS_INPUT_LENGTH_KEY = "keras_input_length"
"""The key of the Keras model's input length, recorded by import-keras (see ModelFile.keras_input_length)."""
MAX_WINDOW = 1_000_000
"""Longest Keras input window: a recorded input length, or one a caller asks for."""
TEXT_KEYS = frozenset({CHECKSUM_KEY, *GRAPH_CHECKSUM_KEYS, "corpus", "corpus_sha256", "created", "seqgen_version",
                       "format_version"})
"""Metadata that is text even when it reads as a number (a hex digest of digits only, a file named 2024)."""
# Limits that no sensible character model reaches; larger declared sizes mean a damaged or hostile file.
MAX_LAYERS, MAX_HIDDEN, MAX_VOCAB = 64, 65_536, 1_114_113
MAX_JSON_DEPTH = 32
"""Deepest nesting of a JSON metadata value (the training configuration needs 3)."""
FLAGS = {"true": True, "false": False}
QUANTIZATIONS = ("none", "int8")

# The step graph's input and output names (docs/model-format.md), for every module that builds or runs it.
TOKENS_INPUT = "tokens"
"""The token ids input, [batch, time] int64."""
LOGITS_OUTPUT = "logits"
"""The next-token logits output, [batch, time, vocab] float32."""

# Field numbers of onnx.proto that the checks below read.
_MODEL_GRAPH, _MODEL_METADATA = 7, 14


def state_output(state: str) -> str:
    """The graph output that carries state input `state` after the last token."""
    return state + "_out"


def stored_key(key: str) -> str:
    """The metadata_props key under which the seqgen metadata `key` is stored."""
    return PREFIX + key


def is_seqgen_key(stored: str) -> bool:
    """Whether a metadata_props key holds seqgen metadata (other programs' keys are kept but mean nothing)."""
    return stored.startswith(PREFIX)


def seqgen_entries(props: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The seqgen metadata among a file's metadata_props (stored key, value), keys without the prefix."""
    return {key.removeprefix(PREFIX): value for key, value in props if is_seqgen_key(key)}


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
    quantized: bool

    @property
    def info(self) -> dict[str, object]:
        """Metadata with the seqgen prefix removed and JSON/number values decoded."""
        info: dict[str, object] = {}
        for key, value in self.metadata.items():
            name = key.removeprefix(PREFIX)
            info[name] = value if name in TEXT_KEYS else _decoded(value)
        info["vocabulary"] = "".join(self.vocab.chars)
        return info

    @property
    def keras_input_length(self) -> int | None:
        """The input length of the Keras model this file was imported from; None where none is recorded.
        Read as strictly as the sizes, when asked for (a file that records a bad one loads, and says so here)."""
        text = self.metadata.get(stored_key(KERAS_INPUT_LENGTH_KEY))
        if text is None:
            return None
        if not (text.isascii() and text.isdigit()) or len(text) > 12 or not 1 <= int(text) <= MAX_WINDOW:
            raise SeqgenError(f"{self.path}: metadata {KERAS_INPUT_LENGTH_KEY}={text!r} is not an integer in "
                              f"1..{MAX_WINDOW}; import the model again")
        return int(text)


def _decoded(value: str) -> object:
    """A metadata value as the JSON it holds (numbers, structures); text, and numbers JSON cannot write
    back (1e999 is infinite), stay strings. Deep nesting and lone surrogates (which no output can
    print) are refused: `read` decodes every value once, so a file holding them is refused on load."""
    try:
        decoded = json.loads(value)
    except RecursionError:
        raise SeqgenError(f"metadata value is JSON nested deeper than {MAX_JSON_DEPTH} levels") from None
    except ValueError:
        return value
    if isinstance(decoded, float) and not math.isfinite(decoded):
        return value
    pending = [(decoded, 1)]
    while pending:
        item, depth = pending.pop()
        if depth > MAX_JSON_DEPTH:
            raise SeqgenError(f"metadata value is JSON nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(item, dict):
            pending += [(k, depth) for k in item] + [(v, depth + 1) for v in item.values()]
        elif isinstance(item, list):
            pending += [(v, depth + 1) for v in item]
        elif isinstance(item, str) and not is_text(item):
            raise SeqgenError("metadata value holds a lone surrogate (\\ud800-\\udfff), which is not text")
    return decoded


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
    if not isinstance(model, (str, os.PathLike)) or isinstance(os.fspath(model), bytes):
        raise SeqgenError(f"a model is a path or a shipped model's name (text), got {type(model).__name__}")
    if not os.fspath(model).strip():
        raise SeqgenError("the model name is empty; give a path or a shipped model's name (seqgen-run info lists them)")
    text = str(model)
    bare = isinstance(model, str) and "/" not in text and os.sep not in text and not text.endswith(".onnx")
    if bare and _exists(artifacts_dir() / f"{text}.onnx"):
        return artifacts_dir() / f"{text}.onnx"
    path = Path(model)
    if not bare or _exists(path):
        return path
    raise SeqgenError(
        f"no model file or shipped model named {text!r}; give a path to a .onnx file "
        f"or one of: {', '.join(shipped_models()) or '(none shipped)'}"
    )


def _exists(path: Path) -> bool:
    """Whether `path` exists; False where that cannot be checked (`read` then says why)."""
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def graph_checksums(data: bytes) -> dict[str, str]:
    """The metadata an exporter records about the serialized graph (operators and weights) inside an
    ONNX file's bytes: `graph_crc32` (checked by seqgen before `file_crc32`) and `graph_sha256`, the
    weights' identity."""
    for number, kind, value in fields(data):
        if number == _MODEL_GRAPH and kind == BYTES:
            return dict(zip(GRAPH_CHECKSUM_KEYS, (f"{zlib.crc32(value):08x}", _sha256(value))))
    raise WireError("no graph")


def file_checksum(data: bytes | memoryview) -> str:
    """`file_crc32` of a serialized model: what an exporter records and every load checks (see
    docs/model-format.md): the CRC-32 of every field of the ModelProto but its metadata, then of the
    seqgen metadata in a canonical encoding, the checksum key itself left out."""
    return _scan(memoryview(data), checksum=True).checksum  # type: ignore[return-value]


def _sha256(graph: bytes | memoryview) -> str:
    import hashlib  # here: loading OpenSSL costs 3.6 MiB and 5 ms, and only exporters need it

    return hashlib.sha256(graph).hexdigest()


def read(model: str | Path | None = None, *, verify: bool = True) -> ModelFile:
    """Read and check a model file; every problem is one SeqgenError naming the file and the fix.

    The file is memory-mapped for the checks and unmapped before onnxruntime loads it by path, so
    no copy of its bytes stays in (or passes through) the Python heap: that keeps peak memory low.
    """
    if not isinstance(verify, bool):
        raise SeqgenError(f"verify must be True or False, got {verify!r}")
    path = resolve(model)
    _check_regular_file(path)
    try:
        with path.open("rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):  # replaced between the check and the open
                raise SeqgenError(f"model path {path} is not a regular file; give the .onnx file itself")
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


def _check_regular_file(path: Path) -> None:
    """Refuse what is missing, unreachable or not a regular file before opening it: opening a FIFO
    blocks until a writer comes, and a device can be endless."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise SeqgenError(f"model file {path} does not exist; check the path or use a shipped model name") from None
    except (OSError, ValueError) as exc:  # no permission on a folder, a name too long, a NUL byte
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SeqgenError(f"cannot check model path {_shown(path)}: {reason}; check the path and its "
                          "folders' permissions") from None
    if stat.S_ISDIR(mode):
        raise SeqgenError(f"model path {path} is a directory; give the .onnx file inside it")
    if not stat.S_ISREG(mode):
        raise SeqgenError(f"model path {path} is not a regular file (a pipe, device or socket); give a .onnx file")


def _shown(path: Path) -> str:
    """A path printable on any terminal: bytes that are not UTF-8 are shown escaped, and long names cut."""
    text = ascii(str(path))[1:-1] if not str(path).isprintable() else str(path)
    return text if len(text) <= 120 else text[:100] + "..." + text[-17:]


@dataclass
class _Scan:
    """What one pass over a model file's top-level fields finds."""

    metadata: dict[str, str]
    graph: memoryview | None
    checksum: str | None


def _read_mapped(path: Path, data: memoryview, verify: bool) -> ModelFile:
    with data:
        try:
            scan = _scan(data, checksum=verify)
            if scan.graph is None:
                raise SeqgenError(f"{path} has no graph; it is not a complete ONNX model, export it again")
            facts = graph_facts(scan.graph)
        except SeqgenError as exc:
            raise SeqgenError(exc.args[0] if str(path) in str(exc) else f"{path}: {exc}") from None
        except (WireError, TypeError, ValueError, IndexError, KeyError, OverflowError):  # any field of a wrong kind
            raise SeqgenError(f"{path} is not a readable ONNX file (truncated or not ONNX); export it again") from None
        with scan.graph:
            return _checked(path, scan, facts, verify)


def _scan(data: memoryview, *, checksum: bool) -> _Scan:
    """Metadata and graph of a model file, and (with `checksum`) its file_crc32, in one pass."""
    metadata: dict[str, str] = {}
    graph = None
    crc = 0
    for number, kind, value, raw in records(data):
        if number == _MODEL_METADATA and kind == BYTES:
            try:
                entry = {n: bytes(v).decode("utf-8") for n, k, v in fields(value) if k == BYTES}
            except UnicodeDecodeError:
                raise WireError("metadata is not UTF-8") from None
            key = entry.get(1, "")
            if key in metadata and is_seqgen_key(key):
                raise SeqgenError(f"metadata key {key!r} appears twice; the file was edited or damaged, re-export it")
            metadata[key] = entry.get(2, "")
            continue
        if number == _MODEL_GRAPH and kind == BYTES:
            graph = value
        if checksum:
            crc = zlib.crc32(raw, crc)
    if checksum:
        for key in sorted(k for k in metadata if is_seqgen_key(k) and k != stored_key(CHECKSUM_KEY)):
            for text in (key, metadata[key]):
                encoded = text.encode("utf-8")
                crc = zlib.crc32(encoded, zlib.crc32(len(encoded).to_bytes(4, "little"), crc))
    return _Scan(metadata, graph, f"{crc:08x}" if checksum else None)


def _checked(path: Path, scan: _Scan, facts: GraphFacts, verify: bool) -> ModelFile:
    """Every metadata fact parsed strictly by its type, tied to the graph, and covered by the checksum."""
    metadata = scan.metadata
    missing = [k for k in REQUIRED_KEYS if stored_key(k) not in metadata]
    if missing:
        hint = "it is not a seqgen model" if len(missing) == len(REQUIRED_KEYS) else "its metadata is incomplete"
        raise SeqgenError(f"{path}: {hint} (missing {', '.join(missing)}); export it with seqgen-train export")
    meta = seqgen_entries(metadata.items())
    check_format_version(path, meta["format_version"])
    if meta["cell"] not in CELLS:
        raise SeqgenError(f"{path}: unknown cell type {meta['cell']!r}; expected one of {', '.join(CELLS)}")
    sizes = {key: _size(path, key, meta[key], limit) for key, limit in (
        ("layers", MAX_LAYERS), ("hidden_size", MAX_HIDDEN), ("embedding_size", MAX_HIDDEN), ("vocab_size", MAX_VOCAB))}
    line_items = _choice(path, meta, "line_items", FLAGS, "false")
    quantized = _choice(path, meta, "quantization", dict(zip(QUANTIZATIONS, (False, True))), "none")
    try:
        vocab = Vocabulary.from_json(meta["vocabulary"])
        for key, value in meta.items():
            if key != "vocabulary":
                _decoded(value)
    except SeqgenError as exc:
        raise SeqgenError(f"{path}: {exc}") from None
    if vocab.size != sizes["vocab_size"]:
        raise SeqgenError(
            f"{path}: vocabulary has {vocab.size} tokens but metadata says vocab_size={sizes['vocab_size']}; "
            "the file was edited or damaged, re-export it"
        )
    if line_items and any(char in vocab.chars for char in "\n\r"):
        raise SeqgenError(f"{path}: metadata says line_items=true but the vocabulary holds a line end, which no "
                          "line item contains; the file was edited or damaged, re-export it")
    try:
        check_against_graph(facts, meta["cell"], sizes["layers"], sizes["hidden_size"], sizes["embedding_size"],
                            sizes["vocab_size"], quantized)
    except SeqgenError as exc:
        raise SeqgenError(f"{path}: {exc}; the file was edited or damaged, re-export it") from None
    if verify:
        _verify(path, scan)
    return ModelFile(path=path, metadata=metadata, vocab=vocab, cell=meta["cell"], layers=sizes["layers"],
                     hidden_size=sizes["hidden_size"], embedding_size=sizes["embedding_size"], line_items=line_items,
                     quantized=quantized)


def check_format_version(path: Path, text: str) -> None:
    """Refuse a file this seqgen cannot read (docs/model-format.md, "Format versions"): the version is MAJOR or
    MAJOR.MINOR; any minor of a major from OLDEST_FORMAT_VERSION to FORMAT_VERSION is read, as a newer minor
    only adds what an older reader may ignore."""
    if not VERSION_SYNTAX.fullmatch(text):
        raise SeqgenError(f"{path}: model format version {text!r} is not MAJOR or MAJOR.MINOR; the file is "
                          "damaged, get it again or re-export it")
    major = int(text.split(".")[0])
    if major > FORMAT_VERSION:
        raise SeqgenError(f"{path}: model format version {text!r} is newer than this seqgen reads "
                          f"(up to {FORMAT_VERSION}.x); upgrade seqgen: pip install -U seqgen")
    if major < OLDEST_FORMAT_VERSION:
        raise SeqgenError(f"{path}: model format version {text!r} is older than this seqgen reads (from "
                          f"{OLDEST_FORMAT_VERSION}.x); re-export the model with this seqgen (seqgen-train export)")


def _size(path: Path, key: str, text: str, limit: int) -> int:
    """A size written in plain decimal digits ("2", never "+2", " 2", "2.0" or "٢"), within 1..limit."""
    if not (text.isascii() and text.isdigit()) or len(text) > 12:
        raise SeqgenError(f"{path}: metadata {key}={text!r} is not a number; re-export the model")
    if not 1 <= int(text) <= limit:
        raise SeqgenError(f"{path}: metadata {key}={int(text)} is outside 1..{limit}; the file is damaged")
    return int(text)


def _choice(path: Path, meta: dict[str, str], key: str, values: dict[str, bool], default: str) -> bool:
    """An optional metadata word, exactly one of `values` ("false" is not true, "True" is not a value)."""
    text = meta.get(key, default)
    if text not in values:
        raise SeqgenError(f"{path}: metadata {key}={text!r} is not one of {', '.join(values)}; re-export the model")
    return values[text]


def _verify(path: Path, scan: _Scan) -> None:
    """Refuse a file whose bytes or seqgen metadata changed since export. A checksum stored in the same
    file guards against damage and careless edits, not tampering, so CRC-32 serves (7 ms at 13 MB, no
    OpenSSL); a file without one is refused, so deleting it cannot switch the check off."""
    expected = scan.metadata.get(stored_key(CHECKSUM_KEY))
    if expected is None:
        raise SeqgenError(f"{path} has no {CHECKSUM_KEY} checksum (it was edited, or is older than this seqgen); "
                          "re-export it, or stamp an older file of yours with seqgen.train.export.restamp")
    if expected.lower() != scan.checksum:
        raise SeqgenError(f"{path}: contents do not match their recorded checksum; the file is corrupted or was "
                          "edited, get it again or re-export it")
