"""CharRNN: embedding, a stack of recurrent layers, and a linear head over the vocabulary."""

from __future__ import annotations

import torch
from torch import nn

from seqgen.cells import CELLS, NAMES
from seqgen.errors import SeqgenError

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]
"""[layers, batch, hidden] (LSTM: the pair hidden state, cell state)."""
MAX_PARAMETERS = 2**27
"""The most weights a model may have (512 MiB of float32, some 40 times the shipped Shakespeare model): each
size has its own limit, but together they could ask for terabytes, so the count is checked before torch
allocates anything."""


def parameter_count(gates: int, vocab_size: int, embedding_size: int, hidden_size: int, layers: int) -> int:
    """The weights of a CharRNN whose cell has `gates` gate blocks: embedding, recurrent layers (two biases per
    gate, as torch keeps them), head."""
    recurrent = sum(gates * hidden_size * ((hidden_size if layer else embedding_size) + hidden_size + 2)
                    for layer in range(layers))
    return vocab_size * embedding_size + recurrent + (hidden_size + 1) * vocab_size


class CharRNN(nn.Module):
    """A character model: token ids [batch, time] and a state in, logits [batch, time, vocab] and a state out."""

    def __init__(
        self,
        vocab_size: int,
        cell: str = "lstm",
        embedding_size: int = 64,
        hidden_size: int = 256,
        layers: int = 2,
        dropout: float = 0.0,
        forget_bias: float | None = None,
        output_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}; use one of {', '.join(NAMES)}")
        count = parameter_count(CELLS[cell].gates, vocab_size, embedding_size, hidden_size, layers)
        if count > MAX_PARAMETERS:
            raise SeqgenError(f"a {cell} of {layers} layer(s) of {hidden_size} units with embedding {embedding_size} "
                              f"and {vocab_size} ids has {count} parameters, more than the {MAX_PARAMETERS} seqgen "
                              "allows; choose a smaller --hidden, --layers or --embedding")
        self.cell = cell
        spec = CELLS[cell]
        self.vocab_size, self.embedding_size, self.hidden_size, self.layers = (
            vocab_size, embedding_size, hidden_size, layers)
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        self.rnn = getattr(nn, spec.torch_module)(embedding_size, hidden_size, num_layers=layers, batch_first=True,
                                                  dropout=dropout if layers > 1 else 0.0, **spec.torch_options)
        # Zaremba et al. (2014) drop every non-recurrent connection, the top layer's output too; torch's `dropout`
        # covers only those between layers. Identity at 0, so runs without it draw the same random numbers.
        self.output_dropout = nn.Dropout(output_dropout) if output_dropout else nn.Identity()
        self.head = nn.Linear(hidden_size, vocab_size)
        if spec.forget_gate is not None and forget_bias is not None:
            self._set_forget_bias(spec.forget_gate, forget_bias)

    @torch.no_grad()
    def _set_forget_bias(self, gate: int, value: float) -> None:
        """Start every layer's forget gate (torch's gate block `gate`) at `value` (Keras' unit_forget_bias, Gers et
        al. 2000): with 1 the cell keeps its memory until it learns to forget. torch's two biases are summed, so one
        holds `value`."""
        forget = slice(gate * self.hidden_size, (gate + 1) * self.hidden_size)
        for layer in range(self.layers):
            getattr(self.rnn, f"bias_ih_l{layer}")[forget] = value
            getattr(self.rnn, f"bias_hh_l{layer}")[forget] = 0.0

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        outputs, state = self.rnn(self.embedding(tokens), state)
        return self.head(self.output_dropout(outputs)), state

    def zero_state(self, batch_size: int) -> State:
        """The all-zero starting state, as the runtime uses."""
        states = tuple(torch.zeros(self.layers, batch_size, self.hidden_size) for _ in CELLS[self.cell].state_names)
        return states if len(states) > 1 else states[0]

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
