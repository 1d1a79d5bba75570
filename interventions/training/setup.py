"""What both training loops (`train.train_intervention`, `fused.train_fused`) do before the
first step: tokenize the splits once, build the method on its grid and initialise it, and
decide whether the unchanged prefix of the model can be skipped.

The `obsprop` initialisation (`obsprop.inits`) is added to the methods' initialisations here,
where methods are initialised: `methods` imports nothing of observable propagation, whose
feature vectors need the model code."""

from __future__ import annotations

import lightning as L

from interventions.forward import supports_prefix_skip
from interventions.methods.base import INITS, Method
from interventions.methods.registry import method_class
from interventions.models import model_device
from interventions.obsprop.inits import obsprop_init
from interventions.sites import build_grid
from interventions.spec import InterventionSpec, RunSpec
from interventions.tasks.datamodule import TaskDataModule
from interventions.tasks.datapoint import Task

INITS["obsprop"] = obsprop_init


def make_method(spec: InterventionSpec, model, prompt: str, seq_len: int) -> Method:
    """A Method on `spec`'s grid validated against the model, labelled with `prompt`'s tokens."""
    cls = method_class(spec.method)
    grid = build_grid(
        model.cfg, sites=spec.sites, layers=spec.layers, positions=spec.positions if cls.tied_to_positions(spec) else None,
        heads=spec.heads, seq_len=seq_len, tokens=model.to_str_tokens(prompt),
    )  # fmt: skip
    return cls(grid, model.cfg, W_O=model.W_O.detach() if "o" in grid.sites else None, options=spec)


def prepare(model, train: Task, val: Task | None, test: Task | None, spec: InterventionSpec,
            run: RunSpec) -> tuple[TaskDataModule, int]:  # fmt: skip
    """Seed everything and tokenize the splits once; returns (datamodule, prompt length)."""
    L.seed_everything(run.seed, workers=True, verbose=False)
    dm = TaskDataModule(
        model, train, val, test, batch_size=run.batch_size, padding_side=run.padding_side,
        fixed_length=method_class(spec.method).tied_to_positions(spec), shuffle_seed=run.seed,
    )  # fmt: skip
    dm.setup()
    return dm, dm.datasets["train"].tensors["input_ids"].shape[1]


def initialized_method(spec: InterventionSpec, model, dm: TaskDataModule, prompt: str, seq_len: int,
                       seed: int) -> Method:  # fmt: skip
    """`make_method` on the model's device, filled by the spec's initialisation (a
    training-free method starts from zeros: it fits its parameters itself)."""
    m = make_method(spec, model, prompt, seq_len).to(model_device(model))
    if m.trained:
        m.initialize(spec.init, spec.init_scale, seed=seed, model=model, datamodule=dm)
    return m


def learning_rate(spec: InterventionSpec) -> float:
    """The spec's Adam step size, else the method's default."""
    return getattr(spec, "lr", None) or method_class(spec.method).default_lr


def skip_prefix(model, dm: TaskDataModule, method: Method, prefix_skip: bool = True) -> int:
    """The first block a training forward must run: the earliest intervened layer when the
    prefix before it can be skipped (`forward.supports_prefix_skip`; its clean residual is
    then cached in `dm`), else 0."""
    first_layer = min(method.grid.layers)
    prefix = first_layer if prefix_skip and first_layer > 0 and supports_prefix_skip(model) else 0
    if prefix:
        dm.cache_residual(prefix)
    return prefix
