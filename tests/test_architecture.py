"""The package's shape: every module imports on its own (no import loops), the path of
one-line errors stays free of torch, and the tables that name methods agree."""

from __future__ import annotations

import ast
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "interventions"

# Modules the entry points import before the config is checked: a mistake is reported
# before torch (seconds of imports) loads, so none of them may pull it in.
TORCH_FREE = (
    "interventions.cli",
    "interventions.cli.configs",
    "interventions.cli.entry",
    "interventions.cli.inputs",
    "interventions.cli.preflight",
    "interventions.console",
    "interventions.entry_points",
    "interventions.errors",
    "interventions.hub",
    "interventions.interrupts",
    "interventions.io",
    "interventions.methods",
    "interventions.methods.registry",
    "interventions.reach",
    "interventions.rundir",
    "interventions.sites",
    "interventions.spec",
    "interventions.sweeps.jobs",
)

# The layers of docs/architecture.md, from the bottom up: a module may import its own layer
# and the layers below. Keys are the first names under `interventions.` (or a module path).
LAYERS = (
    ("errors", "io", "rundir", "interrupts", "console", "spec", "sites", "toyworld.world", "reach", "hub",
     "entry_points"),
    ("models", "tokenizer", "forward", "toyworld", "tasks"),
    ("methods", "objective", "metrics", "numerics", "obsprop", "attribution", "generation", "steering"),
    ("training", "export", "hf", "plain", "controlvector", "evaluation", "loggers", "threads"),
    ("runs", "sweeps", "reports", "circuits"),
    ("cli", "__main__", ""),
)


def layer_of(module: str) -> int:
    """The layer index of `interventions.<...>` (the package itself is the top)."""
    rest = module.split(".")[1:]
    for depth in (2, 1):
        key = ".".join(rest[:depth]) if len(rest) >= depth else None
        for index, names in enumerate(LAYERS):
            if key is not None and key in names:
                return index
    if not rest:
        return len(LAYERS) - 1
    raise KeyError(f"{module} is in no layer of docs/architecture.md")


def package_imports(path: Path) -> list[tuple[str, int]]:
    """The package modules `path` imports, with their line numbers."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("interventions"):
            found.append((node.module, node.lineno))
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names if a.name.startswith("interventions")]
    return found


# Runs in a fresh interpreter. It loads the heavy third-party libraries once, then forks one
# child per module of the package; each child starts with no module of the package loaded
# (checked) and imports its one module alone, so a module that only imports after another
# one (a loop, a missing import) fails in its child. Forking keeps this to seconds where
# one cold interpreter per module would cost minutes of torch imports.
IMPORT_EACH = r"""
import importlib, json, os, sys, traceback
sys.path.insert(0, sys.argv[1])
if sys.argv[3] == "preload":
    import hydra, lightning.pytorch, matplotlib.pyplot, omegaconf, safetensors.torch, scipy.optimize  # noqa
    import scipy.stats, tokenizers, torch, transformer_lens.model_bridge, transformers  # noqa
assert not any(m == "interventions" or m.startswith("interventions.") for m in sys.modules)
failed = {}
for name in json.loads(sys.argv[2]):
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read)
        code = 0
        try:
            assert not any(m.startswith("interventions") for m in sys.modules), "package already loaded"
            importlib.import_module(name)
        except BaseException:
            os.write(write, traceback.format_exc().encode())
            code = 1
        os._exit(code)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        message = pipe.read().decode()
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        failed[name] = message or f"exit status {status}"
print(json.dumps(failed))
"""


# modules that need an optional extra (pyproject's optional-dependencies): module -> what it imports
OPTIONAL = {"interventions.circuits.rasp": "tracr"}


def package_modules() -> list[str]:
    names = []
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.append(".".join(parts))
    return names


def test_imports_point_down_the_layers():
    upward = []
    for name, path in zip(package_modules(), sorted(PACKAGE.rglob("*.py"))):
        for target, line in package_imports(path):
            if layer_of(target) > layer_of(name):
                upward.append(f"{path.relative_to(ROOT)}:{line} imports {target} from a higher layer")
    assert upward == []


def test_the_layer_check_sees_an_upward_import():
    assert layer_of("interventions.sites") < layer_of("interventions.forward") < layer_of("interventions.objective")
    assert layer_of("interventions.toyworld.world") < layer_of("interventions.toyworld.train")
    assert layer_of("interventions.reports.plots") > layer_of("interventions.obsprop.analysis")
    with pytest.raises(KeyError):
        layer_of("interventions.unheard_of")


def test_the_module_list_covers_the_package():
    names = package_modules()
    assert "interventions" in names and "interventions.training.train" in names
    assert len(names) == len(list(PACKAGE.rglob("*.py")))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks one child per module")
def test_every_module_imports_alone_in_a_fresh_interpreter():
    # a module of an optional extra imports where its extra is installed
    names = [n for n in package_modules() if OPTIONAL.get(n) is None or importlib.util.find_spec(OPTIONAL[n]) is not None]
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH, str(ROOT), json.dumps(names), "preload"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    failed = json.loads(out.stdout.strip().splitlines()[-1])
    assert failed == {}, "\n\n".join(f"{name}:\n{message}" for name, message in failed.items())


def test_the_import_check_catches_a_module_that_fails_on_its_own(tmp_path):
    """The check above can fail: a module importing a name its package does not (yet) have
    is reported, with its traceback."""
    package = tmp_path / "loopy"
    package.mkdir()
    (package / "__init__.py").write_text("from loopy.a import A\nB = 1\n")
    (package / "a.py").write_text("from loopy import B\nA = B\n")
    out = subprocess.run(
        [sys.executable, "-c", IMPORT_EACH.replace('"interventions', '"loopy'), str(tmp_path), json.dumps(["loopy.a"]), "-"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    failed = json.loads(out.stdout.strip().splitlines()[-1])
    assert list(failed) == ["loopy.a"] and "partially initialized" in failed["loopy.a"]


def test_the_path_of_one_line_errors_does_not_load_torch():
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        + "".join(f"import {name};" for name in TORCH_FREE)
        + "heavy = [m for m in ('torch', 'lightning', 'transformer_lens') if m in sys.modules];"
        + "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(ROOT)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"loaded before the config is checked: {out.stdout.strip()}"


def test_every_method_has_its_config_and_its_config_lists_its_options():
    """conf/intervention/<name>.yaml for every built-in method, naming it, and listing every
    option of its class with the class's default (the YAML documents them)."""
    from dataclasses import fields

    from omegaconf import OmegaConf

    from interventions.methods import all_methods
    from interventions.methods.base import Method

    methods = all_methods()
    configs = {path.stem: OmegaConf.to_container(OmegaConf.load(path)) for path in (ROOT / "conf" / "intervention").glob("*.yaml")}
    assert set(configs) == set(methods)
    for name, cls in methods.items():
        options = cls.Options(method=name)
        assert configs[name]["method"] == name
        assert set(configs[name]) == {f.name for f in fields(cls.Options)}, name
        for key, value in configs[name].items():
            want = getattr(options, key)
            assert value == (list(want) if isinstance(want, tuple) else want) or (key == "lr" and value == cls.default_lr), (name, key)
        assert cls.display_name() and cls.value_label, name
        if not cls.trained:
            assert cls.fit is not Method.fit, f"{name} is training-free but does not fit itself"