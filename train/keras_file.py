"""Read a saved Keras model's config and weights with h5py alone: no TensorFlow, no Keras, no pickles.

Two formats: the `.keras` archive (a zip holding config.json and model.weights.h5, Keras 3) and the
legacy HDF5 `.h5` (the config as the JSON attribute `model_config`, weights under `model_weights`).
The config is parsed as JSON data, never evaluated; every size is bounded before anything is read.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
import zlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from seqgen.errors import SeqgenError

if TYPE_CHECKING:
    import h5py

MAX_FILE_BYTES = 256 * 2**20
"""Largest model file read: far beyond any character model (a 2-layer LSTM of 1024 is ~35 MB)."""
MAX_CONFIG_BYTES = 4 * 2**20
"""Largest config JSON read (a Sequential config is a few KB)."""
ZIP_MAGIC, HDF5_MAGIC = b"PK\x03\x04", b"\x89HDF\r\n\x1a\n"

WeightReader = Callable[[str, str, Sequence[tuple[int, ...]]], list[np.ndarray]]
"""(layer name, its name in a .keras archive, the shapes its config implies) -> its weight arrays as
float32, in Keras' order."""


def require_h5py() -> Any:
    """The h5py module, or a one-line error naming the extra that brings it."""
    try:
        import h5py
    except ImportError:
        raise SeqgenError("import-keras reads Keras files with h5py, which is not installed; "
                          "install the keras extra: pip install 'seqgen[train,keras]'") from None
    return h5py


@contextmanager
def open_keras(path: Path) -> Iterator[tuple[dict[str, Any], WeightReader]]:
    """The model's config (a JSON object) and a reader of its layers' weights, for a .keras or .h5 file."""
    h5py = require_h5py()
    if path.is_dir():
        raise SeqgenError(f"{path} is a directory (a TensorFlow SavedModel?); save the model with "
                          "model.save('model.keras') or model.save('model.h5') and import that file")
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            head = handle.read(8)
    except OSError as exc:
        raise SeqgenError(f"cannot read {path}: {exc.strerror}; check the path and its permissions") from None
    if size > MAX_FILE_BYTES:
        raise SeqgenError(f"{path} has {size} bytes, more than the {MAX_FILE_BYTES} a character model needs; "
                          "is it the right file?")
    try:
        if head.startswith(ZIP_MAGIC):
            with _keras_archive(path, h5py) as opened:
                yield opened
        elif head == HDF5_MAGIC:
            with h5py.File(path, "r") as weights:
                yield _legacy_config(path, weights), _legacy_reader(path, weights)
        else:
            raise SeqgenError(f"{path} is neither a .keras archive nor an HDF5 .h5 file; save the model with "
                              "model.save('model.keras') or model.save('model.h5')")
    except (OSError, EOFError, KeyError, NotImplementedError, zipfile.BadZipFile, zlib.error) as exc:
        # how h5py and zipfile report damage (NotImplementedError: a zip compression method Python lacks)
        raise SeqgenError(f"{path} is damaged or truncated ({_first_line(exc)}); save the model again") from None


@contextmanager
def _keras_archive(path: Path, h5py: Any) -> Iterator[tuple[dict[str, Any], WeightReader]]:
    with zipfile.ZipFile(path) as archive:
        names = set(archive.namelist())
        for needed in ("config.json", "model.weights.h5"):
            if needed not in names:
                raise SeqgenError(f"{path} has no {needed}: not a Keras 3 .keras file (or sharded weights, "
                                  "which seqgen does not read); save it with model.save('model.keras')")
        config = _json_object(path, _member(archive, "config.json", MAX_CONFIG_BYTES), "config.json")
        data = _member(archive, "model.weights.h5", MAX_FILE_BYTES)
    if not data.startswith(HDF5_MAGIC):
        raise SeqgenError(f"{path}: model.weights.h5 is not HDF5; save the model again")
    with h5py.File(io.BytesIO(data), "r") as weights:
        yield config, _archive_reader(path, weights, h5py)


def archive_names(kinds: Sequence[str]) -> list[str]:
    """The names a .keras archive files layers' weights under: not the layers' own names but their class
    in snake_case, numbered from the second of a class on (embedding, simple_rnn, simple_rnn_1, dense)."""
    used: dict[str, int] = {}
    names = []
    for kind in kinds:
        name = re.sub(r"\W+", "", kind)
        name = re.sub("([a-z])([A-Z])", r"\1_\2", re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)).lower()
        used[name] = used.get(name, -1) + 1
        names.append(f"{name}_{used[name]}" if used[name] else name)
    return names


def _member(archive: zipfile.ZipFile, name: str, limit: int) -> bytes:
    """A zip member's bytes, read no further than `limit` whatever its header claims."""
    with archive.open(name) as member:
        data = member.read(limit + 1)
    if len(data) > limit:
        raise SeqgenError(f"{archive.filename}: {name} is larger than {limit} bytes; is it the right file?")
    return data


