"""import-keras: a Keras Sequential character model becomes a seqgen model file.

Embedding, one or more SimpleRNN/LSTM/GRU layers, then Dense or TimeDistributed(Dense) (softmax or
linear): the weights are mapped onto a CharRNN in PyTorch's layout and written by the same exporter,
with the same parity check, as a trained model. Anything else is refused naming the layer and why.
See docs/keras.md.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqgen.cells import CELLS
from seqgen.errors import SeqgenError
from seqgen.modelfile import KERAS_INPUT_LENGTH_KEY, MAX_HIDDEN, MAX_LAYERS, MAX_VOCAB, MAX_WINDOW
from seqgen.vocab import Vocabulary

from .export import export_onnx
from .keras_file import WeightReader, archive_names, open_keras
from .keras_vocab import tokenizer_vocabulary
from .models import MAX_PARAMETERS, CharRNN, parameter_count

MAX_KERAS_LAYERS = 256
RECURRENT = {"SimpleRNN": "rnn_tanh", "LSTM": "lstm", "GRU": "gru"}
"""Keras' recurrent layers and a seqgen cell of the same gate blocks (the cell table holds their count)."""
PASSTHROUGH = ("Dropout", "SpatialDropout1D")
"""Layers that do nothing at inference."""
# Keras' gate blocks in PyTorch's order: LSTM i,f,c,o is torch's i,f,g,o; GRU z,r,h -> torch r,z,n.
_TORCH_ORDER = {"SimpleRNN": (0,), "LSTM": (0, 1, 2, 3), "GRU": (1, 0, 2)}
_REFUSED = {
    "Bidirectional": "it also reads the text backwards, from the end; a left-to-right step graph cannot",
    "Masking": "masking skips time steps, while seqgen feeds every token; remove it and retrain",
}


@dataclass(frozen=True)
class Layer:
    """One Keras layer of the config: its name, class and options (a JSON object)."""

    name: str
    kind: str
    options: dict[str, Any]
    archive_name: str = ""  # where a .keras archive keeps its weights

    def option(self, key: str, default: object = None) -> Any:
        return self.options.get(key, default)

    def refuse(self, reason: str) -> SeqgenError:
        return SeqgenError(f"layer {self.name!r} ({self.kind}): {reason}")


@dataclass(frozen=True)
class Plan:
    """What the checked config describes: the CharRNN to build and where its weights are."""

    embedding: Layer
    recurrent: list[Layer]
    head: Layer  # the Dense layer's options
    head_weights: Layer  # the layer that holds its weights (a TimeDistributed wrapper)
    input_length: int | None

    @property
    def kind(self) -> str:
        return self.recurrent[0].kind

    @property
    def cell(self) -> str:
        if self.kind == "SimpleRNN":
            return "rnn_" + self.recurrent[0].option("activation", "tanh")
        return self.kind.lower()


def import_keras(model_path: str | Path, out: str | Path, *, tokenizer: str | Path | None = None,
                 chars: str | None = None, lowercase: bool = False) -> dict[str, str]:
    """Write the Keras model at `model_path` as the seqgen model `out`; return its metadata.

    The vocabulary comes from `tokenizer` (the JSON of Keras' `Tokenizer.to_json()`) or `chars`
    (the characters of ids 1, 2, ...). Raises SeqgenError for anything it cannot import exactly.
    """
    model_path, out = Path(model_path), Path(out)
    if (tokenizer is None) == (chars is None):
        raise SeqgenError("give the vocabulary once: --tokenizer TOKENIZER.json (tokenizer.to_json()) or --chars")
    if tokenizer is not None and lowercase:
        raise SeqgenError("--lowercase goes with --chars; a tokenizer brings its own lowercasing")
    for given in (model_path, *([Path(tokenizer)] if tokenizer else [])):
        if out.resolve() == given.resolve():
            raise SeqgenError(f"--out {out} would overwrite the input {given}; choose another file")
    vocab = tokenizer_vocabulary(Path(tokenizer)) if tokenizer else chars_vocabulary(chars or "", lowercase)
    with open_keras(model_path) as (config, read_weights):
        plan = check_structure(model_path, config)
        check_sizes(plan, vocab)
        model = build_model(plan, read_weights)
    facts: dict[str, object] = {"source": {"keras_file": model_path.name, "keras_sha256": _sha256(model_path),
                                           "tokenizer": Path(tokenizer).name if tokenizer else None}}
    if plan.input_length is not None:
        facts[KERAS_INPUT_LENGTH_KEY] = plan.input_length
    return export_onnx(model, vocab, out, training=facts)


