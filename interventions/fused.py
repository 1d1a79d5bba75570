"""Fused training: K objective configurations of one method, in one batched pass per step.

A sweep over λ_F, λ_M and m trains K interventions of the same method on the same grid,
data and seed. Here they train together: each step the batch is repeated K × 2 times
(configuration k, then β = +1 / -1), every configuration's hooks act only on its own rows,
and the loss is the sum of the K objectives. The K parameter sets are the slices of one
stacked leaf per parameter name and Adam is elementwise, so each configuration follows
exactly the trajectory of its own separate run (same data order, same initialisation);
only floating-point summation order differs.

    >>> methods = train_fused(model, train, [Objective(0, 0, 1), Objective(1, 0.01, 1)], epochs=5)
"""

from __future__ import annotations

import torch
from torch.func import functional_call, vmap

from interventions.errors import ConfigError
from interventions.forward import model_device, repeated_batch_logits
from interventions.methods import METHODS, Method
from interventions.objective import Objective, example_terms, minimality_loss, weighted_sum
from interventions.sites import DEFAULT_SITES
from interventions.tasks.datapoint import Task


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
    prefix_layer: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Last-position logits [K, B, vocab] at β = +1 and at β = -1, from one forward of the
    batch repeated K × 2 times (K = the stacked parameters' first dimension); from the
    cached residual `batch["resid_pre"]` when `prefix_layer` > 0, as in separate runs."""
    k_count, b = next(iter(stacked.values())).shape[0], batch["input_ids"].shape[0]
    beta = torch.tensor([1.0, -1.0], device=batch["input_ids"].device).repeat_interleave(b).repeat(k_count, 1)
    hooks = fused_hooks(proto, stacked, beta)
    logits = repeated_batch_logits(model, batch, 2 * k_count, hooks, prefix_layer=prefix_layer, skip_unread=skip_unread)
    logits = logits.view(k_count, 2, b, -1)
    return logits[:, 0], logits[:, 1]


def fused_loss(objectives: list[Objective], stacked: dict[str, torch.Tensor], batch: dict, logits_pos, logits_neg) -> torch.Tensor:
    """Σ_k objective_k on block k, computed for all K at once: the per-example terms of all
    K × B rows in one call (margins per row), each configuration's batch means [K], its
    M_k = ‖vec(θ_k)‖₁ [K] and its weights [K] (`objective.weighted_sum`).

    Args:
        logits_pos, logits_neg: [K, B, vocab] from `fused_step_logits`.
    """
    k_count, b = logits_pos.shape[:2]
    device = logits_pos.device

    def per_config(key: str) -> torch.Tensor:
        return torch.tensor([getattr(o, key) for o in objectives], device=device)

    hold = None
    if "hold_correct" in batch and any(o.lambda_hold > 0 for o in objectives):
        hold = (batch["hold_correct"].repeat(k_count), batch["hold_wrong"].repeat(k_count))
    terms = example_terms(
        logits_pos.flatten(0, 1), logits_neg.flatten(0, 1), batch["correct"].repeat(k_count),
        batch["wrong"].repeat(k_count), batch["clean_logprobs"].repeat(k_count, 1),
        per_config("margin").repeat_interleave(b), hold,
    )  # fmt: skip
    means = {name: values.view(k_count, b).mean(1) for name, values in terms.items()}
    minimality = minimality_loss(torch.cat([values.flatten(1) for values in stacked.values()], 1))
    total = weighted_sum(means, minimality, per_config("lambda_f"), per_config("lambda_m"), per_config("lambda_hold"))
    return total.sum()


def train_fused(
    model,
    train: Task,
    objectives: list[Objective],
    method: str = "activscalar",
    *,
    sites=DEFAULT_SITES,
    layers="all",
    positions="all",
    heads="all",
    init: str = "normal",
    init_scale: float = 1e-5,
    lr: float | None = None,
    epochs: int = 25,
    batch_size: int = 4,
    padding_side: str = "right",
    seed: int = 0,
    prefix_skip: bool = True,
    skip_unread: bool = False,
    progress: bool = False,
) -> list[Method]:
    """Train one `method` per objective together; returns the K trained methods.

    Same data order, initialisation and forward path as `train_intervention` with the same
    arguments (`padding_side`, `prefix_skip` and `skip_unread` as there). `progress`: a
    progress bar over the steps, with the summed loss of the K settings.
    """
    from tqdm.auto import tqdm

    from interventions.training import initialized_method, prepare, skip_prefix

    if not METHODS[method].trained:
        raise ConfigError(f"{method} is training-free: there is no objective to vary, nothing to fuse")
    dm, seq_len = prepare(model, train, None, None, method, batch_size=batch_size, padding_side=padding_side, seed=seed)
    device = model_device(model)
    grid = dict(sites=sites, layers=layers, positions=positions, heads=heads)
    methods = [
        initialized_method(method, model, dm, train[0].prompt, seq_len, grid, init, init_scale, seed) for _ in objectives
    ]
    prefix = skip_prefix(model, dm, methods[0], prefix_skip)
    stacked = stack_parameters(methods)
    optimizer = torch.optim.Adam(stacked.values(), lr=lr or METHODS[method].default_lr, foreach=True)
    loader = dm.train_dataloader()
    bar = tqdm(total=epochs * len(loader), desc=f"fused {method} ×{len(objectives)}", disable=not progress,
               mininterval=0.2, leave=True)  # fmt: skip
    with bar:
        for epoch in range(epochs):
            loader.sampler.set_epoch(epoch)  # as Lightning does: the same batches as separate runs
            for batch in loader:
                batch = {k: v.to(device) for k, v in batch.items()}
                logits = fused_step_logits(model, methods[0], stacked, batch, skip_unread, prefix)
                loss = fused_loss(objectives, stacked, batch, *logits)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                bar.update()
            bar.set_postfix(epoch=epoch, loss=f"{loss.item():.4g}")
    unstack_into(stacked, methods)
    return methods
