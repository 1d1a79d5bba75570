"""Train an intervention from Python: the library path that `train.py` also takes.

    >>> model, _ = load_model("toy")
    >>> train = load_task("ccc", model=model, split="train", n=128)
    >>> trained = train_intervention(model, train, method="activscalar", epochs=10)
    >>> trained.evaluate("train")["flip_accuracy"]
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch

from interventions import interrupts
from interventions.console import quiet_lightning
from interventions.errors import RunInterrupted
from interventions.export import save_intervention
from interventions.models import model_device
from interventions.methods import METHODS, Method
from interventions.module import InterventionModule
from interventions.objective import Objective
from interventions.sites import DEFAULT_SITES, build_grid
from interventions.tasks.datamodule import TaskDataModule
from interventions.tasks.datapoint import Task


@dataclass
class TrainedIntervention:
    """The trained LightningModule (frozen model + method) and its tokenized data."""

    module: InterventionModule
    datamodule: TaskDataModule
    info: dict | None = None  # baselines: the tuned scale and the scores' range
    seed: int | None = None

    @property
    def method(self) -> Method:
        return self.module.method

    def save(self, run_dir: str | Path) -> Path:
        """Write the intervention as an export (intervention.safetensors + intervention.json)
        into `run_dir`; `load_intervention(run_dir)` reads it back."""
        model = self.module.model
        return save_intervention(run_dir, self.method, model, getattr(model.cfg, "model_name", None) or "unknown",
                                 {"seed": self.seed} if self.seed is not None else {})  # fmt: skip

    def evaluate(self, split: str = "test") -> dict:
        """Metrics (docs/method.md §5) of the trained intervention on a split it was given."""
        if self.datamodule.tasks.get(split) is None:
            raise ValueError(f"no {split} split was given to train_intervention")
        return self.module.evaluate(self.datamodule.loader(split))


def make_method(name: str, model, prompt: str, seq_len: int, sites=DEFAULT_SITES, layers="all",
                positions="all", heads="all") -> Method:  # fmt: skip
    """A Method on a grid validated against the model, labelled with `prompt`'s tokens."""
    cls = METHODS[name]
    grid = build_grid(
        model.cfg, sites=sites, layers=layers, positions=positions if cls.position_tied else None,
        heads=heads, seq_len=seq_len, tokens=model.to_str_tokens(prompt),
    )  # fmt: skip
    return cls(grid, model.cfg, W_O=model.W_O.detach() if "o" in grid.sites else None)


def prepare(model, train: Task, val: Task | None, test: Task | None, method: str, *, batch_size: int,
            padding_side: str, seed: int) -> tuple[TaskDataModule, int]:  # fmt: skip
    """Seed everything and tokenize the splits once; returns (datamodule, prompt length)."""
    L.seed_everything(seed, workers=True, verbose=False)
    dm = TaskDataModule(
        model, train, val, test, batch_size=batch_size, padding_side=padding_side,
        fixed_length=METHODS[method].position_tied, shuffle_seed=seed,
    )  # fmt: skip
    dm.setup()
    return dm, dm.datasets["train"].tensors["input_ids"].shape[1]


def initialized_method(name: str, model, dm: TaskDataModule, prompt: str, seq_len: int, grid: dict,
                       init: str, init_scale: float, seed: int) -> Method:  # fmt: skip
    """`make_method` on the model's device, filled by the named initialisation."""
    m = make_method(name, model, prompt, seq_len, **grid).to(model_device(model))
    m.initialize(init, init_scale, seed=seed, model=model, datamodule=dm)
    return m


def skip_prefix(model, dm: TaskDataModule, method: Method, prefix_skip: bool = True) -> int:
    """The first block a training forward must run: the earliest intervened layer when the
    prefix before it can be skipped (`forward.supports_prefix_skip`; its clean residual is
    then cached in `dm`), else 0."""
    from interventions.forward import supports_prefix_skip

    first_layer = min(method.grid.layers)
    prefix = first_layer if prefix_skip and first_layer > 0 and supports_prefix_skip(model) else 0
    if prefix:
        dm.cache_residual(prefix)
    return prefix