def chars_vocabulary(chars: str, lowercase: bool) -> Vocabulary:
    """--chars: the characters of ids 1..N in order; unknown characters are dropped, as Keras does."""
    if not chars:
        raise SeqgenError("--chars is empty; give the characters of ids 1, 2, ... in order")
    if len(chars) >= MAX_VOCAB:
        raise SeqgenError(f"--chars has {len(chars)} characters; at most {MAX_VOCAB - 1}")
    if len(set(chars)) != len(chars):
        raise SeqgenError("--chars repeats a character; each id needs its own character")
    order = "codepoint" if list(chars) == sorted(chars) else "frequency"
    return Vocabulary(tuple(chars), lowercase=lowercase, order=order, unknown="skip")


def _layers(path: Path, config: dict[str, Any]) -> list[Layer]:
    kind = config.get("class_name")
    if kind != "Sequential":
        raise SeqgenError(f"{path}: the model is a {kind or 'unknown kind of'} model; seqgen imports Keras "
                          "Sequential models (one input, one output)")
    body = config.get("config")
    entries = body.get("layers") if isinstance(body, dict) else body  # Keras 2.0-2.2: the list itself
    if not isinstance(entries, list) or not entries or len(entries) > MAX_KERAS_LAYERS:
        raise SeqgenError(f"{path}: the config has no list of 1..{MAX_KERAS_LAYERS} layers; save the model again")
    for entry in entries:
        options = entry.get("config") if isinstance(entry, dict) else None
        if not isinstance(options, dict) or not isinstance(entry.get("class_name"), str):
            raise SeqgenError(f"{path}: a layer entry has no class_name and config; save the model again")
    kinds = [entry["class_name"] for entry in entries if entry["class_name"] != "InputLayer"]
    stored = iter(archive_names(kinds))
    return [Layer(str(entry["config"].get("name", "?")), entry["class_name"], entry["config"],
                  "" if entry["class_name"] == "InputLayer" else next(stored)) for entry in entries]


def check_structure(path: Path, config: dict[str, Any]) -> Plan:
    """The Plan of a Sequential config, or a SeqgenError naming the first layer seqgen cannot import."""
    layers = _layers(path, config)
    length = _input_length(path, config, layers)
    layers = [layer for layer in layers if layer.kind != "InputLayer" and layer.kind not in PASSTHROUGH]
    if not layers:
        raise SeqgenError(f"{path}: the model has no layers to import; seqgen imports Embedding, SimpleRNN/LSTM/GRU "
                          "and Dense")
    if layers[0].kind != "Embedding":
        raise _refusal(layers[0])
    embedding, *rest = layers
    if embedding.option("mask_zero"):
        raise embedding.refuse("mask_zero=True makes Keras skip id 0 (padding), while seqgen feeds id 0 as its "
                               "boundary token at the start of every text; retrain with mask_zero=False")
    _no_lora(embedding)
    recurrent = []
    while rest and rest[0].kind in RECURRENT:
        recurrent.append(_check_recurrent(rest.pop(0)))
    if not recurrent:
        if rest:
            raise _refusal(rest[0])
        raise SeqgenError(f"{path}: no recurrent layer after the Embedding; seqgen imports SimpleRNN, LSTM or GRU")
    if not rest:
        raise SeqgenError(f"{path}: no Dense output layer after {recurrent[-1].name!r}")
    head_weights = head = rest[0]
    if head.kind == "TimeDistributed":
        inner = head.option("layer") if isinstance(head.option("layer"), dict) else {}
        if inner.get("class_name") != "Dense" or not isinstance(inner.get("config"), dict):
            raise head.refuse("it wraps something other than a Dense layer")
        head = Layer(head.name, "Dense", inner["config"])
    if head.kind != "Dense":
        raise _refusal(head)
    if len(rest) > 1:
        raise _refusal(rest[1]) if rest[1].kind != "Activation" else rest[1].refuse(
            "a separate activation layer after the output; use Dense(..., activation='softmax') and save again")
    if head.option("activation") not in ("softmax", "linear"):
        raise head.refuse(f"activation {head.option('activation')!r}; the output layer must be softmax "
                          "(or linear: logits)")
    _no_lora(head)
    _same_stack(recurrent)
    for layer in recurrent[:-1]:
        if not layer.option("return_sequences"):
            raise layer.refuse("return_sequences=False below another recurrent layer")
    return Plan(embedding, recurrent, head, head_weights, length)


