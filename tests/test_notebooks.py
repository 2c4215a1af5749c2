"""The notebooks execute headless (nbclient), each within its time budget."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def execute(name: str, budget_s: float) -> float:
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    start = time.perf_counter()
    nbclient.NotebookClient(nb, timeout=int(budget_s), kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    took = time.perf_counter() - start
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    return took


# Time limits here only stop a hung kernel; speed is measured in benchmarks/, not asserted in tests.


def test_steer_notebook_executes():
    execute("02_steer.ipynb", budget_s=600)


def test_extract_notebook_executes():
    execute("01_extract_vectors.ipynb", budget_s=600)


def test_recovery_notebook_executes():
    execute("03_recovery.ipynb", budget_s=600)
