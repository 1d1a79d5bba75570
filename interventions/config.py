"""Configuration checks that run before any model is loaded.

`preflight(argv, config_name)` composes the Hydra config from the command line exactly as
the entry point will (each value of a sweep too) and turns every problem into one
`ConfigError` line naming the key or value and what is allowed. `validate_config` checks
the values of a composed config against SCHEMA.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from interventions.errors import ConfigError
from interventions.rundir import METRICS_FILE, check_writable, is_finished

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

LOGGERS = ("wandb", "csv", "none")
WANDB_MODES = ("offline", "online", "disabled")
DTYPES = ("float32", "float16", "bfloat16")
PADDING = ("right", "left")


def _methods() -> tuple[str, ...]:
    from interventions.methods import METHODS

    return tuple(METHODS)


def _inits() -> tuple[str, ...]:
    from interventions.methods import INITS

    return tuple(sorted(INITS))


def _tasks() -> tuple[str, ...]:
    from interventions.tasks import TASKS

    return TASKS


def _sites() -> tuple[str, ...]:
    from interventions.sites import SITES

    return SITES


def _bias_pairs() -> tuple[str, ...]:
    from interventions.toyworld.world import BIAS_PAIRS

    return BIAS_PAIRS


# Per group: key -> allowed values (a callable giving a tuple), or a type check:
# "float>=0", "float>0", "int>=1", "int>=0|null", "str", "str|null", "bool", "any".
SCHEMA: dict[str, dict] = {
    "model": {"name": "str", "device": "str", "dtype": lambda: DTYPES, "fused_gelu": "bool"},
    "task": {
        "name": _tasks, "template": "any", "n_train": "int>=1|null", "n_val": "int>=1|null",
        "n_test": "int>=1|null", "path": "str|null", "bias_pair": _bias_pairs,
        "batch_size": "int>=1", "padding_side": lambda: PADDING, "hold_pair": "bias_pairs|null",
    },
    "intervention": {
        "method": _methods, "sites": "sites", "layers": "any", "positions": "any", "heads": "any",
        "init": _inits, "init_scale": "float>=0", "lr": "float>=0",
    },
    "objective": {"lambda_f": "float>=0", "lambda_m": "float>=0", "margin": "float>=0", "lambda_hold": "float>=0"},
    "logger": {"kind": lambda: LOGGERS, "project": "str", "mode": lambda: WANDB_MODES, "group": "str|null"},
}  # fmt: skip
EVAL_SCHEMA: dict[str, dict] = {
    "model": {"name": "str|null", "device": "str", "dtype": lambda: DTYPES, "fused_gelu": "bool"},
    "task": {"name": "tasks|null", "template": "any", "path": "str|null", "bias_pair": "bias_pairs|null"},
    "logger": SCHEMA["logger"],
}
SCHEMAS = {"train": SCHEMA, "evaluate": EVAL_SCHEMA}
TOP_KEYS = {
    "train": {"seed", "run_dir", "overwrite", "illusion", "fused", "fused_chunk", "skip_unread"},
    "evaluate": {"seed", "run_dir", "overwrite", "export", "check_model", "split", "n", "sweep", "generalization"},
}
_NAMED_CHOICES = {"tasks": _tasks, "bias_pairs": _bias_pairs}
# Groups whose keys are passed through to another library (checked there).
OPEN_GROUPS = {"trainer", "experiment", "hydra", "sweep"}


def _check_value(where: str, value, rule) -> None:
    if callable(rule):
        allowed = rule()
        if value not in allowed:
            raise ConfigError(f"{where}={value!r} is not allowed; allowed: {', '.join(map(str, allowed))}")
        return
    if rule == "any":
        return
    if rule == "sites":
        sites = [value] if isinstance(value, str) else list(value or [])
        for s in (x for v in sites for x in str(v).split(",")):
            if s.strip() not in _sites():
                raise ConfigError(f"{where}: unknown site {s.strip()!r}; allowed: {', '.join(_sites())}")
        return
    nullable = rule.endswith("|null")
    base = rule.removesuffix("|null")
    if value is None:
        if nullable:
            return
        raise ConfigError(f"{where} must be set ({base})")
    if base in _NAMED_CHOICES:
        return _check_value(where, value, _NAMED_CHOICES[base])
    if base == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{where}={value!r} must be a string")
        return
    if base == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{where}={value!r} must be true or false")
        return
    kind, op, bound = re.fullmatch(r"(int|float)(>=|>)(\d+)", base).groups()
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if kind == "int" and not is_int:
        raise ConfigError(f"{where}={value!r} must be an integer {op} {bound}")
    if kind == "float" and not (is_int or isinstance(value, float)):
        raise ConfigError(f"{where}={value!r} must be a number {op} {bound}")
    if kind == "float" and not math.isfinite(value):
        raise ConfigError(f"{where}={value!r} must be a finite number {op} {bound}")
    if (op == ">=" and value < float(bound)) or (op == ">" and value <= float(bound)):
        raise ConfigError(f"{where}={value!r} must be {op} {bound}")


FUSED_FORMS = (
    "fused must be a list of objective settings, e.g. fused=[{lambda_f:0},{lambda_f:1}], or a grid of "
    "values per key, e.g. fused={lambda_f:[0,1],lambda_m:[0,0.01]}"
)


def fused_settings(fused) -> list[dict]:
    """The objective settings of `fused`: a list of settings as given, or the product of a
    grid {key: [values]} in key order, the last key varying fastest (as a Hydra multirun
    over the same axes numbers its jobs)."""
    if isinstance(fused, dict) and fused and all(isinstance(v, list) and v for v in fused.values()):
        return [dict(zip(fused, values)) for values in itertools.product(*fused.values())]
    if isinstance(fused, list) and fused and all(isinstance(x, dict) for x in fused):
        return [dict(x) for x in fused]
    raise ConfigError(FUSED_FORMS)


# What the fused loop (interventions.fused, not a Lightning Trainer) honours of `trainer`;
# the others are refused rather than silently ignored.
FUSED_TRAINER = {
    "max_epochs": None, "enable_progress_bar": None, "accelerator": ("cpu", "gpu", "cuda", "auto"),
    "devices": (1, "1", "auto"), "strategy": ("auto",), "precision": ("32-true", "32", 32),
    "log_every_n_steps": None, "check_val_every_n_epoch": None,  # nothing to log or validate per step
}


def _check_fused_trainer(trainer: dict) -> None:
    for key, value in trainer.items():
        if key not in FUSED_TRAINER:
            raise ConfigError(
                f"trainer.{key} is not supported with fused (the fused loop is not a Lightning Trainer); "
                f"drop it, or run the settings as a multirun (-m objective.<key>=...)"
            )
        allowed = FUSED_TRAINER[key]
        if allowed is not None and value not in allowed:
            raise ConfigError(
                f"trainer.{key}={value!r} is not supported with fused; allowed: {', '.join(map(str, allowed))} "
                "(one process on one device in float32)"
            )


def _check_training_device(container: dict, trained: bool) -> None:
    """`model.device=cuda` with a CPU trainer would load the model on the GPU and then train
    on the CPU (Lightning moves the model to its accelerator): refuse it for trained methods.
    (Training-free methods run on model.device; `trainer=gpu` moves a CPU-loaded model.)"""
    device = str((container.get("model") or {}).get("device") or "cpu")
    accelerator = (container.get("trainer") or {}).get("accelerator", "cpu")
    if trained and device != "cpu" and accelerator == "cpu":
        raise ConfigError(
            f"model.device={device} with trainer.accelerator=cpu would train on the CPU; add trainer=gpu "
            "(it moves the model to the GPU, so model.device may stay cpu), or drop model.device"
        )


def validate_config(cfg: DictConfig, schema: dict | None = None, top_keys: set[str] | None = None) -> None:
    """Check every key and value of a composed config; raise one ConfigError line."""
    schema = SCHEMA if schema is None else schema
    container = OmegaConf.to_container(cfg, resolve=False)
    if isinstance(cfg.get("logger"), DictConfig):  # its mode defaults to $WANDB_MODE (oc.env)
        try:
            container["logger"] = OmegaConf.to_container(cfg.logger, resolve=True)
        except Exception as error:  # noqa: BLE001 — an unresolvable value: say which
            raise ConfigError(f"logger: {str(error).splitlines()[0]}") from None
        if container["logger"].get("mode") not in WANDB_MODES and "WANDB_MODE" in os.environ:
            raise ConfigError(f"WANDB_MODE={os.environ['WANDB_MODE']!r} (from the environment) is not a mode W&B "
                              f"runs here; allowed: {', '.join(WANDB_MODES)} (or pass logger.mode=...)")  # fmt: skip
    allowed_top = set(schema) | OPEN_GROUPS | (top_keys or set())
    for key in container:
        if key not in allowed_top:
            raise ConfigError(f"unknown key {key!r}; allowed top-level keys: {', '.join(sorted(allowed_top))}")
    for group, rules in schema.items():
        if group not in container or container[group] is None:
            continue
        values = container[group]
        if not isinstance(values, dict):
            raise ConfigError(f"{group} must be a group of keys, got {values!r}")
        for key, value in values.items():
            if key not in rules:
                raise ConfigError(f"unknown key {group}.{key}; allowed keys of {group}: {', '.join(rules)}")
            _check_value(f"{group}.{key}", value, rules[key])
    if container.get("fused") is not None:
        for i, setting in enumerate(fused_settings(container["fused"])):
            for key, value in setting.items():
                if key not in SCHEMA["objective"]:
                    raise ConfigError(f"fused[{i}]: unknown key {key!r}; allowed: {', '.join(SCHEMA['objective'])}")
                _check_value(f"fused[{i}].{key}", value, SCHEMA["objective"][key])
        _check_fused_trainer(container.get("trainer") or {})
    if container.get("fused_chunk") is not None:
        _check_value("fused_chunk", container["fused_chunk"], "int>=1")
    for key in ("skip_unread", "overwrite"):
        if not isinstance(container.get(key, False), bool):
            raise ConfigError(f"{key}={container[key]!r} must be true or false")
    icfg = container.get("intervention")
    if isinstance(icfg, dict) and icfg.get("method") in _methods():
        from interventions.methods import METHODS

        if METHODS[icfg["method"]].trained and not (icfg.get("lr") or 0) > 0:
            raise ConfigError(f"intervention.lr={icfg.get('lr')!r} must be > 0 for a trained method")
        if container.get("fused") is not None and not METHODS[icfg["method"]].trained:
            raise ConfigError(
                f"fused trains several objective settings of a trained method; intervention={icfg['method']} "
                "is training-free (no objective to vary): drop fused, or sweep it with -m"
            )
        _check_training_device(container, METHODS[icfg["method"]].trained)
    trainer = container.get("trainer") or {}
    if "max_epochs" in trainer:
        _check_value("trainer.max_epochs", trainer["max_epochs"], "int>=1")


def _translate(error: Exception, config_name: str, base_overrides: list[str]) -> ConfigError:
    """One line from a Hydra composition error."""
    text = str(error)
    missing = re.search(r"Could not find '([^']+)/([^']+)'", text)
    if missing:
        group, value = missing.groups()
        options = sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml"))
        return ConfigError(f"{group}={value!r} does not exist; allowed: {', '.join(options)}")
    missing_group = re.search(r"Could not find '([^']+)'", text)
    if missing_group:
        return ConfigError(f"{missing_group.group(1)!r} is not a config group or option")
    override = re.search(r"Could not override '([^']+)'", text)
    if override:
        key = override.group(1)
        group, _, leaf = key.rpartition(".")
        cfg = _compose(config_name, base_overrides)
        node = OmegaConf.select(cfg, group) if group else cfg
        keys = ", ".join(node.keys()) if isinstance(node, DictConfig) else "(none)"
        return ConfigError(f"unknown key {key}; allowed keys of {group or 'the config'}: {keys}")
    first = text.strip().splitlines()[0] if text.strip() else type(error).__name__
    return ConfigError(first)


def _compose(config_name: str, overrides: list[str]) -> DictConfig:
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name, overrides=overrides)
    finally:
        GlobalHydra.instance().clear()


def _expand(overrides: list[str]) -> list[list[str]]:
    """Override lists to compose: the first value of every sweep, then each other value alone."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import ChoiceSweep

    parsed = OverridesParser.create().parse_overrides(overrides)
    fixed, sweeps = [], []
    for text, o in zip(overrides, parsed):
        if o.is_sweep_override() and isinstance(o.value(), ChoiceSweep):
            values = [str(v) for v in o.value().list]
            prefix = text.split("=", 1)[0]
            sweeps.append([f"{prefix}={v}" for v in values])
        elif o.is_sweep_override():
            continue  # range()/glob(): checked per run by the entry point
        else:
            fixed.append(text)
    base = fixed + [s[0] for s in sweeps]
    runs = [base]
    for i, values in enumerate(sweeps):
        for v in values[1:]:
            runs.append(fixed + [s[0] if j != i else v for j, s in enumerate(sweeps)])
    return runs


