"""Fused training: K objective configurations of one method, in one batched pass per step.

A sweep over λ_F, λ_M and m trains K interventions of the same method on the same grid,
data and seed. Here they train together: each step the batch is repeated K × 2 times
(configuration k, then β = +1 / -1), every configuration's hooks act only on its own rows,
and the loss is the sum of the K objectives. The K parameter sets are the slices of one
stacked leaf per parameter name and Adam is elementwise, so each configuration follows
exactly the trajectory of its own separate run (same data order, same initialisation);
only floating-point summation order differs.

    >>> methods = train_fused(model, train, [Objective(0, 0, 1), Objective(1, 0.01, 1)], run=RunSpec(epochs=5))
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch.func import functional_call, vmap
from tqdm.auto import tqdm

from interventions.errors import ConfigError, NonFiniteError
from interventions.forward import has_answer_tails, repeated_batch_logits
from interventions.interrupts import raise_if_signalled
from interventions.methods.base import Method, nonzero_locations
from interventions.methods.registry import intervention_spec, method_class
from interventions.models import model_device
from interventions.numerics import first_overflow, likely_cause, overflow_message, residual_probe
from interventions.objective import Objective, example_terms, minimality_loss, weighted_sum
from interventions.plain import plain_form, plain_logits, plain_usable, steered_answer_tails
from interventions.spec import ObjectiveSpec, RunSpec, TrainedInterventionSpec
from interventions.tasks.datapoint import Task
from interventions.training.progress import EpochLines, on_terminal
from interventions.training.setup import initialized_method, learning_rate, prepare, skip_prefix


def stack_parameters(methods: list[Method]) -> dict[str, torch.nn.Parameter]:
    """The K methods' parameters as one trainable leaf per parameter name, [K, *shape].

    Training the stacked leaves (one Adam state per name, no per-step stacking) is what
    the fused loop does; `unstack_into` writes the result back into the K methods.
    """
    return {
        name: torch.nn.Parameter(torch.stack([m.get_parameter(name).detach() for m in methods]))
        for name, _ in methods[0].named_parameters()
    }


@torch.no_grad()
def unstack_into(stacked: dict[str, torch.Tensor], methods: list[Method]) -> None:
    """Copy slice k of every stacked parameter into methods[k]."""
    for name, values in stacked.items():
        for k, m in enumerate(methods):
            m.get_parameter(name).copy_(values[k])


def fused_hooks(proto: Method, stacked: dict[str, torch.Tensor], beta: torch.Tensor) -> list:
    """Hooks applying parameter set k with β rows `beta[k]` to the k-th block of the batch.

    One vectorised call per hook point: `proto`'s hook runs under `torch.func.vmap` over
    the K blocks, with slice k of every stacked parameter swapped in by `functional_call`.
    Looping over K hooks gives the same numbers but costs K small calls per hook point.

    Args:
        proto: a method of the class and grid being trained (its own values are unused).
        stacked: {parameter name: [K, *shape]}, from `stack_parameters`.
        beta: [K, rows_per_config] steering strengths.
    """
    k_count = beta.shape[0]

    def fused(site: str, layer: int):
        def one(params, h, b):  # h: one configuration's rows [rows, pos, ...]
            return functional_call(proto, params, (h, b, site, layer))

        batched = vmap(one)

        def hook(h, hook=None):
            return batched(stacked, h.view(k_count, -1, *h.shape[1:]), beta).reshape(h.shape)

        return hook
    return [(proto.site_hook(site, layer, 1.0)[0], fused(site, layer)) for site in proto.grid.sites for layer in proto.grid.layers]


def fused_step_logits(
    model, proto: Method, stacked: dict[str, torch.Tensor], batch: dict, skip_unread: bool = False,
    prefix_layer: int = 0, extra_hooks=(), plain=None,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Last-position logits [K, B, vocab] at β = +1 and at β = -1, from one forward of the
    batch repeated K × 2 times (K = the stacked parameters' first dimension); from the
    cached residual `batch["resid_pre"]` when `prefix_layer` > 0, as in separate runs.
    `extra_hooks` run after the K settings' (e.g. `numerics.residual_probe`). `plain`: the
    model's plain form (`plain.plain_form`), used where the step allows, as separate runs do."""
    k_count, b = next(iter(stacked.values())).shape[0], batch["input_ids"].shape[0]
    beta = torch.tensor([1.0, -1.0], device=batch["input_ids"].device).repeat_interleave(b).repeat(k_count, 1)
    hooks = [*fused_hooks(proto, stacked, beta), *extra_hooks]
    if plain is not None and plain_usable(prefix_layer, skip_unread, extra_hooks):
        logits = plain_logits(plain, hooks, batch, 2 * k_count, proto.cfg_dims["n_heads"])
    else:
        logits = repeated_batch_logits(model, batch, 2 * k_count, hooks, prefix_layer=prefix_layer,
                                       skip_unread=skip_unread)  # fmt: skip
    logits = logits.view(k_count, 2, b, -1)
    return logits[:, 0], logits[:, 1]


