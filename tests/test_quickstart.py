"""experiments/quickstart.ipynb runs top to bottom (tiny random model) and prints what each section shows."""

import os

import nbclient
import nbformat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_quickstart_notebook_executes(monkeypatch):
  monkeypatch.delenv("ZAYA_CHECKPOINT", raising=False)
  monkeypatch.setenv("PYTHONPATH", ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
  notebook = nbformat.read(os.path.join(ROOT, "experiments", "quickstart.ipynb"), as_version=4)
  nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3",
                          resources={"metadata": {"path": ROOT}}).execute()
  text = "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                 for output in cell.outputs)
  assert "logits (1, 49, 272)" in text and "layer 0: " in text
  assert "round 1: " in text and "candidates [[" in text
  assert "| toy (built-in held-out problems) | toy_rsa_small | T=1 N=4 C=2 β=16 τ=8 | 1 | avg@4" in text