def export_alias(argv: list[str]) -> list[str]:
    """evaluate.py's `intervention=<path>` (PRODUCT.md's spelling) as the `export` key."""
    return [("export=" + a.split("=", 1)[1]) if a.startswith("intervention=") else a for a in argv]


@dataclass
class Preflight:
    """What the checks found that the entry point acts on before Hydra starts: finished run
    folders to move aside (`overwrite=true`), and notes to print."""

    supersede: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def preflight(argv: list[str], config_name: str) -> Preflight:
    """Compose and validate the config the entry point will see; raise ConfigError."""
    check_words(argv)
    if config_name == "evaluate":
        try:
            return _preflight(export_alias(argv), config_name)
        except ConfigError as error:  # speak of the key the user typed
            raise ConfigError(re.sub(r"\bexport\b", "intervention", str(error))) from None
    return _preflight(argv, config_name)


# Hydra's command-line flags that take the next word as their value.
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd",
                     "--package", "-p", "--info", "-i", "--experimental-rerun", "--shell-completion", "-sc"}  # fmt: skip


def check_words(argv: list[str]) -> None:
    """Every argument is a flag or an override `key=value` (Hydra's own error for a bare
    word, `missing EQUAL at '<EOF>'`, does not say which word or what to write)."""
    skip = False
    for i, arg in enumerate(argv):
        if skip or arg.startswith("-"):
            skip = arg in _FLAGS_WITH_VALUE
            continue
        if "=" not in arg and not arg.startswith("~"):  # ~key deletes a key
            following = argv[i + 1] if i + 1 < len(argv) else None
            if following is not None and "=" not in following and not following.startswith("-"):
                raise ConfigError(f"{arg!r} is not an override (no '='); write {arg}={following}")
            raise ConfigError(f"{arg!r} is not an override (no '='); write {arg}=<value> (e.g. task=ioi)")


