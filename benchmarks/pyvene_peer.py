"""The peer: the same ActivScalar training written with pyvene, for `run.py peer`.

pyvene (https://github.com/stanfordnlp/pyvene) is an optional, benchmark-only dependency:
`pip install -e .[bench]`. Nothing in `interventions/` imports it.

The peer trains exactly what `train_intervention(method="activscalar")` trains: α per
(site, layer, position) on attnOut + mlpOut of every layer, h · (1 + β α), the objective
E_m + λ_F F + λ_M ‖α‖₁ at β = +1 and β = -1, Adam, the same initial α, the same batches
in the same order and the same clean log-probs (computed once, as a pyvene user who read
our README would). It is written the way pyvene 0.1.8 asks for it:

- a custom intervention that subclasses both `SourcelessIntervention` (no source run)
  and `TrainableIntervention` (its parameters are trained), and receives the selected
  positions flattened to [batch, positions · d_model];
- one `RepresentationConfig` per (layer, component), components `attention_output` and
  `mlp_output` (GPT-2's attn.resid_dropout and mlp outputs: our attnOut and mlpOut);
- `disable_model_gradients()` so the frozen weights get no gradients (pyvene's default
  leaves them requiring grad: `build_peer(model_gradients=True)` measures that too);
- β passed per call through `intervention_additional_kwargs`, so one step is two
  forward passes (β = +1, β = -1) of the HF model, each computing logits at every
  position unless `logits_to_keep=1` is asked for (HF's option: the last position only).
"""

from __future__ import annotations

import time

import torch

from interventions.models import model_device

COMPONENTS = {"attnOut": "attention_output", "mlpOut": "mlp_output"}


def scalar_intervention_class():
    """The ActivScalar intervention as a pyvene class (built lazily: pyvene is optional)."""
    import pyvene as pv

    class ScalarIntervention(pv.SourcelessIntervention, pv.TrainableIntervention):
        """h · (1 + β α) with one α per position; pyvene hands over [batch, positions · d]."""

        def __init__(self, n_positions: int, d_model: int, **kwargs):
            super().__init__(**kwargs)
            self.d_model = d_model
            self.alpha = torch.nn.Parameter(torch.zeros(n_positions))

        def forward(self, base, source=None, subspaces=None, beta: float = 1.0, **kwargs):
            h = base.view(base.shape[0], -1, self.d_model)  # [batch, positions, d_model]
            return (h * (1 + beta * self.alpha[None, :, None])).view(base.shape)

    return ScalarIntervention


def build_peer(hf_model, seq_len: int, init: torch.Tensor, sites=("attnOut", "mlpOut"), model_gradients=False):
    """(IntervenableModel, [ScalarIntervention]) on every layer of `hf_model` (a GPT2LMHeadModel).

    The interventions are listed in `Method.flat_params` order (site-major, then layer) and
    start from `init` [sites · layers · seq_len], our method's initial `flat_params()`.
    `model_gradients=True` leaves the weights requiring grad, as HF loads them and pyvene
    leaves them unless told otherwise (they then get unused gradients every step); the caller
    freezes them again.
    """
    import pyvene as pv

    cls = scalar_intervention_class()
    d_model, n_layers = hf_model.config.n_embd, hf_model.config.n_layer
    device = model_device(hf_model)
    interventions = [cls(seq_len, d_model).to(device) for _ in sites for _ in range(n_layers)]
    with torch.no_grad():
        for iv, alpha in zip(interventions, init.split(seq_len), strict=True):
            iv.alpha.copy_(alpha)
    representations = [
        pv.RepresentationConfig(layer, COMPONENTS[site], "pos", seq_len, intervention=interventions[i * n_layers + layer])
        for i, site in enumerate(sites)
        for layer in range(n_layers)
    ]  # fmt: skip
    peer = pv.IntervenableModel(pv.IntervenableConfig(representations=representations), hf_model)
    if model_gradients:  # not enable_model_gradients(): that also switches dropout on (model.train())
        hf_model.requires_grad_(True)
    else:
        peer.disable_model_gradients()
    return peer, interventions


def peer_step(peer, interventions, objective, optimizer, batch: dict, logits_to_keep: int = 0) -> torch.Tensor:
    """One training step: two β passes, the objective, Adam. Returns the loss.

    Args:
        batch: a TaskDataModule batch of one prompt length (input_ids [B, T],
            attention_mask [B, T], correct/wrong [B], clean_logprobs [B, vocab]).
        logits_to_keep: 0 = HF's default (logits at every position), 1 = last position only.
    """
    seq_len = batch["input_ids"].shape[1]
    base = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
    if logits_to_keep:
        base["logits_to_keep"] = logits_to_keep
    last = []
    for beta in (1.0, -1.0):
        _, out = peer(base, unit_locations={"base": list(range(seq_len))}, intervention_additional_kwargs={"beta": beta})
        last.append(out.logits[:, -1])
    alpha = torch.cat([iv.alpha for iv in interventions])
    loss, _ = objective(last[0], last[1], batch["correct"], batch["wrong"], batch["clean_logprobs"], alpha)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def train_peer(peer, interventions, dm, objective, *, lr: float, epochs: int, logits_to_keep: int = 0,
               sync=lambda: None) -> list[float]:  # fmt: skip
    """Train on `dm`'s train batches in our order (sampler.set_epoch), on the interventions'
    device, as our Trainer does (batches moved there one by one); seconds per epoch, read
    after `sync` (benchmarks/run.py `device_sync`)."""
    optimizer = torch.optim.Adam([iv.alpha for iv in interventions], lr=lr)
    device = interventions[0].alpha.device
    loader = dm.train_dataloader()
    seconds = []
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        sync()
        start = time.perf_counter()
        for batch in loader:
            batch = {k: v.to(device) for k, v in batch.items()}
            peer_step(peer, interventions, objective, optimizer, batch, logits_to_keep)
        sync()
        seconds.append(time.perf_counter() - start)
    return seconds


def bare_epoch(hf_model, dm, components=tuple(COMPONENTS.values()), sync=lambda: None) -> float:
    """Seconds for one epoch of the floor on the raw HF model, on its device: per batch, one
    forward of the doubled batch (β = ±1 rows) + backward from the last position's logits,
    with gradients flowing only to the hooked activations (each multiplied by a leaf of ones)."""
    modules = {"attention_output": lambda block: block.attn.resid_dropout, "mlp_output": lambda block: block.mlp}
    device = model_device(hf_model)

    def leaf_hook(module, args, output):
        return output * torch.ones((), device=output.device, requires_grad=True)

    handles = [modules[c](block).register_forward_hook(leaf_hook) for c in components for block in hf_model.transformer.h]
    requires = [p.requires_grad for p in hf_model.parameters()]
    hf_model.requires_grad_(False)  # the floor has no weight gradients
    try:
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(0)
        sync()
        start = time.perf_counter()
        for batch in loader:
            ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
            out = hf_model(input_ids=ids.repeat(2, 1), attention_mask=mask.repeat(2, 1), logits_to_keep=1)
            out.logits.sum().backward()
        sync()
        return time.perf_counter() - start
    finally:
        for handle in handles:
            handle.remove()
        for p, r in zip(hf_model.parameters(), requires):
            p.requires_grad_(r)
