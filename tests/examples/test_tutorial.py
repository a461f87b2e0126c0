"""The shipped tutorial notebook, executed end to end: afterwards the adapter knows what the base model did not."""

import re
from pathlib import Path

import nbformat
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parent.parent.parent / "examples"


def test_notebook_teaches_the_facts(data_dir: Path, monkeypatch):
    monkeypatch.setenv("TUNELOOP_DATA_DIR", str(data_dir))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # one thread in the kernel: on shared, oversubscribed cores two OpenMP threads spin-wait at every barrier (the
    # tutorial measured 546 s with 2 threads vs 60 s with 1 at load 10-15); its work is ~29 CPU-s single-threaded
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(EXAMPLES / "fine_tune_tutorial.ipynb", as_version=4)

    # started in examples/, as Jupyter does when the notebook is opened there
    NotebookClient(notebook, timeout=600, kernel_name="python3",
                   resources={"metadata": {"path": str(EXAMPLES)}}).execute()

    stdout = "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                     for output in cell.outputs if output.output_type == "stream" and output.name == "stdout")
    before = re.search(r"^Before fine-tuning: (.*)$", stdout, re.MULTILINE).group(1)
    after = re.search(r"^After fine-tuning: (.*)$", stdout, re.MULTILINE).group(1)
    for fact in ("developer advocate", "singlestore"):
        assert fact not in before.lower()
        assert fact in after.lower()
    losses = [float(loss) for loss in re.findall(r"^Epoch \d: loss ([\d.]+)", stdout, re.MULTILINE)]
    assert len(losses) == 3 and losses[0] > losses[1] > losses[2]
    assert not (data_dir / "versions" / "Pavanmodel").exists()  # the last cell deletes the adapter