def _argv_value(argv: list[str], key: str) -> str | None:
    """The value of `key=value` on the command line (the last one wins, as in Hydra)."""
    values = [a.split("=", 1)[1] for a in argv if a.lstrip("+").split("=", 1)[0] == key and "=" in a]
    return values[-1] if values else None


def check_outputs(argv: list[str], config_name: str, overwrite: bool) -> Preflight:
    """The folders a run or sweep will write: each must be writable (one line, not Hydra's
    traceback from its log file handler), and a single run's explicit folder must not hold
    a finished run unless `overwrite` (then it is moved aside before Hydra writes into it)."""
    multirun = "-m" in argv or "--multirun" in argv
    plan = Preflight()
    hydra_key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    default_root = "multirun" if multirun else ("outputs/eval" if config_name == "evaluate" else "outputs")
    targets = [(hydra_key, _argv_value(argv, hydra_key)), ("run_dir", _argv_value(argv, "run_dir"))]
    explicit = [(key, Path(value)) for key, value in targets if value and "${" not in value]
    for key, path in explicit or [(hydra_key, Path(default_root))]:
        check_writable(path, key)
    if multirun:
        return plan  # jobs skip or move aside their own finished runs (interventions.sweep)
    for key, path in explicit:
        if is_finished(path) and not overwrite:
            raise ConfigError(
                f"{key}={path} holds a finished run ({METRICS_FILE}); choose another folder, or add overwrite=true "
                f"to move its files into {path / 'superseded'}/<time>/ and run again"
            )
        if is_finished(path) and path not in plan.supersede:
            plan.supersede.append(path)
    return plan


