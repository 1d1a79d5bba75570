"""Typed specifications: what a configuration becomes, checked before any model loads.

One dataclass per concept: the model (`ModelSpec`), the task (`TaskSpec`), an intervention's
common options (`InterventionSpec`; `TrainedInterventionSpec` adds what gradient descent
needs; a method's own options subclass one of them, `Method.Options`), the objective
(`ObjectiveSpec`), the logger (`LoggerSpec`), how a run trains (`RunSpec`) and the entry
points' whole configurations (`TrainConfig`, `EvaluateConfig`, `SummarizeConfig`,
`GeneralizationConfig`, `GenerateConfig`). `cli.configs` registers them in Hydra's ConfigStore
as structured configs, so Hydra checks every key's name and type while composing; each
spec's `__post_init__` checks values (ranges, choices, combinations) when the composed
config becomes objects (`to_spec`). A run's `intervention` is checked by its method's class
(`methods.registry.configured`). The library functions take these objects whole.

Torch-free, so that the command line's one-line errors come in a fraction of a second.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Dict, List, Optional

from omegaconf import MISSING, OmegaConf

from interventions.errors import ConfigError
from interventions.sites import DEFAULT_SITES, SITES
from interventions.toyworld.world import BIAS_PAIRS, TEMPLATES

INITS = ("normal", "zeros", "obsprop")
TOY_TASKS = tuple(TEMPLATES)  # the toy world's generated tasks
FILE_TASKS = ("jsonl", "csv")  # a user's data file
TASKS = TOY_TASKS + FILE_TASKS
SPLITS = ("train", "val", "test")
DTYPES = ("float32", "float16", "bfloat16")
PADDING = ("right", "left")
FORWARDS = ("auto", "bridge")  # interventions.plain
LOGGERS = ("wandb", "csv", "none")
EFFECTIVENESS = ("hinge", "preference")  # objective.effectiveness: the E term's form
WANDB_MODES = ("offline", "online", "disabled")
# What the fused loop (not a Lightning Trainer) honours of `trainer`: key -> allowed values
# (None: any); the others are refused rather than silently ignored.
FUSED_TRAINER = {
    "max_epochs": None, "enable_progress_bar": None, "accelerator": ("cpu", "gpu", "cuda", "auto"),
    "devices": (1, "1", "auto"), "strategy": ("auto",), "precision": ("32-true", "32", 32),
    "log_every_n_steps": None, "check_val_every_n_epoch": None,  # nothing to log or validate per step
}  # fmt: skip
FUSED_FORMS = (
    "fused must be a list of objective settings, e.g. fused=[{lambda_f:0},{lambda_f:1}], or a grid of "
    "values per key, e.g. fused={lambda_f:[0,1],lambda_m:[0,0.01]}"
)


# -- value checks, each one ConfigError line naming the key --------------------------------------


def _pending(value) -> bool:
    """A value OmegaConf has not resolved yet: an interpolation or MISSING. (Dataclass
    defaults are instantiated while the schema is built, before anything is resolved; the
    resolved values are checked again when the config becomes objects.)"""
    return isinstance(value, str) and (value.startswith("${") or value == MISSING)


def choice(key: str, value, allowed) -> None:
    if _pending(value):
        return
    if value not in allowed:
        raise ConfigError(f"{key}={value!r} is not allowed; allowed: {', '.join(map(str, allowed))}")


def number(key: str, value, low: float, strict: bool = False, integer: bool = False, optional: bool = False) -> None:
    """`value` is a finite number (an integer if asked) >= low (> low if `strict`), or None if `optional`."""
    if (value is None and optional) or _pending(value):
        return
    op = ">" if strict else ">="
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if integer and not is_int:
        raise ConfigError(f"{key}={value!r} must be an integer {op} {low:g}")
    if not (is_int or isinstance(value, float)):
        raise ConfigError(f"{key}={value!r} must be a number {op} {low:g}")
    if not math.isfinite(value):
        raise ConfigError(f"{key}={value!r} must be a finite number {op} {low:g}")
    if value < low or (strict and value == low):
        raise ConfigError(f"{key}={value!r} must be {op} {low:g}")


def bounded(default, low: float, *, strict: bool = False, integer: bool = False, optional: bool = False):
    """A dataclass field holding a number >= low (> low if `strict`). The bound lives in the
    field's metadata: `check_bounds` enforces it, and a type error Hydra reports for the
    field can state it (`bound_text`)."""
    return field(default=default, metadata={"low": low, "strict": strict, "integer": integer, "optional": optional})


def check_bounds(spec, prefix: str) -> None:
    """Every `bounded` field of `spec` within its bound (keys named `prefix` + field name)."""
    for f in fields(spec):
        if "low" in f.metadata:
            number(f"{prefix}{f.name}", getattr(spec, f.name), **f.metadata)


def bound_text(f) -> str:
    """" >= 0" for a `bounded` field, "" for any other."""
    if "low" not in f.metadata:
        return ""
    return f" {'>' if f.metadata['strict'] else '>='} {f.metadata['low']:g}"


def field_kind(schema, key: str, ref_type=None) -> str:
    """What field `key` of dataclass `schema` must hold, in words ("a number >= 0", "true or
    false"), for the one line of a value of the wrong type; `ref_type`: an element's type
    when the field is a typed list."""
    declared = getattr(schema, "__dataclass_fields__", {}).get(key)
    kind = str(declared.type) if declared is not None else str(ref_type or "")
    if "bool" in kind:
        return "true or false"
    bound = bound_text(declared) if declared is not None else ""
    return f"an integer{bound}" if "int" in kind else f"a number{bound}" if "float" in kind else f"of type {kind}"


def beta_grid(key: str, values, example: str = "[-1,0,1]", low: float = -math.inf) -> None:
    """A list of β: non-empty, finite and each > `low` (0 for magnitudes |β|, tried as +β and -β)."""
    if not _pending(values) and (not values or not all(math.isfinite(b) and b > low for b in values)):
        raise ConfigError(f"{key}={list(values)} must be a non-empty list of finite numbers"
                          f"{'' if low == -math.inf else f' > {low:g}'}, e.g. {key}={example}")


def site_list(sites) -> list[str]:
    """Sites as a list: a list, or a comma-separated string."""
    return [s.strip() for s in sites.split(",") if s.strip()] if isinstance(sites, str) else [str(s) for s in sites]


# -- the specs -------------------------------------------------------------------------------------


@dataclass
class ModelSpec:
    """Which frozen model, where and in which precision (`models.load_model`)."""

    name: Optional[str] = "toy"  # "toy", a Hugging Face name or a local folder (evaluate: None = the export's)
    device: str = "cpu"
    dtype: str = "float32"
    fused_gelu: bool = True  # GPT-2's gelu_new with PyTorch's fused kernel (same function, faster)

    def __post_init__(self):
        choice("model.dtype", self.dtype, DTYPES)

    def load_options(self) -> dict:
        """`load_model`'s keywords besides the name."""
        return {"device": self.device, "dtype": self.dtype, "fused_gelu": self.fused_gelu}


@dataclass
class TaskSpec:
    """Which data points (`tasks.load_task` per split) and how they are batched."""

    name: str = "ccc"
    template: Any = 0  # an index, a list of them, or "all"
    n_train: Optional[int] = bounded(256, 1, integer=True, optional=True)
    n_val: Optional[int] = bounded(64, 1, integer=True, optional=True)
    n_test: Optional[int] = bounded(256, 1, integer=True, optional=True)
    path: Optional[str] = None  # task jsonl / csv: the file ("{split}" in it: one file per split)
    bias_pair: str = "stereotype"
    batch_size: int = bounded(4, 1, integer=True)
    padding_side: str = "right"
    hold_pair: Optional[str] = None  # bias: a second pair held fixed (objective.lambda_hold)
    multi_token: bool = False  # answers of several tokens, scored by log-probability (docs/method.md §6)

    def __post_init__(self):
        choice("task.name", self.name, TASKS)
        check_bounds(self, "task.")
        choice("task.padding_side", self.padding_side, PADDING)
        choice("task.bias_pair", self.bias_pair, BIAS_PAIRS)
        if self.hold_pair is not None:
            choice("task.hold_pair", self.hold_pair, BIAS_PAIRS)

    def n(self, split: str) -> Optional[int]:
        return getattr(self, f"n_{split}")


@dataclass
class InterventionSpec:
    """Which method, and where it acts (the location grid, `sites.build_grid`)."""

    method: str = MISSING
    sites: Any = field(default_factory=lambda: list(DEFAULT_SITES))  # a list, or "attnOut,mlpOut"
    layers: Any = "all"  # "all", an int or a list (negative counts from the end)
    positions: Any = "all"  # as layers; DynScalar: null (it acts at every position)
    heads: Any = "all"  # head sites (z, o, v)

    def __post_init__(self):
        sites = [] if _pending(self.sites) else site_list(self.sites)
        for site in sites or ([] if _pending(self.sites) else ["(none given)"]):
            if site not in SITES:
                raise ConfigError(f"intervention.sites: unknown site {site!r}; allowed: {', '.join(SITES)}")

    def grid(self) -> dict:
        """`build_grid`'s keywords."""
        return dict(sites=self.sites, layers=self.layers, positions=self.positions, heads=self.heads)


@dataclass
class TrainedInterventionSpec(InterventionSpec):
    """A method trained by gradient descent: its initialisation and Adam's step size."""

    init: str = "normal"  # normal (Gaussian of scale init_scale) | zeros | obsprop
    init_scale: float = bounded(1e-5, 0)
    lr: Optional[float] = bounded(None, 0, strict=True, optional=True)  # None: the method's default_lr

    def __post_init__(self):
        super().__post_init__()
        choice("intervention.init", self.init, INITS)
        check_bounds(self, "intervention.")


@dataclass
class ObjectiveSpec:
    """E_m (or E_pref) + λ_F·F + λ_M·M (+ λ_H·H for a held answer pair), all weights finite and >= 0."""

    lambda_f: float = bounded(0.1, 0)
    lambda_m: float = bounded(0.0, 0)
    margin: float = bounded(1.0, 0)
    lambda_hold: float = bounded(0.0, 0)
    effectiveness: str = "hinge"  # hinge (E_m) | preference (E_pref, docs/method.md §11: no margin)

    def __post_init__(self):
        check_bounds(self, "objective.")
        choice("objective.effectiveness", self.effectiveness, EFFECTIVENESS)


@dataclass
class LoggerSpec:
    """The experiment logger (`loggers.make_logger`)."""

    kind: str = "wandb"
    project: str = "interventions"
    mode: str = "${oc.env:WANDB_MODE,offline}"  # offline | online | disabled
    group: Optional[str] = None

    def __post_init__(self):
        choice("logger.kind", self.kind, LOGGERS)
        if self.mode not in WANDB_MODES and os.environ.get("WANDB_MODE") == self.mode:
            raise ConfigError(f"WANDB_MODE={self.mode!r} (from the environment) is not a mode W&B runs here; allowed: "
                              f"{', '.join(WANDB_MODES)} (or pass logger.mode=...)")  # fmt: skip
        choice("logger.mode", self.mode, WANDB_MODES)


@dataclass
class RunSpec:
    """How one training runs: epochs, batching, seed, and the two opt-in speed-ups."""

    epochs: int = bounded(25, 1, integer=True)
    batch_size: int = bounded(4, 1, integer=True)
    padding_side: str = "right"
    seed: int = 0
    prefix_skip: bool = True  # run only blocks from the earliest intervened layer on a cached residual
    skip_unread: bool = False  # the last block's MLP at the read positions only (same logits, other rounding)
    forward: str = "auto"  # auto: steered forwards through the model's plain Hugging Face form where it has one

    def __post_init__(self):
        check_bounds(self, "")
        choice("padding_side", self.padding_side, PADDING)
        choice("forward", self.forward, FORWARDS)


def fused_settings(fused) -> list[dict]:
    """The objective settings of `fused`: a list of settings as given, or the product of a
    grid {key: [values]} in key order, the last key varying fastest (as a Hydra multirun
    over the same axes numbers its jobs)."""
    if isinstance(fused, dict) and fused and all(isinstance(v, list) and v for v in fused.values()):
        return [dict(zip(fused, values)) for values in itertools.product(*fused.values())]
    if isinstance(fused, list) and fused and all(isinstance(x, dict) for x in fused):
        return [dict(x) for x in fused]
    raise ConfigError(FUSED_FORMS)


def _fused_objectives(fused, base: ObjectiveSpec) -> list[ObjectiveSpec]:
    objectives = []
    for i, setting in enumerate(fused_settings(fused)):
        for key, value in setting.items():
            if key not in ObjectiveSpec.__dataclass_fields__:
                raise ConfigError(f"fused[{i}]: unknown key {key!r}; allowed: {', '.join(ObjectiveSpec.__dataclass_fields__)}")
            choice(f"fused[{i}].{key}", value, EFFECTIVENESS) if key == "effectiveness" else number(f"fused[{i}].{key}", value, 0)
        objectives.append(ObjectiveSpec(**{**asdict(base), **setting}))
    return objectives


def _check_fused_trainer(trainer: dict) -> None:
    for key, value in trainer.items():
        if key not in FUSED_TRAINER:
            raise ConfigError(f"trainer.{key} is not supported with fused (the fused loop is not a Lightning Trainer); "
                              "drop it, or run the settings as a multirun (-m objective.<key>=...)")  # fmt: skip
        allowed = FUSED_TRAINER[key]
        if allowed is not None and value not in allowed:
            raise ConfigError(f"trainer.{key}={value!r} is not supported with fused; allowed: "
                              f"{', '.join(map(str, allowed))} (one process on one device in float32)")  # fmt: skip


@dataclass
class SteeringSpec:
    """How the steering score is measured (`steering_eval=true`; docs/method.md §11)."""

    betas: List[float] = field(default_factory=lambda: [0.5, 1.0, 1.5, 2.0, 3.0])  # |β| tried on the val split
    curve: List[float] = field(default_factory=lambda: [-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0])
    max_new_tokens: int = bounded(6, 2, integer=True)  # T, the tokens scored (>= 2: distinct-2 needs a bigram)
    off_target: Any = "others"  # toy tasks whose held-out prompts should not change ("others": all but the run's)
    n_off_target: int = bounded(32, 1, integer=True)  # prompts per off-target task and split

    def __post_init__(self):
        check_bounds(self, "steering.")
        beta_grid("steering.betas", self.betas, "[0.5,1,2]", low=0)
        beta_grid("steering.curve", self.curve, "[-2,-1,0,1,2]")
        _pending(self.off_target) or self.off_target_tasks(None)

    def off_target_tasks(self, task: str | None) -> list[str]:
        """The tasks whose held-out prompts a run on `task` must leave alone (else one ConfigError line)."""
        given = [self.off_target] if isinstance(self.off_target, str) else list(self.off_target or [])
        names = [t for t in TOY_TASKS if t != task and task in (*TOY_TASKS, None)] if given == ["others"] else given
        if not names or task in names or not set(names) <= set(TOY_TASKS):
            raise ConfigError(f"steering.off_target={given}: off-target harm needs held-out prompts of toy tasks other than the one"
                              f" steered{f' ({task})' if task else ''}; name some of {', '.join(TOY_TASKS)}, e.g. [ioi,pronouns]")
        return names


@dataclass
class TrainConfig:
    """Everything `train.py` runs on (conf/train.yaml and its groups)."""

    model: ModelSpec = field(default_factory=ModelSpec)
    task: TaskSpec = field(default_factory=TaskSpec)
    # the method's options: a dict as composed, its `Options` once `methods.registry.configured`
    intervention: Any = MISSING
    objective: ObjectiveSpec = field(default_factory=ObjectiveSpec)
    trainer: Dict[str, Any] = field(default_factory=dict)  # lightning.Trainer's arguments
    logger: LoggerSpec = field(default_factory=LoggerSpec)
    seed: int = 0
    run_dir: str = "${hydra:runtime.output_dir}"
    overwrite: bool = False  # move a finished run in run_dir aside (superseded/<time>/) instead of refusing
    illusion: Any = "auto"  # illusion.json: auto (obsprop_steer) | true (also SteerVec) | false
    fused: Any = None  # objective settings trained together in one process (a list, or a grid)
    fused_chunk: Optional[int] = bounded(None, 1, integer=True, optional=True)  # at most this many fused settings at once (null: all)
    skip_unread: bool = False
    forward: str = "auto"  # auto | bridge (interventions.plain)
    generation_eval: bool = False  # metrics.json: the generation flip accuracy per split (greedy generation per prompt)
    steering_eval: bool = False  # metrics.json: the steering score on test, its β chosen on val (docs/method.md §11)
    steering: SteeringSpec = field(default_factory=SteeringSpec)
    threads: Optional[int] = bounded(None, 1, integer=True, optional=True)  # torch's threads (null: SLURM's, the launcher's share, or all)

    def __post_init__(self):
        if _pending(self.intervention):  # the schema's defaults, before any config is merged
            return
        number("trainer.max_epochs", self.trainer.get("max_epochs", 25), 1, integer=True)
        check_bounds(self, "")
        choice("forward", self.forward, FORWARDS)
        if self.fused is not None:
            self.fused_objectives()
            _check_fused_trainer(self.trainer)
        if self.steering_eval:
            self.steering.off_target_tasks(self.task.name)

    def run(self) -> RunSpec:
        return RunSpec(epochs=self.trainer.get("max_epochs", 25), batch_size=self.task.batch_size,
                       padding_side=self.task.padding_side, seed=self.seed, skip_unread=self.skip_unread,
                       forward=self.forward)  # fmt: skip

    def fused_objectives(self) -> list[ObjectiveSpec]:
        """The objective of each fused setting: this config's objective with the setting's keys."""
        return _fused_objectives(self.fused, self.objective)


@dataclass
class EvaluateTaskSpec:
    """evaluate.py's task keys: unset ones keep the export's task settings."""

    name: Optional[str] = None
    template: Any = None
    path: Optional[str] = None
    bias_pair: Optional[str] = None

    def __post_init__(self):
        if self.name is not None:
            choice("task.name", self.name, TASKS)
        if self.bias_pair is not None:
            choice("task.bias_pair", self.bias_pair, BIAS_PAIRS)


def exported_task_spec(recorded: dict | None, overrides: EvaluateTaskSpec | None = None, split: str = "test",
                       n: int | None = None) -> TaskSpec:  # fmt: skip
    """The task an export was trained on (`recorded`: its intervention.json's "task"), as a
    TaskSpec, with the keys `overrides` sets (evaluate.py's task.*) and at most `n` data
    points of `split`."""
    known = {f.name for f in fields(TaskSpec)}
    task = TaskSpec(**{k: v for k, v in (recorded or {}).items() if k in known})
    changed = {k: v for k, v in asdict(overrides).items() if v is not None} if overrides is not None else {}
    if n is not None:
        changed[f"n_{split}"] = n
    return replace(task, **changed)


@dataclass
class EvaluateConfig:
    """`python evaluate.py intervention=<run folder or export>` (conf/evaluate/evaluate.yaml)."""

    intervention: str = MISSING  # a run folder, or its intervention.json / intervention.safetensors
    model: ModelSpec = field(default_factory=lambda: ModelSpec(name=None))
    task: EvaluateTaskSpec = field(default_factory=EvaluateTaskSpec)
    logger: LoggerSpec = field(default_factory=LoggerSpec)
    split: str = "test"
    n: Optional[int] = None  # at most this many data points (default: the export's n_<split>)
    seed: int = 0
    check_model: bool = True  # refuse a model whose weights differ from the export's
    run_dir: str = "${hydra:runtime.output_dir}"
    overwrite: bool = False
    steering_eval: bool = False  # metrics.json: the steering score on `split`, its β chosen on val
    steering: SteeringSpec = field(default_factory=SteeringSpec)

    def __post_init__(self):
        choice("split", self.split, SPLITS)
        number("n", self.n, 1, integer=True, optional=True)


@dataclass
class SummarizeConfig:
    """`python evaluate.py sweep=<multirun folder>`: rebuild its summary (conf/evaluate/summarize.yaml)."""

    sweep: str = MISSING
    logger: LoggerSpec = field(default_factory=LoggerSpec)
    run_dir: str = "${hydra:runtime.output_dir}"
    overwrite: bool = False


@dataclass
class GeneralizationTaskSpec:
    template: Any = None  # the C templates (default: every other template of each run's task)


@dataclass
class GeneralizationConfig:
    """`python evaluate.py generalization=<runs>`: the paper's Table 2 (conf/evaluate/generalization.yaml)."""

    generalization: Any = MISSING  # a multirun folder, a run folder, or a list of them
    model: ModelSpec = field(default_factory=lambda: ModelSpec(name=None))
    task: GeneralizationTaskSpec = field(default_factory=GeneralizationTaskSpec)
    logger: LoggerSpec = field(default_factory=LoggerSpec)
    split: str = "test"
    n: Optional[int] = None
    check_model: bool = True
    run_dir: str = "${hydra:runtime.output_dir}"
    overwrite: bool = False

    def __post_init__(self):
        choice("split", self.split, SPLITS)
        number("n", self.n, 1, integer=True, optional=True)


# Where a position-tied method acts beyond the prompt positions it was trained on (generated
# tokens, a multi-token answer's tokens): "none" leaves them alone, "last" reuses the last
# prompt position's parameters (docs/method.md §7).
POSITIONS_BEYOND = ("none", "last")


@dataclass
class GenerateConfig:
    """`python evaluate.py generate=<run folder or export>`: steered completions at each β
    (conf/evaluate/generate.yaml)."""

    generate: str = MISSING  # a run folder, or its intervention.json / intervention.safetensors
    prompts: Optional[List[str]] = None  # default: the first n prompts of the task's split
    model: ModelSpec = field(default_factory=lambda: ModelSpec(name=None))
    task: EvaluateTaskSpec = field(default_factory=EvaluateTaskSpec)
    logger: LoggerSpec = field(default_factory=LoggerSpec)
    split: str = "test"
    n: int = bounded(8, 1, integer=True)
    betas: List[float] = field(default_factory=lambda: [-1.0, 0.0, 1.0])
    max_new_tokens: int = bounded(20, 1, integer=True)
    do_sample: bool = False
    temperature: float = bounded(1.0, 0, strict=True)
    top_k: Optional[int] = bounded(None, 1, integer=True, optional=True)
    positions_beyond: str = "none"  # position-tied methods on generated tokens: none, or last (docs/method.md §7)
    backend: str = "bridge"  # bridge (TransformerLens, no key-value cache) | hf (the plain Hugging Face model, cached)
    batch_size: int = bounded(16, 1, integer=True)
    seed: int = 0
    check_model: bool = True
    run_dir: str = "${hydra:runtime.output_dir}"
    overwrite: bool = False

    def __post_init__(self):
        choice("split", self.split, SPLITS)
        check_bounds(self, "")
        choice("positions_beyond", self.positions_beyond, POSITIONS_BEYOND)
        choice("backend", self.backend, ("bridge", "hf"))
        beta_grid("betas", self.betas)
        if self.prompts is not None and not all(isinstance(p, str) and p.strip() for p in self.prompts):
            raise ConfigError("prompts must be non-empty strings, e.g. prompts='[\"The capital of France is\"]'")


def to_spec(cfg, run_dir: str | None = None):
    """The composed config `cfg` as its spec objects, each value checked (ConfigError).

    `run_dir` replaces the config's: before Hydra runs (the command line's checks), the
    default `${hydra:runtime.output_dir}` has nothing to resolve from.
    """
    if run_dir is not None:
        cfg = cfg.copy()
        cfg.run_dir = run_dir
    return OmegaConf.to_object(cfg)