def fused_step_scores(model, proto: Method, stacked: dict[str, torch.Tensor], batch: dict, **forward) -> tuple:
    """(logits⁺ [K, B, vocab], logits⁻ [K, B, vocab], tails) for one step: `fused_step_logits`
    and tails None; for answers of several tokens (docs/method.md §6) the last prompt
    position's logits and tails = (tail⁺ [K, B], tail⁻ [K, B]) from one forward of the
    teacher-forced sequences repeated K × 2 times (`plain.steered_answer_tails`)."""
    if not has_answer_tails(batch):
        pos, neg = fused_step_logits(model, proto, stacked, batch, **forward)
        if "answer_ids" not in batch:
            return pos, neg, None
        return pos, neg, (pos.new_zeros(pos.shape[:2]), neg.new_zeros(neg.shape[:2]))  # one-token answers: no tail
    k_count, b = next(iter(stacked.values())).shape[0], batch["input_ids"].shape[0]

    def steer(beta: torch.Tensor) -> list:
        return fused_hooks(proto, stacked, beta.view(k_count, -1))

    pairs = steered_answer_tails(model, forward.get("plain"), proto, batch, (1.0, -1.0) * k_count, steer=steer)
    logits = torch.stack([first for first, _ in pairs]).view(k_count, 2, b, -1)
    tails = torch.stack([tail for _, tail in pairs]).view(k_count, 2, b)
    return logits[:, 0], logits[:, 1], (tails[:, 0], tails[:, 1])


class _MinimalityOf(torch.nn.Module):
    """A method's `minimality_vector` as a module's forward, for `functional_call`."""

    def __init__(self, method: Method):
        super().__init__()
        self.method = method

    def forward(self) -> torch.Tensor:
        return self.method.minimality_vector()


def stacked_minimality(proto: Method, stacked: dict[str, torch.Tensor]) -> torch.Tensor:
    """[K, n] each setting's `minimality_vector`: its parameters in one vector, or, for a
    method whose parameters are not its edit (LoReFT), the edit, vectorised over the K."""
    if type(proto).minimality_vector is Method.minimality_vector:
        return torch.cat([values.flatten(1) for values in stacked.values()], 1)
    wrapper = _MinimalityOf(proto)
    return vmap(lambda params: functional_call(wrapper, {f"method.{k}": v for k, v in params.items()}, ()))(stacked)


def fused_loss(objectives: list[Objective], stacked: dict[str, torch.Tensor], batch: dict, logits_pos, logits_neg,
               tails=None, proto: Method | None = None) -> torch.Tensor:  # fmt: skip
    """objective_k on block k for every k, computed for all K at once: the per-example terms
    of all K × B rows in one call (margins and effectiveness forms per row), each configuration's batch means [K],
    its M_k = ‖vec(θ_k)‖₁ [K] and its weights [K] (`objective.weighted_sum`).

    Args:
        logits_pos, logits_neg: [K, B, vocab] from `fused_step_scores`.
        tails: (tail⁺ [K, B], tail⁻ [K, B]) for answers of several tokens, or None.
    Returns:
        [K] the K objectives' values (the training loss is their sum).
    """
    k_count, b = logits_pos.shape[:2]
    device = logits_pos.device

    def per_config(key: str) -> torch.Tensor:
        return torch.tensor([getattr(o, key) for o in objectives], device=device)

    hold = None
    if "hold_correct" in batch and any(o.lambda_hold > 0 for o in objectives):
        hold = (batch["hold_correct"].repeat(k_count), batch["hold_wrong"].repeat(k_count))
    preference = [o.effectiveness == "preference" for o in objectives]
    if any(preference):  # per row: the form of its configuration (all hinge: exactly the hinge's terms)
        preference = torch.tensor(preference, device=device).repeat_interleave(b)
    terms = example_terms(
        logits_pos.flatten(0, 1), logits_neg.flatten(0, 1), batch["correct"].repeat(k_count),
        batch["wrong"].repeat(k_count), batch["clean_logprobs"].repeat(k_count, 1),
        per_config("margin").repeat_interleave(b), hold, (None, None) if tails is None else tuple(t.flatten() for t in tails),
        preference if isinstance(preference, torch.Tensor) else False,
    )  # fmt: skip
    means = {name: values.view(k_count, b).mean(1) for name, values in terms.items()}
    flat = torch.cat([values.flatten(1) for values in stacked.values()], 1) if proto is None else stacked_minimality(proto, stacked)
    minimality = minimality_loss(flat)
    return weighted_sum(means, minimality, per_config("lambda_f"), per_config("lambda_m"), per_config("lambda_hold"))


