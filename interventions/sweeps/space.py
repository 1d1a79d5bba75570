"""The adaptive sweeper's options (`hydra/sweeper=pareto`): its search space, objectives,
sampler and sizes, checked before anything runs (`cli.preflight`, then the sweeper itself).

    hydra:
      sweeper:
        space:
          objective.lambda_f: log(1e-3, 10)    # a float on a log scale, 0 < low <= high
          objective.margin: uniform(0, 2)      # a float, low <= high
          trainer.max_epochs: int(5, 25)       # an integer, low <= high
          intervention: choice(activscalar, steervec)   # or a YAML list: [activscalar, steervec]

Keys are the config's own (`objective.lambda_f`), written flat or nested (`objective:
{lambda_f: ...}`); a config group (`intervention`) takes its options' names. Each trial
is a run with one `key=value` override per dimension. Torch-free and optuna-free: the
command line's one-line errors come before either loads.
"""

from __future__ import annotations

import inspect
import math
import re
from dataclasses import dataclass, field
from typing import Any

from interventions.errors import ConfigError
from interventions.sweeps.pareto import DIRECTION

FORMS = "log(low, high), uniform(low, high), int(low, high) or choice(a, b, ...)"
SAMPLERS = {"gp": "GPSampler", "tpe": "TPESampler", "nsgaii": "NSGAIISampler"}  # optuna's; gp: LogEHVI
OBJECTIVES = tuple(DIRECTION)  # metrics.json's names; the direction of each is pareto.DIRECTION's
DEFAULT_OBJECTIVES = ("effectiveness", "faithfulness", "minimality")  # docs/sweeps.md, "Adaptive search"
_CALL = re.compile(r"^\s*([A-Za-z_]\w*)\s*\((.*)\)\s*$", re.DOTALL)


@dataclass(frozen=True)
class Dimension:
    """One axis of the search space: `key` (a config key or group) and its values.

    kind "float" (log scale if `log`) and "int" range over [low, high]; "choice" over `choices`.
    """

    key: str
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    choices: tuple = ()

    def text(self) -> str:
        """The dimension as it is written in the config (recorded with the study)."""
        if self.kind == "choice":
            return f"choice({', '.join(format_value(c) for c in self.choices)})"
        name = "log" if self.log else ("int" if self.kind == "int" else "uniform")
        return f"{name}({format_value(self.low)}, {format_value(self.high)})"

    def corners(self) -> list:
        """The values that bound the dimension (its ends, or every choice): composing a run at
        each checks the whole range against the config before anything runs."""
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]


@dataclass(frozen=True)
class SweeperOptions:
    """Everything `hydra.sweeper` sets (conf/hydra/sweeper/pareto.yaml says what each means)."""

    space: tuple[Dimension, ...]
    objectives: tuple[str, ...] = DEFAULT_OBJECTIVES
    sampler: str = "gp"
    n_trials: int = 32
    n_jobs: int | None = None
    seed: int = 0
    fused: bool = False
    sampler_options: dict = field(default_factory=dict)

    @property
    def directions(self) -> list[str]:
        """optuna's direction of each objective."""
        return ["maximize" if DIRECTION[name] == "max" else "minimize" for name in self.objectives]


def format_value(value) -> str:
    """`value` as Hydra's override grammar reads it back as the same value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, float):
        return repr(value)  # shortest round-trip form; Hydra reads 1e-05 as a float
    return str(value)


def override(key: str, value) -> str:
    return f"{key}={format_value(value)}"


def scalar(text: str):
    """A choice's value written in the config: an integer, a float, true/false, null or a word."""
    text = text.strip()
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    words = {"true": True, "false": False, "null": None}
    if text.lower() in words:
        return words[text.lower()]
    return text[1:-1] if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"" else text


def _bound(key: str, text: str, integer: bool) -> float | int:
    value = scalar(text)
    if integer and not (isinstance(value, int) and not isinstance(value, bool)):
        raise ConfigError(f"hydra.sweeper.space.{key}: int(low, high) needs integer bounds, got {text.strip()!r}")
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
        raise ConfigError(f"hydra.sweeper.space.{key}: {text.strip()!r} is not a finite number")
    return value


