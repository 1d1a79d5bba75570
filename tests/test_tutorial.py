"""The tutorial notebook runs top to bottom (at tiny sizes), and the committed copy, which the
docs site shows, holds the outputs of a full execution."""

from __future__ import annotations

import importlib.util
import shutil

import nbformat
import pytest

from docs_harness import ROOT, make_sandbox

TINY = "N_TRAIN, N_TEST, EPOCHS = 16, 8, 1\nSWEEP_EPOCHS = 1"


def _execute_module(sandbox):
    spec = importlib.util.spec_from_file_location("execute_tutorial", sandbox / "docs" / "execute_tutorial.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_the_tutorial_runs_top_to_bottom(tmp_path, monkeypatch):
    sandbox = make_sandbox(tmp_path / "clone")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("WANDB_MODE", "disabled")
    executed = _execute_module(sandbox).execute(sandbox / "docs" / "tutorial.ipynb", parameters=TINY,
                                                out=tmp_path / "executed.ipynb")  # fmt: skip
    nb = nbformat.read(executed, as_version=4)
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    assert sum("image/png" in o.get("data", {}) for o in outputs) == 2  # the heatmap and the front
    text = "".join(o.get("text", "") for o in outputs)
    assert "largest logit difference, bridge against plain model" in text
    assert (sandbox / "outputs" / "tutorial" / "sweep" / "pareto.json").exists()
    shutil.rmtree(sandbox)


def test_the_committed_tutorial_is_executed_in_order_without_errors():
    nb = nbformat.read(ROOT / "docs" / "tutorial.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1))
    assert all(o.output_type != "error" for c in code for o in c.outputs)
    assert sum("image/png" in o.get("data", {}) for c in code for o in c.outputs) == 2