class FusedDivergence:
    """Which of K fused settings failed (`numerics`), and why. A failed setting is retired:
    its loss leaves the sum, and its parameters and Adam state are reset to zero after every
    step, so its rows run the clean model and the other settings train on unchanged (their
    parameters and Adam state are their own slices)."""

    def __init__(self, k_count: int, cause: str):
        self.errors: list[NonFiniteError | None] = [None] * k_count
        self.cause = cause

    @property
    def active(self) -> list[bool]:
        return [e is None for e in self.errors]

    def _fail(self, k: int, error: NonFiniteError) -> None:
        if self.errors[k] is None:
            self.errors[k] = error

    def losses(self, losses: torch.Tensor, epoch: int, step: int) -> torch.Tensor:
        """Record the settings whose loss [K] is not finite; returns the loss to minimise."""
        for k in (~torch.isfinite(losses.detach())).nonzero().flatten().tolist():
            self._fail(k, NonFiniteError(
                f"training failed at epoch {epoch}, step {step} (fused setting {k}): the loss is "
                f"{float(losses.detach()[k])}; {self.cause}", step))  # fmt: skip
        if all(self.active):
            return losses.sum()
        return torch.where(torch.tensor(self.active, device=losses.device), losses, 0.0).sum()

    def parameters(self, stacked: dict[str, torch.Tensor], epoch: int, step: int) -> None:
        """Record the settings with a NaN or infinite parameter after the optimizer step."""
        flat = torch.cat([values.detach().flatten(1) for values in stacked.values()], 1)  # [K, n]
        for k in (~torch.isfinite(flat).all(1)).nonzero().flatten().tolist():
            self._fail(k, NonFiniteError(
                f"training failed at epoch {epoch}, step {step} (fused setting {k}): parameters are NaN or "
                f"infinite after the optimizer step; {self.cause}", step))  # fmt: skip

    def overflow(self, model, proto: Method, stacked, batch: dict, epoch: int, step: int, **forward) -> None:
        """Record the settings whose residual stream or logits overflow on `batch` (see
        `InterventionModule.check_overflow`)."""
        hooks, found = residual_probe(model.cfg.n_layers)
        with torch.no_grad():
            pos, neg = fused_step_logits(model, proto, stacked, batch, extra_hooks=hooks, **forward)
        k_count, b = pos.shape[:2]
        bad, layer = first_overflow(found, torch.stack([pos, neg], 1).flatten(0, 2))
        bad, layer = bad.view(k_count, 2 * b), layer.view(k_count, 2 * b)
        for k in bad.any(1).nonzero().flatten().tolist():
            row = int(bad[k].nonzero()[0])
            largest = float(torch.cat([v[k].detach().abs().flatten() for v in stacked.values()]).max())
            message = overflow_message(int(layer[k, row]), model.cfg.n_layers, 1.0 if row < b else -1.0, largest,
                                       epoch, step, self.cause, label=f" (fused setting {k})")  # fmt: skip
            self._fail(k, NonFiniteError(message, step))

    @torch.no_grad()
    def retire(self, stacked: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer) -> None:
        """Reset the failed settings' parameters and Adam moments to zero."""
        failed = [k for k, ok in enumerate(self.active) if not ok]
        if not failed:
            return
        for values in stacked.values():
            values[failed] = 0.0
            for moment in optimizer.state.get(values, {}).values():
                if moment.dim() > 0:
                    moment[failed] = 0.0


