"""The notebooks of notebooks/ run top to bottom on the committed data (headless, nbclient, this venv's
kernel), every cell tagged ``figure`` produces a PNG, and the committed notebooks are stripped
(no outputs, no execution counts: the pre-commit-style check)."""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from run_notebooks import FIGURES, KERNEL, NOTEBOOKS, execute, notebook_paths, tagged

PATHS = notebook_paths()
DATA_BUDGET_BYTES = 2_000_000


def test_the_five_notebooks_are_there_with_their_figure():
    assert [p.stem for p in PATHS] == sorted(FIGURES)


@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_committed_notebooks_are_stripped_and_open_with_their_story(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [], f"{path.name} cell {i}: committed with outputs (strip them)"
            assert cell.execution_count is None, f"{path.name} cell {i}: committed with an execution count"
    first = nb.cells[0]
    assert first.cell_type == "markdown" and "What this reproduces" in first.source and "Time here" in first.source
    assert len(tagged(nb, "parameters")) == 1 and "OUT_DIR" in nb.cells[tagged(nb, "parameters")[0]].source
    assert tagged(nb, "figure"), f"{path.name}: no cell tagged 'figure'"


def test_notebook_data_stays_small():
    size = sum(p.stat().st_size for p in (NOTEBOOKS / "data").rglob("*") if p.is_file())
    assert 0 < size < DATA_BUDGET_BYTES


def test_the_kernel_is_this_venvs_python():
    # sys.prefix, not the resolved executable: a venv's python is a symlink to the system's
    code = "import sys, sample_smart, nbclient; print(sys.prefix); print(sample_smart.__file__)"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(code)])
    NotebookClient(nb, timeout=120, kernel_name=KERNEL).execute()
    prefix, package = nb.cells[0].outputs[0]["text"].split()
    assert Path(prefix) == Path(sys.prefix) and sys.prefix != sys.base_prefix
    assert Path(package).parent == NOTEBOOKS.parent / "sample_smart"


@pytest.mark.slow
@pytest.mark.parametrize("path", PATHS, ids=lambda p: p.stem)
def test_notebook_runs_and_draws_its_figures(path, tmp_path):
    nb = execute(path, tmp_path)  # raises CellExecutionError on an error cell
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        errors = [o for o in cell.outputs if o.output_type == "error"]
        assert not errors, f"{path.name} cell {i}: {errors[0].get('ename')}: {errors[0].get('evalue')}"
    for i in tagged(nb, "figure"):
        images = [o for o in nb.cells[i].outputs if "image/png" in o.get("data", {})]
        assert images, f"{path.name} cell {i} (tagged figure) produced no image/png output"
    figure = tmp_path / FIGURES[path.stem]
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