def _input_length(path: Path, config: dict[str, Any], layers: list[Layer]) -> int | None:
    """The window length Keras' predict sees: from the input shape, wherever this Keras version keeps it."""
    body = config.get("config") if isinstance(config.get("config"), dict) else {}
    build = config.get("build_config") if isinstance(config.get("build_config"), dict) else {}
    shapes = [layer.option(key) for layer in layers[:2] for key in ("batch_shape", "batch_input_shape")]
    shapes += [body.get("build_input_shape"), build.get("input_shape")]
    shapes = [shape for shape in shapes if shape is not None]
    if any(not isinstance(shape, list) or len(shape) != 2 for shape in shapes):
        raise SeqgenError(f"{path}: the model's input is not [batch, time] character ids; seqgen imports "
                          "one sequence of ids per example")
    lengths = [shape[1] for shape in shapes]
    lengths += [layer.option("input_length") for layer in layers if layer.kind == "Embedding"]
    lengths = [length for length in lengths if length is not None]
    if any(type(length) is not int or not 1 <= length <= MAX_WINDOW for length in lengths):
        raise SeqgenError(f"{path}: an input length of {lengths} is not an integer in 1..{MAX_WINDOW}")
    if len(set(lengths)) > 1:
        raise SeqgenError(f"{path}: the config gives conflicting input lengths {sorted(set(lengths))}")
    return lengths[0] if lengths else None


def _check_recurrent(layer: Layer) -> Layer:
    for option, reason in (
        ("stateful", "stateful=True carries state from one predict call to the next, so its answers depend on "
                     "earlier calls; rebuild it with stateful=False, load the weights, and save again"),
        ("go_backwards", "go_backwards=True reads the text from its end"),
        ("return_state", "return_state=True gives the model several outputs"),
        ("time_major", "time_major=True is not a character model's layout"),
    ):
        if layer.option(option):
            raise layer.refuse(reason)
    allowed = ("tanh", "relu") if layer.kind == "SimpleRNN" else ("tanh",)
    if layer.option("activation", "tanh") not in allowed:
        raise layer.refuse(f"activation {layer.option('activation')!r}; seqgen supports {' or '.join(allowed)}")
    if layer.kind != "SimpleRNN" and layer.option("recurrent_activation", "sigmoid") != "sigmoid":
        raise layer.refuse(f"recurrent_activation {layer.option('recurrent_activation')!r}; seqgen's gates are "
                           "'sigmoid' (Keras' default since 2.3)")
    if layer.kind == "GRU" and not layer.option("reset_after", False):
        raise layer.refuse("reset_after=False applies the reset gate before the recurrent weights, which "
                           "PyTorch's and seqgen's GRU cannot compute; retrain with reset_after=True")
    units = layer.option("units")
    if isinstance(units, bool) or not isinstance(units, int) or not 1 <= units <= MAX_HIDDEN:
        raise layer.refuse(f"units {units!r} is not an integer in 1..{MAX_HIDDEN}")
    return layer


def _same_stack(recurrent: list[Layer]) -> None:
    """seqgen's stack is one cell type and one size, as PyTorch's multi-layer RNNs are."""
    if len(recurrent) > MAX_LAYERS:
        raise recurrent[MAX_LAYERS].refuse(f"more than {MAX_LAYERS} recurrent layers")
    first = recurrent[0]
    for layer in recurrent[1:]:
        for key in ("units", "activation"):
            if layer.kind != first.kind or layer.option(key) != first.option(key):
                raise layer.refuse(f"a {layer.kind} of {layer.option('units')} units ({layer.option('activation')}) "
                                   f"on a {first.kind} of {first.option('units')} ({first.option('activation')}); "
                                   "seqgen's stack is one cell type and size")


def _no_lora(layer: Layer) -> None:
    if layer.option("lora_rank"):
        raise layer.refuse("it carries LoRA weights; merge them (layer.enable_lora off) and save again")


def _refusal(layer: Layer) -> SeqgenError:
    reason = _REFUSED.get(layer.kind, "seqgen imports an Embedding, then SimpleRNN/LSTM/GRU layers, then Dense "
                                      "(or TimeDistributed(Dense)), plus Dropout")
    return layer.refuse(reason)