@dataclass
class FusedState:
    """The K settings while they train: their stacked parameters, one Adam, the divergence
    watch, which locations got a gradient so far, and the forward's options."""

    model: object
    proto: Method
    stacked: dict[str, torch.Tensor]
    optimizer: torch.optim.Optimizer
    watch: "FusedDivergence"
    forward: dict  # fused_step_logits' skip_unread, prefix_layer and plain
    received: dict | None = None
    step: int = 0

    def train_step(self, objectives: list[Objective], batch: dict, epoch: int) -> torch.Tensor:
        """One optimizer step of every active setting on `batch`; returns the summed loss."""
        self.step += 1
        pos, neg, tails = fused_step_scores(self.model, self.proto, self.stacked, batch, **self.forward)
        loss = self.watch.losses(fused_loss(objectives, self.stacked, batch, pos, neg, tails, self.proto), epoch, self.step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.received = note_gradients(self.received, self.stacked, self.proto.vector_param)
        self.optimizer.step()
        self.watch.parameters(self.stacked, epoch, self.step)
        self.watch.retire(self.stacked, self.optimizer)
        return loss

    def end_epoch(self, probe: dict, epoch: int) -> None:
        """The epoch's overflow check on its first batch (`numerics`)."""
        self.watch.overflow(self.model, self.proto, self.stacked, probe, epoch, self.step, **self.forward)
        self.watch.retire(self.stacked, self.optimizer)

    def results(self, methods: list[Method]) -> list[Method | NonFiniteError]:
        """The K trained methods (their parameters and received gradients written back), or
        the error of each setting that failed."""
        unstack_into(self.stacked, methods)
        for k, m in enumerate(methods):
            if self.received is not None:
                m.received_gradient = {name.removeprefix("params."): seen[k] for name, seen in self.received.items()}
        return [error or m for m, error in zip(methods, self.watch.errors)]


def train_fused(
    model,
    train: Task,
    objectives: list[ObjectiveSpec],
    intervention: str | TrainedInterventionSpec = "activscalar",
    run: RunSpec | None = None,
    progress: bool = False,
) -> list[Method | NonFiniteError]:
    """Train one intervention per objective together; returns the K trained methods, in order.

    A setting whose loss, parameters or activations turn non-finite (`numerics`) fails
    alone: its entry is the `NonFiniteError` saying where and why, and the other settings
    train on. Same data order, initialisation and forward path as `train_intervention` with
    the same `intervention` and `run`. `progress`: a progress bar over the steps on a
    terminal (else a line per epoch), with the summed loss of the K settings.
    """
    spec, run = intervention_spec(intervention), run or RunSpec()
    cls = method_class(spec.method)
    if not cls.fusable():
        why = "training-free: there is no objective to vary" if not cls.trained else "not fusable"
        raise ConfigError(f"{spec.method} is {why}; nothing to fuse")
    objectives = [Objective(**asdict(o)) for o in objectives]
    dm, seq_len = prepare(model, train, None, None, spec, run)
    methods = [initialized_method(spec, model, dm, train[0].prompt, seq_len, run.seed) for _ in objectives]
    stacked, lr = stack_parameters(methods), learning_rate(spec)
    cause = likely_cause(lr, cls.default_lr, next(model.parameters()).dtype)
    state = FusedState(
        model, methods[0], stacked, torch.optim.Adam(stacked.values(), lr=lr, foreach=True),
        FusedDivergence(len(objectives), cause),
        dict(skip_unread=run.skip_unread, prefix_layer=skip_prefix(model, dm, methods[0], run.prefix_skip),
             plain=plain_form(model, methods[0], run.forward)),
    )  # fmt: skip
    loader, device = dm.train_dataloader(), model_device(model)
    label = f"fused {spec.method} ×{len(objectives)}"
    bar = tqdm(total=run.epochs * len(loader), desc=label, disable=not (progress and on_terminal()), mininterval=0.2,
               leave=True)  # fmt: skip
    lines = EpochLines(label, run.epochs) if progress and not on_terminal() else None
    with bar:
        for epoch in range(run.epochs):
            loader.sampler.set_epoch(epoch)  # as Lightning does: the same batches as separate runs
            batches = ({k: v.to(device) for k, v in batch.items()} for batch in loader)
            probe = None
            for batch in batches:
                raise_if_signalled()  # a signal whose exception the garbage collector swallowed stops the run here
                probe = probe or batch  # the epoch's first batch: the overflow check runs it at the end
                loss = state.train_step(objectives, batch, epoch)
                bar.update()
            state.end_epoch(probe, epoch)
            bar.set_postfix(epoch=epoch, loss=f"{loss.item():.4g}")
            if lines is not None:
                lines.epoch_end(epoch, loss.item())
            if not any(state.watch.active):
                break
    return state.results(methods)


def note_gradients(received: dict | None, stacked: dict[str, torch.Tensor], vector_param: bool) -> dict:
    """`Method.note_gradients` for K stacked settings at once: {name: [K, *locations] bool}."""
    received = received or {}
    for name, values in stacked.items():
        nonzero = nonzero_locations(values.grad, vector_param)
        received[name] = received[name] | nonzero if name in received else nonzero
    return received
