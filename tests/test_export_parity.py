"""The parity test: the exported ONNX step graph computes what the torch CharRNN computes.

Every cell, one and two layers, several batch and time sizes, prompt processing in one call and
step by step with carried state, through the runtime's own Session.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import seqgen  # noqa: E402
from seqgen.cells import NAMES  # noqa: E402
from seqgen.train import CharRNN, export_onnx  # noqa: E402

TOLERANCE = 1e-4


@pytest.mark.parametrize("cell", NAMES)
@pytest.mark.parametrize("layers", [1, 2])
def test_runtime_matches_torch(tmp_path, cell: str, layers: int) -> None:
    torch.manual_seed(layers)
    vocab = seqgen.Vocabulary.fit(["the quick brown fox jumps over the lazy dog"])
    net = CharRNN(vocab.size, cell, embedding_size=12, hidden_size=24, layers=layers).eval()
    metadata = export_onnx(net, vocab, tmp_path / "m.onnx")
    assert float(metadata["parity_max_abs_diff"]) <= TOLERANCE
    model = seqgen.load(tmp_path / "m.onnx")

    for batch, steps in ((1, 1), (1, 40), (3, 7)):
        tokens = torch.randint(1, vocab.size, (batch, steps))
        with torch.no_grad():
            full = torch.cat([torch.zeros(batch, 1, dtype=torch.long), tokens], dim=1)  # boundary first
            expected, _ = net(full)
        # whole sequence in one call
        session = model.session(batch)
        got = np.concatenate(list(session.chunk_logits(tokens.numpy())), axis=1)
        assert np.abs(got - expected.numpy()).max() <= TOLERANCE
        # one token per call, state carried between calls
        stepper = model.session(batch)
        stepped = [stepper.logits()]
        for t in range(steps):
            stepper.feed_tokens(tokens[:, t : t + 1].numpy())
            stepped.append(stepper.logits())
        assert np.abs(np.stack(stepped, axis=1) - expected.numpy()).max() <= TOLERANCE
