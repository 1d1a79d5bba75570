"""The LightningModule: a frozen model, an intervention method, and the objective.

Data flows one way: batch (with its clean log-probs, computed once per dataset) ->
one forward of the frozen model on the batch doubled, β = +1 for the first half and
β = -1 for the second -> objective -> Adam on the method's parameters only.

The frozen model is kept outside the module's registered children, so it is never
saved in a checkpoint, never handed to the optimizer, and never moved by accident;
`on_fit_start` / `on_validation_start` put it on the module's device.
"""

from __future__ import annotations

import lightning as L
import torch

from interventions.errors import NonFiniteError
from interventions.forward import has_answer_tails, steered_logits
from interventions.interrupts import raise_if_signalled
from interventions.methods import Method
from interventions.models import model_device
from interventions.metrics import InterventionMetrics, flatten, parameter_metrics
from interventions.numerics import (
    check_loss, check_parameters, first_overflow, likely_cause, overflow_message, residual_probe,
)  # fmt: skip
from interventions.objective import Objective
from interventions.plain import plain_form, plain_steered_logits, plain_usable, steered_answer_tails


def update_metric(metric: InterventionMetrics, batch: dict, logits_pos, logits_neg, tails=(None, None)) -> None:
    """Feed one batch's steered logits (its answers' tails, its held pair, if any) to a metric."""
    metric.update(
        logits_pos, logits_neg, batch["clean_logprobs"], batch["correct"], batch["wrong"],
        batch.get("hold_correct"), batch.get("hold_wrong"), (*tails, batch.get("clean_tail")),
    )  # fmt: skip


class _Frozen:
    """Holds the model (and its plain form, or None) so that nn.Module does not register
    them as children."""

    def __init__(self, model, plain=None):
        self.model = model
        self.plain = plain


