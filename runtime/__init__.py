"""seqgen: small character-level recurrent models, run from one ONNX file with onnxruntime and numpy.

    import seqgen
    model = seqgen.load()                 # the shipped default model
    model.predict("To be or not to b")    # [('e', 0.85), ...]
    model.generate("ROMEO:", 200, temperature=0.8, seed=1)
"""

from __future__ import annotations

from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import SeqgenError

if TYPE_CHECKING:
    from .model import Model, Score
    from .modelfile import shipped_models
    from .sampling import Sampler, Sampling
    from .session import Session
    from .vocab import BOUNDARY, Vocabulary

__version__ = "0.1.0"
__all__ = ["BOUNDARY", "Model", "Sampler", "Sampling", "Score", "SeqgenError", "Session", "Vocabulary", "load",
           "shipped_models"]

# Imported on first use, so that `import seqgen` (and `seqgen-run --help`) stays cheap: onnxruntime
# and numpy load only when a model is.
_LAZY = {"Model": "model", "Score": "model", "shipped_models": "modelfile", "Sampler": "sampling",
         "Sampling": "sampling", "Session": "session", "BOUNDARY": "vocab", "Vocabulary": "vocab"}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'seqgen' has no attribute {name!r}")


def load(path: str | Path | None = None, *, threads: int = 1, verify: bool = True) -> Model:
    """Load a model file, or a shipped model by short name; None loads the default model.

    `threads` is onnxruntime's intra-op thread count (1 is fastest on small machines; at most the CPUs
    this process may use); `verify` checks the file, weights and metadata, against its recorded checksum.
    """
    from .model import Model
    from .modelfile import read

    return Model(read(path, verify=verify), threads=threads)