def check_logger_mode(argv: list[str]) -> list[str]:
    """A note when logger.mode on the command line overrides $WANDB_MODE (the config's
    default follows $WANDB_MODE, so without logger.mode there is no conflict)."""
    given, env = _argv_value(argv, "logger.mode"), os.environ.get("WANDB_MODE")
    if given and env and given != env:
        return [f"note: logger.mode={given} overrides WANDB_MODE={env} from the environment"]
    return []


REMOTE_LAUNCHERS = ("slurm", "submitit_slurm")


def check_gpu_available(container: dict) -> None:
    """A config asking for a GPU on a machine where torch sees none: one line, before any
    model loads (Lightning and torch would fail later with a traceback)."""
    trainer, model = container.get("trainer") or {}, container.get("model") or {}
    asks = [f"trainer.accelerator={trainer['accelerator']}"] if trainer.get("accelerator") in ("gpu", "cuda") else []
    if str(model.get("device") or "").startswith("cuda"):
        asks.append(f"model.device={model['device']}")
    if not asks:
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            f"{asks[0]} asks for a GPU, but torch sees none (torch {torch.__version__}, CUDA build: "
            f"{torch.version.cuda or 'no'}); run on the CPU (the default trainer and model.device), or install a "
            "CUDA build of torch"
        )