class InterventionModule(L.LightningModule):
    def __init__(
        self, model, method: Method, objective: Objective, lr: float = 1e-3, prefix_layer: int = 0,
        skip_unread: bool = False, forward: str = "auto",
    ):  # fmt: skip
        """`prefix_layer` > 0: batches carry `resid_pre`, the clean residual entering that
        layer, and the forward runs only the blocks from there (the prefix is unchanged
        by the intervention). `skip_unread`: the last block's MLP runs only at the read
        positions (`forward.last_position_logits`). `forward`: "auto" runs the steered
        forwards through the model's plain Hugging Face form where it has one and a step
        allows (`interventions.plain`), "bridge" always through the bridge."""
        super().__init__()
        self.prefix_layer = prefix_layer
        self.skip_unread = skip_unread
        self._frozen = _Frozen(model, plain_form(model, method, forward))
        self.method = method
        self.objective = objective
        self.lr = lr
        self.metrics = torch.nn.ModuleDict(
            {split: InterventionMetrics() for split in ("val",)}
        )
        # Start where the frozen model is: outside a Trainer (evaluation, fused sweeps) nothing
        # else would move the module, and Lightning's `device` would stay the default (CPU).
        self.to(model_device(model))

    @property
    def model(self):
        return self._frozen.model

    @property
    def forward_kind(self) -> str:
        """"plain" where the steered forwards run through the model's plain Hugging Face form
        (those a step allows: `plain.plain_usable`), else "bridge"."""
        return "bridge" if self._frozen.plain is None else "plain"

    # -- forward --------------------------------------------------------------------
    def steered_logits(self, batch: dict, betas=(1.0, -1.0), extra_hooks=()) -> list[torch.Tensor]:
        """Last-position logits [batch, vocab] for each β, from ONE batched forward.

        The batch is repeated len(betas) times and each copy gets its own β, so the
        hooks see β as a tensor [len(betas) * batch]. `extra_hooks` run after the
        method's (e.g. `numerics.residual_probe`).
        """
        plain = self._frozen.plain
        if plain is not None and plain_usable(self.prefix_layer, self.skip_unread, extra_hooks):
            return plain_steered_logits(plain, self.method, batch, betas)
        return steered_logits(self.model, self.method, batch, betas, extra_hooks, self.prefix_layer, self.skip_unread)

    def steered(self, batch: dict, betas=(1.0, -1.0)) -> tuple[list[torch.Tensor], tuple]:
        """Last-position logits [batch, vocab] and the answers' tails [batch] for each β: the
        tails of answers of several tokens (`forward.answer_tails`, batches with
        answer_ids), else None (`steered_logits`)."""
        if has_answer_tails(batch):
            pairs = steered_answer_tails(self.model, self._frozen.plain, self.method, batch, betas)
            return [logits for logits, _ in pairs], tuple(tail for _, tail in pairs)
        logits = self.steered_logits(batch, betas)
        if "answer_ids" in batch:  # every answer is one token: the teacher-forced sequences are the prompts
            return logits, tuple(torch.zeros(len(x), dtype=x.dtype, device=x.device) for x in logits)
        return logits, (None,) * len(betas)

    # -- training -------------------------------------------------------------------
    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        raise_if_signalled()  # a signal whose exception the garbage collector swallowed stops the run here
        (logits_pos, logits_neg), tails = self.steered(batch)
        hold = (batch["hold_correct"], batch["hold_wrong"]) if "hold_correct" in batch else None
        loss, parts = self.objective(
            logits_pos, logits_neg, batch["correct"], batch["wrong"],
            batch["clean_logprobs"], self.method.minimality_vector(), hold=hold, tails=tails,
        )  # fmt: skip
        if not bool(torch.isfinite(loss)):  # say where the residual overflowed, if it did (the bridge's probe)
            self.check_overflow(batch, self.current_epoch, self.global_step + 1)
            check_loss(loss, self.current_epoch, self.global_step + 1, self.divergence_cause())
        if batch_idx == 0:
            self._probe_batch = batch  # the epoch's first batch: `check_overflow` runs it at the epoch's end
        b = batch["input_ids"].shape[0]
        recorded = self._logger_records_this_step()
        if recorded or self._last_batch_of_epoch(batch_idx):
            # under DDP the mean over the processes: the global batch's loss
            self.log("train/loss", loss, prog_bar=True, batch_size=b, sync_dist=True)
        if recorded:
            self.log_dict({f"train/{k}_loss": v for k, v in parts.items()}, batch_size=b)
        return loss

    def _last_batch_of_epoch(self, batch_idx: int) -> bool:
        """Whether `batch_idx` ends the epoch (its `train/loss` is the one epoch lines and
        epoch-end callbacks read); without a Trainer, always."""
        total = getattr(self._trainer, "num_training_batches", None)
        return not isinstance(total, int) or batch_idx + 1 >= total

    def _logger_records_this_step(self) -> bool:
        """Whether the Trainer sends this step's values to its loggers (every
        `log_every_n_steps`, or every step of a `fast_dev_run`). The loggers never see
        per-step values logged on other steps, yet each `self.log` costs 0.3–1 ms, up to 10%
        of a toy step at batch 4 (docs/benchmarks.md). So the parts and `train/loss` are
        logged on those steps only, and `train/loss` also at each epoch's last batch: a
        callback reading `callback_metrics` (or the progress bar) between them sees the
        values of the last logged step. Lightning's own LearningRateMonitor asks the same
        question; without a Trainer, log."""
        connector = getattr(self._trainer, "_logger_connector", None)
        return bool(getattr(connector, "should_update_logs", True) or getattr(self._trainer, "fast_dev_run", False))

    def on_after_backward(self) -> None:
        self.method.note_gradients()

    def divergence_cause(self) -> str:
        """Advice for a run whose numbers turned non-finite (`numerics.likely_cause`)."""
        return likely_cause(self.lr, type(self.method).default_lr, next(self.model.parameters()).dtype)

    def on_train_batch_end(self, outputs, batch: dict, batch_idx: int) -> None:
        check_parameters(self.method.flat_params(), self.current_epoch, self.global_step, self.divergence_cause())

    def on_train_epoch_end(self) -> None:
        batch = getattr(self, "_probe_batch", None)
        if batch is not None:
            self.check_overflow(batch, self.current_epoch, self.global_step)
            self._probe_batch = None

    @torch.no_grad()
    def check_overflow(self, batch: dict, epoch: int | None = None, step: int | None = None) -> None:
        """Raise NonFiniteError if, at β = ±1 on `batch`, some layer's residual stream or
        the logits overflow the model's float range (see `numerics`)."""
        hooks, found = residual_probe(self.model.cfg.n_layers)
        logits = torch.cat(self.steered_logits(batch, extra_hooks=hooks))
        bad, layer = first_overflow(found, logits)
        if bool(bad.any()):
            row = int(bad.nonzero()[0])
            beta = 1.0 if row < len(bad) // 2 else -1.0
            largest = float(self.method.flat_params().detach().abs().max())
            raise NonFiniteError(
                overflow_message(int(layer[row]), self.model.cfg.n_layers, beta, largest, epoch, step,
                                 self.divergence_cause()),
                step,
            )  # fmt: skip

    def configure_optimizers(self):
        # foreach: one kernel per update step for all (site, layer) tensors; the same numbers
        return torch.optim.Adam(self.method.parameters(), lr=self.lr, foreach=True)

    # -- evaluation -----------------------------------------------------------------
    def _eval_step(self, batch: dict, split: str) -> None:
        with torch.no_grad():
            (logits_pos, logits_neg), tails = self.steered(batch)
        update_metric(self.metrics[split], batch, logits_pos, logits_neg, tails)

    def _eval_epoch_end(self, split: str, prefix: str) -> None:
        values = self.metrics[split].compute()
        values.update(parameter_metrics(self.method.minimality_vector(), self.method.n_params))
        values.pop("n")
        self.log_dict(flatten(values, f"{prefix}/"), prog_bar=False)
        self.metrics[split].reset()

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val", "val")

    @torch.no_grad()
    def evaluate(self, loader) -> dict:
        """Metrics of the current intervention over a whole loader (no Lightning loop)."""
        metric = InterventionMetrics(sync_on_compute=False).to(self.device)  # each DDP process reads the whole loader
        for batch in loader:
            batch = {k: v.to(self.device) for k, v in batch.items()}
            (logits_pos, logits_neg), tails = self.steered(batch)
            update_metric(metric, batch, logits_pos, logits_neg, tails)
        values = metric.compute()
        values.update(parameter_metrics(self.method.minimality_vector(), self.method.n_params))
        return values

    # -- device handling for the unregistered model -----------------------------------
    def _sync_model_device(self) -> None:
        if model_device(self.model) != self.device:
            self.model.to(self.device)
        if self._frozen.plain is not None and model_device(self._frozen.plain) != self.device:
            self._frozen.plain.to(self.device)

    def on_fit_start(self) -> None:
        self._sync_model_device()

    def on_validation_start(self) -> None:
        self._sync_model_device()