def parse_dimension(key: str, value: Any) -> Dimension:
    """One dimension from the config's text (`log(1e-3, 10)`, ...) or a YAML list of choices."""
    where = f"hydra.sweeper.space.{key}"
    if isinstance(value, (list, tuple)):
        if not value:
            raise ConfigError(f"{where}: a choice needs at least one value, got an empty list")
        return Dimension(key, "choice", choices=tuple(value))
    match = _CALL.match(value) if isinstance(value, str) else None
    if match is None:
        raise ConfigError(f"{where}={value!r}: write the values to search as {FORMS}")
    name, inner = match.group(1).lower(), match.group(2)
    args = [a for a in inner.split(",")] if inner.strip() else []
    if name == "choice":
        if not args:
            raise ConfigError(f"{where}={value!r}: a choice needs at least one value")
        return Dimension(key, "choice", choices=tuple(scalar(a) for a in args))
    if name not in ("log", "uniform", "int"):
        raise ConfigError(f"{where}={value!r}: unknown form {name!r}; write {FORMS}")
    if len(args) != 2:
        raise ConfigError(f"{where}={value!r}: {name}(low, high) takes two bounds, got {len(args)}")
    low, high = (_bound(key, a, integer=name == "int") for a in args)
    if low > high:
        raise ConfigError(f"{where}={value!r}: low {format_value(low)} is above high {format_value(high)}")
    if name == "log" and low <= 0:
        raise ConfigError(f"{where}={value!r}: a log scale needs bounds > 0, got low {format_value(low)}")
    return Dimension(key, "int" if name == "int" else "float", low, high, log=name == "log")


def flatten(mapping: dict, prefix: str = "") -> dict[str, Any]:
    """{"objective": {"lambda_f": "log(...)"}} -> {"objective.lambda_f": "log(...)"}; flat
    dotted keys stay as they are."""
    out = {}
    for key, value in mapping.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{path}."))
        else:
            out[path] = value
    return out


def parse_space(space: dict | None) -> tuple[Dimension, ...]:
    """Every dimension of `hydra.sweeper.space` (a nested or flat mapping)."""
    if space is not None and not isinstance(space, dict):
        raise ConfigError(f"hydra.sweeper.space must map config keys to {FORMS}; got {space!r}")
    dimensions = tuple(parse_dimension(key, value) for key, value in flatten(space or {}).items())
    if not dimensions:
        raise ConfigError(f"hydra.sweeper.space is empty: give at least one key to search, e.g. "
                          f"'+hydra.sweeper.space.objective.lambda_f=\"log(1e-3,10)\"' ({FORMS})")  # fmt: skip
    return dimensions


def _count(key: str, value, low: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"hydra.sweeper.{key}={value!r} must be an integer >= {low}")


def sweeper_options(space=None, objectives=DEFAULT_OBJECTIVES, sampler: str = "gp", n_trials: int = 32,
                    n_jobs: int | None = None, seed: int = 0, fused: bool = False, sampler_options=None,
                    **unknown) -> SweeperOptions:  # fmt: skip
    """The checked options of `hydra.sweeper` (plain containers, as OmegaConf gives them);
    ConfigError (one line) for the first problem. `params` (a grid's axes, which an experiment
    preset may set) is not an option of this sweeper: the caller drops it with a note."""
    if unknown:
        allowed = ", ".join(["space", "objectives", "sampler", "n_trials", "n_jobs", "seed", "fused", "sampler_options"])
        raise ConfigError(f"unknown key hydra.sweeper.{sorted(unknown)[0]}; allowed keys of hydra.sweeper: {allowed}")
    objectives = [objectives] if isinstance(objectives, str) else list(objectives or [])
    for name in objectives:
        if name not in OBJECTIVES:
            raise ConfigError(f"hydra.sweeper.objectives: unknown objective {name!r}; allowed: {', '.join(OBJECTIVES)}")
    if not objectives or len(set(objectives)) != len(objectives):
        raise ConfigError(f"hydra.sweeper.objectives={objectives} must name one or more different objectives of "
                          f"{', '.join(OBJECTIVES)}")  # fmt: skip
    if sampler not in SAMPLERS:
        raise ConfigError(f"hydra.sweeper.sampler={sampler!r} is not a sampler; allowed: {', '.join(SAMPLERS)} "
                          f"(optuna's {', '.join(SAMPLERS.values())})")  # fmt: skip
    _count("n_trials", n_trials, 1)
    _count("n_jobs", n_jobs, 1, optional=True)
    _count("seed", seed, 0)
    if not isinstance(fused, bool):
        raise ConfigError(f"hydra.sweeper.fused={fused!r} must be true or false")
    if sampler_options is not None and not isinstance(sampler_options, dict):
        raise ConfigError(f"hydra.sweeper.sampler_options={sampler_options!r} must map option names to values")
    if sampler_options:
        check_sampler_options(sampler, sampler_options)
    return SweeperOptions(parse_space(space), tuple(objectives), sampler, n_trials, n_jobs, seed, fused,
                          dict(sampler_options or {}))  # fmt: skip


def check_sampler_options(sampler: str, options: dict) -> None:
    """Each of `options` is an argument of the sampler's constructor (but its seed)."""
    import optuna  # here: only a config that gives sampler_options pays for optuna (0.2 s) before its one line

    cls = getattr(optuna.samplers, SAMPLERS[sampler])
    allowed = [name for name in inspect.signature(cls).parameters if name != "seed"]
    for key in options:
        if key not in allowed:
            raise ConfigError(f"hydra.sweeper.sampler_options.{key} is not an option of optuna's {cls.__name__}; "
                              f"allowed: {', '.join(allowed)}")  # fmt: skip