def _preflight(argv: list[str], config_name: str) -> Preflight:
    from hydra.errors import HydraException

    overrides = [
        a for a in argv
        if not a.startswith("-") and "=" in a and not a.lstrip("+~").startswith("hydra")
    ]  # fmt: skip
    # a launcher that runs the jobs elsewhere (SLURM): their GPUs are not this machine's
    launcher = next((a.split("=", 1)[1] for a in argv if a.lstrip("+~").startswith("hydra/launcher=")), "basic")
    remote = launcher in REMOTE_LAUNCHERS
    try:
        runs = _expand(overrides)
    except HydraException as error:
        raise ConfigError(f"cannot parse the overrides: {str(error).splitlines()[0]}") from None
    for run in runs:
        try:
            cfg = _compose(config_name, run)
        except HydraException as error:
            raise _translate(error, config_name, []) from None
        validate_config(cfg, SCHEMAS[config_name], TOP_KEYS[config_name])
        if not remote:
            check_gpu_available(OmegaConf.to_container(cfg, resolve=False))
        if config_name == "evaluate":
            if cfg.split not in ("train", "val", "test"):
                raise ConfigError(f"split={cfg.split!r} is not allowed; allowed: train, val, test")
            if cfg.get("sweep") is not None and cfg.get("generalization") is not None:
                raise ConfigError("pass either sweep=<dir> or generalization=<runs>, not both")
            if cfg.get("sweep") is not None and not isinstance(cfg.sweep, str):
                raise ConfigError(f"sweep={cfg.sweep!r} must be one multirun folder")
            modes = cfg.get("sweep") is not None or cfg.get("generalization") is not None
            if OmegaConf.is_missing(cfg, "export") and not modes:
                raise ConfigError(
                    "which export? pass intervention=<run directory or intervention.json> "
                    "(or sweep=<multirun dir>, or generalization=<runs>)"
                )
            if cfg.n is not None and (not isinstance(cfg.n, int) or cfg.n < 1):
                raise ConfigError(f"n={cfg.n!r} must be an integer >= 1 (or null)")
            if not modes:
                check_export_path(str(cfg.export))
    plan = check_outputs(argv, config_name, bool(cfg.get("overwrite", False)))
    plan.notes += check_logger_mode(argv)
    return plan


def check_export_path(path: str) -> None:
    """An export path that is a sweep folder gets pointed to sweep= (or one of its runs)."""
    folder = Path(path)
    if not folder.is_dir() or (folder / "intervention.json").exists():
        return
    if (folder / "pareto.json").exists() or (folder / "0" / "sweep_job.json").exists():
        raise ConfigError(
            f"{path} is a sweep folder, not one run; pass sweep={path} to rebuild its summary, or "
            f"intervention={folder / '0'} (a run inside it) to evaluate one run"
        )
