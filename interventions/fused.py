"""Fused training: K objective configurations of one method, in one batched pass per step.

A sweep over λ_F, λ_M and m trains K interventions of the same method on the same grid,
data and seed. Here they train together: each step the batch is repeated K × 2 times
(configuration k, then β = +1 / -1), every configuration's hooks act only on its own rows,
and the loss is the sum of the K objectives. The K parameter sets are disjoint and Adam
is elementwise, so each configuration follows exactly the trajectory of its own separate
run (same data order, same initialisation); only floating-point summation order differs.

    >>> methods = train_fused(model, train, [Objective(0, 0, 1), Objective(1, 0.01, 1)], epochs=5)
"""

from __future__ import annotations

import torch

from interventions.forward import last_position_logits
from interventions.methods import METHODS, Method
from interventions.objective import Objective
from interventions.sites import DEFAULT_SITES
from interventions.tasks.datapoint import Task


def fused_hooks(methods: list[Method], beta: torch.Tensor) -> list:
    """Hooks applying methods[k] with β rows `beta[k]` to the k-th block of the batch.

    Args:
        methods: K methods of one class on one grid.
        beta: [K, rows_per_method] steering strengths.
    """
    per_method = [m.hooks(beta[k]) for k, m in enumerate(methods)]
    names = [name for name, _ in per_method[0]]
    k_count = len(methods)

    def combined(j):
        def hook(h, hook=None):
            chunks = h.chunk(k_count, dim=0)
            return torch.cat([per_method[k][j][1](chunks[k], hook) for k in range(k_count)], dim=0)

        return hook

    return [(name, combined(j)) for j, name in enumerate(names)]


def fused_step_logits(model, methods: list[Method], batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """Last-position logits [K, B, vocab] at β = +1 and at β = -1, from one forward."""
    k_count, b = len(methods), batch["input_ids"].shape[0]
    reps = 2 * k_count
    beta = torch.tensor([1.0, -1.0], device=batch["input_ids"].device).repeat_interleave(b).repeat(k_count, 1)
    logits = last_position_logits(
        model,
        batch["input_ids"].repeat(reps, 1),
        batch["attention_mask"].repeat(reps, 1),
        batch["last_index"].repeat(reps),
        fwd_hooks=fused_hooks(methods, beta),
    )
    logits = logits.view(k_count, 2, b, -1)
    return logits[:, 0], logits[:, 1]


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
    seed: int = 0,
) -> list[Method]:
    """Train one `method` per objective together; returns the K trained methods.

    Same data order and initialisation as `train_intervention` with the same arguments.
    """
    from interventions.training import initialized_method, prepare

    if not METHODS[method].trained:
        raise ValueError(f"{method} is not trained; nothing to fuse")
    dm, seq_len = prepare(model, train, None, None, method, batch_size=batch_size, padding_side="right", seed=seed)
    device = next(model.parameters()).device
    grid = dict(sites=sites, layers=layers, positions=positions, heads=heads)
    methods = [
        initialized_method(method, model, dm, train[0].prompt, seq_len, grid, init, init_scale, seed) for _ in objectives
    ]
    params = [p for m in methods for p in m.parameters()]
    optimizer = torch.optim.Adam(params, lr=lr or METHODS[method].default_lr)
    loader = dm.train_dataloader()
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)  # as Lightning does: the same batches as separate runs
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            logits_pos, logits_neg = fused_step_logits(model, methods, batch)
            hold = (batch["hold_correct"], batch["hold_wrong"]) if "hold_correct" in batch else None
            loss = sum(
                objective(logits_pos[k], logits_neg[k], batch["correct"], batch["wrong"],
                          batch["clean_logprobs"], methods[k].flat_params(), hold=hold)[0]
                for k, objective in enumerate(objectives)
            )  # fmt: skip
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return methods
