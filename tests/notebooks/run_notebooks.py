"""Execute the notebooks of ``notebooks/`` headless (nbclient, the ``python3`` kernel of this venv's
ipykernel), papermill-style: a cell tagged ``injected-parameters`` is inserted after the cell tagged
``parameters`` and sets ``OUT_DIR`` (and any override), so the committed notebooks stay stripped and
their figures go to a folder of the caller's choosing. The kernel's working directory is
``notebooks/``, as when a user opens them there.

    .venv/bin/python tests/notebooks/run_notebooks.py [--figures] [NAME ...]

``--figures`` copies one figure per notebook (``FIGURES``) to ``notebooks/figures/<stem>.png``
(the README's figures); without it the executed notebooks are only checked.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[2]
NOTEBOOKS = REPO / "notebooks"
CELL_TIMEOUT_S = 420  # per cell; notebook 02 loads the model (slow on a loaded 2-core machine)
KERNEL = "python3"

# The README's figure of each notebook: a file its run writes into OUT_DIR.
FIGURES = {
    "01_calibration_grid": "reference_grid_heatmap.png",
    "02_calibrated_topk": "kept_set_sizes.png",
    "03_confidence_bins": "confidence_bin_curves.png",
    "04_low_confidence_ranks": "low_confidence.png",
    "05_decoders_compared": "decoders_compared.png",
}


def notebook_paths() -> list[Path]:
    return sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def tagged(nb, tag: str) -> list[int]:
    return [i for i, c in enumerate(nb.cells) if tag in c.get("metadata", {}).get("tags", [])]


def inject_parameters(nb, params: dict) -> None:
    """Insert ``NAME = repr(value)`` lines after the one ``parameters`` cell (papermill's rule)."""
    where = tagged(nb, "parameters")
    if len(where) != 1:
        raise ValueError(f"expected exactly one cell tagged 'parameters', found {len(where)}")
    cell = nbformat.v4.new_code_cell("\n".join(f"{k} = {v!r}" for k, v in params.items()))
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(where[0] + 1, cell)


def execute(path: Path, out_dir: Path, **params) -> nbformat.NotebookNode:
    """The executed notebook (raises ``nbclient.exceptions.CellExecutionError`` on an error cell)."""
    nb = nbformat.read(path, as_version=4)
    inject_parameters(nb, {"OUT_DIR": str(out_dir), **params})
    NotebookClient(
        nb, timeout=CELL_TIMEOUT_S, kernel_name=KERNEL, resources={"metadata": {"path": str(NOTEBOOKS)}}
    ).execute()
    return nb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("names", nargs="*", help="notebook stems (default: all)")
    ap.add_argument("--figures", action="store_true", help="copy one figure per notebook to notebooks/figures/")
    args = ap.parse_args()
    paths = [p for p in notebook_paths() if not args.names or p.stem in args.names]
    with tempfile.TemporaryDirectory() as tmp:
        for path in paths:
            t0 = time.perf_counter()
            out = Path(tmp) / path.stem
            executed = execute(path, out)
            nbformat.write(executed, out / path.name)
            print(f"{path.name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            if args.figures:
                dest = NOTEBOOKS / "figures" / f"{path.stem}.png"
                dest.parent.mkdir(exist_ok=True)
                shutil.copyfile(out / FIGURES[path.stem], dest)
                print(f"  -> {dest.relative_to(REPO)}", file=sys.stderr)


if __name__ == "__main__":
    main()