def _positive(layer: Layer, key: str, limit: int) -> int:
    value = layer.option(key)
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise layer.refuse(f"{key} {value!r} is not an integer in 1..{limit}")
    return value


def check_sizes(plan: Plan, vocab: Vocabulary) -> None:
    """The Embedding's ids and the Dense outputs must be exactly the vocabulary's ids 0..N."""
    ids = _positive(plan.embedding, "input_dim", MAX_VOCAB)
    width = _positive(plan.embedding, "output_dim", MAX_HIDDEN)
    outputs = _positive(plan.head, "units", MAX_VOCAB)
    units = plan.recurrent[0].option("units")
    for layer, count in ((plan.embedding, ids), (plan.head, outputs)):
        if count != vocab.size:
            what = "input_dim" if layer is plan.embedding else "units"
            raise layer.refuse(f"{what} {count} but the vocabulary has {vocab.size} ids (padding 0 and "
                               f"{vocab.size - 1} characters); give the tokenizer the model was trained with")
    parameters = parameter_count(_gates(plan.kind), vocab.size, width, units, len(plan.recurrent))
    if parameters > MAX_PARAMETERS:
        raise SeqgenError(f"the model has {parameters} parameters; seqgen imports character models of up to "
                          f"{MAX_PARAMETERS}")


def _gates(kind: str) -> int:
    """Gate blocks of a Keras recurrent layer, from the cell table."""
    return CELLS[RECURRENT[kind]].gates


def _shapes(layer: Layer, inputs: int) -> list[tuple[int, ...]]:
    """Keras' weight arrays of an RNN layer, in order: kernel, recurrent kernel, bias (GRU: 2 rows)."""
    units = layer.option("units")
    width = _gates(layer.kind) * units
    bias = [((2, width) if layer.kind == "GRU" else (width,))] if layer.option("use_bias", True) else []
    return [(inputs, width), (units, width), *bias]


def _torch_gates(matrix: np.ndarray, kind: str) -> torch.Tensor:
    """Keras [inputs, gates*units] (or a bias [gates*units]) as PyTorch's [gates*units, inputs], gates reordered."""
    blocks = np.split(matrix.T if matrix.ndim == 2 else matrix, len(_TORCH_ORDER[kind]))
    return torch.from_numpy(np.ascontiguousarray(np.concatenate([blocks[i] for i in _TORCH_ORDER[kind]])))


def build_model(plan: Plan, read_weights: WeightReader) -> CharRNN:
    """A CharRNN holding the Keras weights in PyTorch's layout."""
    vocab_size, embedding_size = plan.embedding.option("input_dim"), plan.embedding.option("output_dim")
    units = plan.recurrent[0].option("units")
    model = CharRNN(vocab_size, plan.cell, embedding_size, units, len(plan.recurrent)).eval()
    (table,) = read_weights(plan.embedding.name, plan.embedding.archive_name, [(vocab_size, embedding_size)])
    head_shapes = [(units, vocab_size)] + ([(vocab_size,)] if plan.head.option("use_bias", True) else [])
    head = read_weights(plan.head_weights.name, plan.head_weights.archive_name, head_shapes)
    with torch.no_grad():
        model.embedding.weight.copy_(torch.from_numpy(table))
        model.head.weight.copy_(torch.from_numpy(np.ascontiguousarray(head[0].T)))
        model.head.bias.copy_(torch.from_numpy(head[1]) if len(head) > 1 else torch.zeros(vocab_size))
        for index, layer in enumerate(plan.recurrent):
            shapes = _shapes(layer, units if index else embedding_size)
            kernel, recurrent, *bias = read_weights(layer.name, layer.archive_name, shapes)
            rows = np.zeros((2, _gates(layer.kind) * units), np.float32)
            if bias:  # GRU: input and recurrent bias rows; the others: one bias, on the input side
                rows[: len(bias[0]) if bias[0].ndim == 2 else 1] = bias[0]
            for name, value in (("weight_ih", kernel), ("weight_hh", recurrent), ("bias_ih", rows[0]),
                                ("bias_hh", rows[1])):
                getattr(model.rnn, f"{name}_l{index}").copy_(_torch_gates(value, layer.kind))
    return model


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(2**20), b""):
            digest.update(block)
    return digest.hexdigest()
