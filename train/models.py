"""CharRNN: embedding, a stack of recurrent layers, and a linear head over the vocabulary."""

from __future__ import annotations

import torch
from torch import nn

from seqgen.modelfile import CELLS

State = torch.Tensor | tuple[torch.Tensor, torch.Tensor]
"""[layers, batch, hidden] (LSTM: the pair hidden state, cell state)."""


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
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}; use one of {', '.join(CELLS)}")
        self.cell = cell
        self.vocab_size, self.embedding_size, self.hidden_size, self.layers = (
            vocab_size, embedding_size, hidden_size, layers)
        self.embedding = nn.Embedding(vocab_size, embedding_size)
        recurrent = {"lstm": nn.LSTM, "gru": nn.GRU}.get(cell, nn.RNN)
        extra = {"nonlinearity": cell.removeprefix("rnn_")} if recurrent is nn.RNN else {}
        self.rnn = recurrent(embedding_size, hidden_size, num_layers=layers, batch_first=True,
                             dropout=dropout if layers > 1 else 0.0, **extra)
        self.head = nn.Linear(hidden_size, vocab_size)
        if cell == "lstm" and forget_bias is not None:
            self._set_forget_bias(forget_bias)

    @torch.no_grad()
    def _set_forget_bias(self, value: float) -> None:
        """Start every LSTM layer's forget gate at `value` (Keras' unit_forget_bias, Gers et al. 2000): with 1 the
        cell keeps its memory until it learns to forget. torch's two biases are summed, so one holds `value`."""
        forget = slice(self.hidden_size, 2 * self.hidden_size)  # torch's gate order: input, forget, cell, output
        for layer in range(self.layers):
            getattr(self.rnn, f"bias_ih_l{layer}")[forget] = value
            getattr(self.rnn, f"bias_hh_l{layer}")[forget] = 0.0

    def forward(self, tokens: torch.Tensor, state: State | None = None) -> tuple[torch.Tensor, State]:
        outputs, state = self.rnn(self.embedding(tokens), state)
        return self.head(outputs), state

    def zero_state(self, batch_size: int) -> State:
        """The all-zero starting state, as the runtime uses."""
        zeros = torch.zeros(self.layers, batch_size, self.hidden_size)
        return (zeros, zeros.clone()) if self.cell == "lstm" else zeros

    @property
    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())