def lightning_device(device: torch.device) -> dict:
    """The Trainer's `accelerator` and `devices` for training where the model is: a model on
    cuda:1 trains on GPU 1, not on the CPU Lightning would otherwise move it to."""
    if device.type == "cuda":
        return {"accelerator": "cuda", "devices": [device.index or 0]}
    if device.type == "mps":
        return {"accelerator": "mps", "devices": 1}
    return {"accelerator": "cpu", "devices": 1}


def train_intervention(
    model,
    train: Task,
    test: Task | None = None,
    val: Task | None = None,
    method: str = "activscalar",
    *,
    sites=DEFAULT_SITES,
    layers="all",
    positions="all",
    heads="all",
    init: str = "normal",
    init_scale: float = 1e-5,
    objective: Objective | None = None,
    lr: float | None = None,
    epochs: int = 25,
    batch_size: int = 4,
    padding_side: str = "right",
    seed: int = 0,
    logger=None,
    trainer_kwargs: dict | None = None,
    prefix_skip: bool = True,
    skip_unread: bool = False,
    verbose: bool = False,
) -> TrainedIntervention:
    """Train `method` on `train` with Lightning; the frozen model is never changed.

    Args:
        model: a frozen TransformerBridge (`load_model`).
        train, test, val: `Task`s (`load_task`); position-tied methods need one prompt length.
        method: "activscalar", "steervec" or "dynscalar".
        sites, layers, positions, heads: the location grid (see `sites.build_grid`).
        init, init_scale: parameter initialisation (see `methods.INITS`).
        objective: E_m + λ_F·F + λ_M·M weights (default Objective(): λ_F 0.1, λ_M 0, m 1).
        lr, epochs, batch_size, seed: Adam learning rate (None: the method's `default_lr`),
            epochs, batch size, seed.
        logger, trainer_kwargs: passed to `lightning.Trainer` (by default it trains where the
            model is: `lightning_device`).
        prefix_skip: when the earliest intervened layer k > 0 (native and GPT-2 models), cache the
            clean residual entering layer k once and run only blocks k.. each step.
        skip_unread: run the last block's MLP only at the read positions (native, GPT-2,
            GPT-NeoX and LLaMA models). The logits are the same; the gradients differ by float rounding
            (about 1e-7), which changes a long training's last digits, so it is off by default.
        verbose: let Lightning print its start-up lines and warnings (off: the call is quiet).

    Raises:
        NonFiniteError: the loss, the parameters or the steered activations turned NaN or
            infinite (`interventions.numerics`); the message names the step and the likely cause.
    """
    cls = METHODS[method]
    dm, seq_len = prepare(model, train, val, test, method, batch_size=batch_size, padding_side=padding_side, seed=seed)
    grid = dict(sites=sites, layers=layers, positions=positions, heads=heads)
    m = initialized_method(method, model, dm, train[0].prompt, seq_len, grid, init, init_scale, seed)
    info = None
    if not cls.trained:  # a training-free baseline fits itself (possibly on a grid of its choosing)
        m, info = m.fit(model, dm, train)
    prefix = skip_prefix(model, dm, m, prefix_skip)
    module = InterventionModule(
        model, m, objective or Objective(), lr=lr or cls.default_lr, prefix_layer=prefix, skip_unread=skip_unread
    )
    if not cls.trained:
        return TrainedIntervention(module, dm, info, seed)
    kwargs = dict(max_epochs=epochs, enable_progress_bar=False, **lightning_device(model_device(model)))
    kwargs.update(trainer_kwargs or {})
    kwargs.update(
        logger=logger if logger is not None else False, enable_checkpointing=False,
        enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    if val is None:
        kwargs["limit_val_batches"] = 0
    with quiet_lightning(verbose), keyboard_interrupt():
        trainer = L.Trainer(**kwargs)
        trainer.fit(module, datamodule=dm)
    module.to(trainer.strategy.root_device)
    return TrainedIntervention(module, dm, seed=seed)


@contextmanager
def keyboard_interrupt():
    """Ctrl+C inside `Trainer.fit` reaches a Python caller as KeyboardInterrupt (Lightning
    itself would call `sys.exit(1)`, ending a notebook's kernel cell with SystemExit). The
    entry points already turn signals into RunInterrupted and keep that."""
    if interrupts.handled():
        yield
        return
    try:
        with interrupts.signals_raise():
            yield
    except RunInterrupted as interrupted:
        if interrupted.signum == signal.SIGINT:
            raise KeyboardInterrupt from None
        raise
