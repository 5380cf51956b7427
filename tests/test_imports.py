"""The runtime needs only onnxruntime, numpy and click: proven in a fresh interpreter and a bare venv."""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

USE_THE_RUNTIME = """
import sys
import seqgen
model = seqgen.load(sys.argv[1])
model.predict("the", 3)
model.generate("the", 20, temperature=0.8, top_k=5, seed=1)
model.score("the quick")
model.generate_batch(["a", "the"], 5)
session = model.session()
session.feed("the")
session.save_state()
heavy = sorted(name for name in ("torch", "onnx") if name in sys.modules)
print("heavy:", heavy)
"""


def test_runtime_never_imports_torch_or_onnx(tiny_model: Path) -> None:
    result = subprocess.run([sys.executable, "-c", USE_THE_RUNTIME, str(tiny_model)],
                            capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "heavy: []"


def test_runtime_works_in_a_venv_with_only_the_base_dependencies(tmp_path: Path, tiny_model: Path) -> None:
    """Install the project into a fresh venv (base dependencies only) and use it there."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(ROOT)],
                   check=True, env=environment, capture_output=True, timeout=600)
    installed = subprocess.run([python, "-m", "pip", "list", "--format=freeze"], check=True, env=environment,
                               capture_output=True, text=True).stdout.lower()
    assert "torch" not in installed and "onnx==" not in installed
    used = subprocess.run([python, "-c", USE_THE_RUNTIME, str(tiny_model)], capture_output=True, text=True,
                          env=environment, cwd=tmp_path)
    assert used.returncode == 0, used.stderr
    assert used.stdout.strip() == "heavy: []"
    cli = subprocess.run([env_dir / "bin" / "seqgen-run", "predict", "--model", str(tiny_model), "the"],
                         capture_output=True, text=True, env=environment, cwd=tmp_path)
    assert cli.returncode == 0, cli.stderr
