"""Execute the tutorial notebook, so that its outputs are those of a real run.

    python docs/execute_tutorial.py                  # docs/tutorial.ipynb in place, its own sizes
    python docs/execute_tutorial.py --out /tmp/t.ipynb --parameters "N_TRAIN, N_TEST, EPOCHS = 16, 8, 1"

The committed notebook was executed by the first command (`bash run.sh docs tutorial` runs it);
the docs site shows those outputs as they are (mkdocs-jupyter with `execute: false`), so building
the site never trains anything. The test suite runs the second form with tiny sizes
(tests/test_tutorial.py): `--parameters` replaces the source of the cell tagged `parameters`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nbformat
from nbclient import NotebookClient

TUTORIAL = Path(__file__).resolve().parent / "tutorial.ipynb"


def execute(notebook: Path = TUTORIAL, parameters: str | None = None, out: Path | None = None, timeout: int = 900) -> Path:
    """Run every cell of `notebook` in a fresh kernel, in the notebook's folder; write the executed
    copy to `out` (default: in place). A failing cell raises `nbclient.exceptions.CellExecutionError`."""
    nb = nbformat.read(notebook, as_version=4)
    if parameters is not None:
        cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        if len(cells) != 1:
            raise ValueError(f"{notebook} needs exactly one cell tagged 'parameters', found {len(cells)}")
        cells[0].source = parameters
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(notebook.parent)}}).execute()
    out = out or notebook
    nbformat.write(nb, out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notebook", type=Path, default=TUTORIAL)
    parser.add_argument("--parameters", help="Python source replacing the cell tagged 'parameters'")
    parser.add_argument("--out", type=Path, help="where to write the executed copy (default: in place)")
    args = parser.parse_args()
    print(execute(args.notebook, args.parameters, args.out))


if __name__ == "__main__":
    main()