def _json_object(path: Path, data: bytes | str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        raise SeqgenError(f"{path}: {what} is not valid JSON; save the model again") from None
    if not isinstance(value, dict):
        raise SeqgenError(f"{path}: {what} is not a JSON object; save the model again")
    return value


def _legacy_config(path: Path, weights: h5py.File) -> dict[str, Any]:
    text = weights.attrs.get("model_config")
    if text is None:
        raise SeqgenError(f"{path} holds weights only (no model_config): save the whole model with "
                          "model.save('model.h5'), not save_weights")
    if isinstance(text, bytes | np.bytes_):
        text = bytes(text).decode("utf-8", "replace")
    if not isinstance(text, str) or len(text) > MAX_CONFIG_BYTES:
        raise SeqgenError(f"{path}: model_config is not a JSON text of at most {MAX_CONFIG_BYTES} bytes")
    return _json_object(path, text, "model_config")


def _legacy_reader(path: Path, weights: h5py.File) -> WeightReader:
    """Legacy .h5: model_weights/<layer> lists its arrays, in order, in the attribute weight_names."""
    import h5py

    def read(layer: str, _: str, shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
        group = _hard(path, weights, ["model_weights", layer], h5py.Group)
        names = [bytes(n).decode("utf-8", "replace") if isinstance(n, bytes | np.bytes_) else str(n)
                 for n in group.attrs.get("weight_names", [])[: len(shapes) + 1]]
        datasets = [_hard(path, group, name.split("/"), h5py.Dataset) for name in names]
        return _arrays(path, layer, datasets, shapes)

    return read


def _archive_reader(path: Path, weights: h5py.File, h5py: Any) -> WeightReader:
    """.keras: layers/<archive name>/vars/0.., and the same under a wrapped cell or layer (RNN, TimeDistributed)."""

    def read(layer: str, archive_name: str, shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
        datasets = list(_vars(path, _hard(path, weights, ["layers", archive_name], h5py.Group), h5py, 0))
        return _arrays(path, layer, datasets, shapes)

    return read


def _vars(path: Path, group: h5py.Group, h5py: Any, depth: int) -> Iterator[h5py.Dataset]:
    if depth > 4:
        raise SeqgenError(f"{path}: weights are nested deeper than a Keras layer's; save the model again")
    if "vars" in group:
        found = _hard(path, group, ["vars"], h5py.Group)
        if len(found) > 16:
            raise SeqgenError(f"{path}: layer {group.name} has {len(found)} weights; no supported layer has so many")
        for index in range(len(found)):
            yield _hard(path, found, [str(index)], h5py.Dataset)
    for name in sorted(group):
        if name != "vars":
            yield from _vars(path, _hard(path, group, [name], h5py.Group), h5py, depth + 1)


def _hard(path: Path, group: h5py.Group, parts: list[str], kind: type) -> Any:
    """group/parts..., following hard links only (never a soft or external link to another file)."""
    import h5py

    node = group
    for part in parts:
        link = node.get(part, getlink=True) if isinstance(node, h5py.Group) else None
        if not isinstance(link, h5py.HardLink):
            where = "/".join(parts)
            problem = "missing" if link is None else "a link (only plain entries are read)"
            raise SeqgenError(f"{path}: weights entry {where!r} under {group.name} is {problem}; save the model again")
        node = node[part]
    if not isinstance(node, kind):
        raise SeqgenError(f"{path}: weights entry {node.name} is not a {kind.__name__}; save the model again")
    return node


def _arrays(path: Path, layer: str, datasets: list[h5py.Dataset],
            shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
    """Each dataset as float32, after checking its count, shape, type and storage (never external files)."""
    if len(datasets) != len(shapes):
        raise SeqgenError(f"{path}: layer {layer!r} stores {len(datasets)} weight arrays but its config implies "
                          f"{len(shapes)}; the file is damaged or from an unsupported Keras variant")
    arrays = []
    for dataset, shape in zip(datasets, shapes):
        if tuple(dataset.shape) != tuple(shape) or dataset.dtype.kind != "f":
            raise SeqgenError(f"{path}: layer {layer!r} weight {dataset.name} is {dataset.dtype} {list(dataset.shape)}"
                              f", its config implies float {list(shape)}; the file is damaged or mismatched")
        if dataset.is_virtual or dataset.external:
            raise SeqgenError(f"{path}: weight {dataset.name} refers to data in other files; save the model again")
        array = np.asarray(dataset[()], dtype=np.float32)
        if not np.isfinite(array).all():
            raise SeqgenError(f"{path}: layer {layer!r} has non-finite weights (inf/NaN); the training diverged")
        arrays.append(array)
    return arrays


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
