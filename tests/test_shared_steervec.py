"""SteerVec shared by all positions (intervention=steervec_shared): one vector per (site,
layer), added at every position of prompts of any length and of generated tokens."""

from __future__ import annotations

import pytest
import torch

from interventions.export import load_intervention, save_intervention
from interventions.generation import generate_tokens
from interventions.methods import METHODS
from interventions.reports.locations import location_rows
from interventions.sites import build_grid, hook_name
from interventions.spec import ObjectiveSpec, RunSpec, TrainedInterventionSpec
from interventions.tasks import load_task
from interventions.tasks.tokenize import prompt_token_ids
from interventions.training.fused import train_fused
from interventions.training.train import train_intervention


def shared(model, sites, scale: float = 0.5):
    method = METHODS["steervec_shared"](build_grid(model.cfg, sites=sites, positions=None), model.cfg, model.W_O)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in method.params.values():
            p.copy_(torch.randn(p.shape, generator=generator) * scale)
    return method


@pytest.mark.parametrize("site", ["attnOut", "residPost", "z", "o"])
def test_the_hook_adds_one_vector_at_every_position(tiny_model, site):
    method = shared(tiny_model, [site])
    cfg = tiny_model.cfg
    shapes = {"attnOut": (cfg.d_model,), "residPost": (cfg.d_model,), "z": (cfg.n_heads, cfg.d_head),
              "o": (cfg.n_heads, cfg.d_model)}  # fmt: skip
    assert not method.position_tied and tuple(method.param(site, 1).shape) == shapes[site]
    v = method.param(site, 1).detach()
    for length in (3, 7):
        shape = (2, length, tiny_model.cfg.n_heads, tiny_model.cfg.d_head) if site in ("z",) else (2, length, tiny_model.cfg.d_model)
        h = torch.randn(shape)
        out = method(h, torch.tensor([1.0, -2.0]), site, 1)
        want = h + torch.tensor([1.0, -2.0]).view(2, *([1] * (h.dim() - 1))) * (v.sum(0) if site == "o" else v)
        torch.testing.assert_close(out, want)


def test_generation_steers_generated_tokens_too(tiny_model):
    """Greedy tokens equal the full forward with v added at every position, generated ones included."""
    method = shared(tiny_model, ["residPost"], scale=2.0)
    ids = prompt_token_ids(tiny_model, ["The capital of France is"])[0]
    got = generate_tokens(tiny_model, method, [ids], (1.0,), 5)[0, 0].tolist()
    seq = list(ids)
    hooks = [(hook_name("residPost", layer), lambda h, hook, layer=layer: h + method.param("residPost", layer).detach())
             for layer in method.grid.layers]  # fmt: skip
    with tiny_model.hooks(fwd_hooks=hooks):
        for _ in range(5):
            seq.append(int(tiny_model(torch.tensor([seq]))[0, -1].argmax()))
    assert got == seq[len(ids) :]


def test_trains_on_prompts_of_several_lengths_and_transfers(tiny_model, tmp_path):
    train = load_task("ccc", model=tiny_model, split="train", template="all", n=24)
    lengths = {len(x) for x in prompt_token_ids(tiny_model, train.prompts)}
    assert len(lengths) > 1  # not one length: a position-tied method would refuse this
    spec = TrainedInterventionSpec(method="steervec_shared", lr=0.05, sites=["residPost"])
    out = train_intervention(tiny_model, train, intervention=spec, run=RunSpec(epochs=2))
    assert out.method.flat_params().abs().max() > 1e-3
    save_intervention(tmp_path, out.method, tiny_model, "tiny", {})
    iv = load_intervention(tmp_path)
    torch.testing.assert_close(iv.method.flat_params(), out.method.flat_params())
    other = torch.tensor(prompt_token_ids(tiny_model, ["When Mary and John went to the store , John gave a book to"]))
    with iv.apply(tiny_model, beta=1.0):
        steered = tiny_model(other)
    assert (steered - tiny_model(other)).abs().max() > 1e-4
    rows = location_rows(iv.method)
    assert {r["token"] for r in rows} == {"every position"} and len(rows) == tiny_model.cfg.n_layers


def test_fused_training_gives_the_parameters_of_separate_runs(tiny_model):
    train = load_task("ccc", model=tiny_model, split="train", template=0, n=12)
    spec = TrainedInterventionSpec(method="steervec_shared", init_scale=1e-2, lr=0.05)
    objectives = [ObjectiveSpec(0.0, 0.0, 1.0), ObjectiveSpec(1.0, 0.01, 2.0)]
    fused = train_fused(tiny_model, train, objectives, intervention=spec, run=RunSpec(epochs=2))
    for objective, got in zip(objectives, fused):
        separate = train_intervention(tiny_model, train, intervention=spec, objective=objective, run=RunSpec(epochs=2))
        torch.testing.assert_close(got.flat_params(), separate.method.flat_params(), atol=1e-5, rtol=0)
