"""Train an intervention from Python: the library path that `train.py` also takes.

    >>> model, _ = load_model("toy")
    >>> train = load_task("ccc", model=model, split="train", n=128)
    >>> trained = train_intervention(model, train, "activscalar", run=RunSpec(epochs=10))
    >>> trained.evaluate("train")["flip_accuracy"]
"""

from __future__ import annotations

import signal
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import lightning as L
import torch

from interventions.console import quiet_lightning
from interventions.errors import RunInterrupted
from interventions.export import save_intervention
from interventions.interrupts import handled, signals_raise
from interventions.methods.base import Method
from interventions.methods.registry import intervention_spec
from interventions.models import model_device
from interventions.objective import Objective
from interventions.spec import InterventionSpec, ObjectiveSpec, RunSpec
from interventions.tasks.datamodule import TaskDataModule
from interventions.tasks.datapoint import Task
from interventions.training.module import InterventionModule
from interventions.training.setup import initialized_method, learning_rate, prepare, skip_prefix


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
    *,
    intervention: str | InterventionSpec = "activscalar",
    objective: ObjectiveSpec | None = None,
    run: RunSpec | None = None,
    logger=None,
    trainer_kwargs: dict | None = None,
    verbose: bool = False,
) -> TrainedIntervention:
    """Train `intervention` on `train` with Lightning; the frozen model is never changed.

    Args:
        model: a frozen TransformerBridge (`load_model`).
        train: the training `Task` (`load_task`); position-tied methods need one prompt length.
        test: the test `Task`, evaluated after training.
        val: the validation `Task` (optional).
        intervention: the method and its grid: a method name ("activscalar", "steervec",
            "dynscalar", ..., or a training-free method, which fits itself) for its defaults, or
            its options (`intervention_spec(name, **options)`: sites, layers, positions, heads;
            init, init_scale and lr, None: the method's `default_lr`; the method's own).
        objective: E_m + λ_F·F + λ_M·M weights (default: λ_F 0.1, λ_M 0, m 1).
        run: epochs, batch size, padding side, seed, and the opt-in `prefix_skip` (cache the
            clean residual entering the earliest intervened layer k > 0 once, then run only
            blocks k.. each step; native and GPT-2 models) and `skip_unread` (the last block's
            MLP only at the read positions: the same logits, gradients equal to float rounding) and
            `forward` ("auto": the steered forwards through the model's plain Hugging Face
            form where it has one, `interventions.plain`; "bridge").
        logger: passed to `lightning.Trainer`.
        trainer_kwargs: passed to `lightning.Trainer` (by default it trains where the model
            is: `lightning_device`).
        verbose: let Lightning print its start-up lines and warnings (off: the call is quiet).

    Raises:
        NonFiniteError: the loss, the parameters or the steered activations turned NaN or
            infinite (`interventions.numerics`); the message names the step and the likely cause.
    """
    spec, run = intervention_spec(intervention), run or RunSpec()
    objective = Objective(**asdict(objective)) if objective is not None else Objective()
    dm, seq_len = prepare(model, train, val, test, spec, run)
    method = initialized_method(spec, model, dm, train[0].prompt, seq_len, run.seed)
    info = None
    if not method.trained:  # a training-free method fits itself (possibly on a grid of its choosing)
        method, info = method.fit(model, dm, train)
    prefix = skip_prefix(model, dm, method, run.prefix_skip)
    module = InterventionModule(model, method, objective, lr=learning_rate(spec), prefix_layer=prefix,
                                skip_unread=run.skip_unread, forward=run.forward)  # fmt: skip
    if not method.trained:
        return TrainedIntervention(module, dm, info, run.seed)
    kwargs = dict(max_epochs=run.epochs, enable_progress_bar=False, **lightning_device(model_device(model)))
    kwargs.update(trainer_kwargs or {})
    # Lightning warns on every run whose epoch has fewer steps than its logging interval: log
    # such an epoch at its last step instead
    kwargs["log_every_n_steps"] = min(kwargs.get("log_every_n_steps", 50), max(1, -(-len(train) // run.batch_size)))
    kwargs.update(
        logger=logger if logger is not None else False, enable_checkpointing=False,
        enable_model_summary=False, num_sanity_val_steps=0,
        use_distributed_sampler=False,  # DDP: the data's own sampler splits each global batch (EpochShuffle)
    )  # fmt: skip
    if val is None:
        kwargs["limit_val_batches"] = 0
    with quiet_lightning(verbose), keyboard_interrupt():
        trainer = L.Trainer(**kwargs)
        trainer.fit(module, datamodule=dm)
    module.to(trainer.strategy.root_device)
    return TrainedIntervention(module, dm, seed=run.seed)


@contextmanager
def keyboard_interrupt():
    """Ctrl+C inside `Trainer.fit` reaches a Python caller as KeyboardInterrupt (Lightning
    itself would call `sys.exit(1)`, ending a notebook's kernel cell with SystemExit). The
    entry points already turn signals into RunInterrupted and keep that."""
    if handled():
        yield
        return
    try:
        with signals_raise():
            yield
    except RunInterrupted as interrupted:
        if interrupted.signum == signal.SIGINT:
            raise KeyboardInterrupt from None
        raise
