"""SteerVec geometry (paper Fig. 4): Kendall τ across seeds, per-location norm change and
cosine distance (checked against a direct computation on run_with_cache), the study."""

from __future__ import annotations

import pytest
import torch

from interventions.reports.geometry import (
    geometry_study,
    pairwise_kendall,
    seed_consistency,
    steervec_geometry,
    tau_line,
    vector_agreement,
    write_geometry,
)
from interventions.methods import SteerVec
from interventions.sites import build_grid
from interventions.tasks import load_task
from interventions.spec import RunSpec
from interventions.methods import intervention_spec

SEQ = 6


# -- Kendall τ ---------------------------------------------------------------------------
def test_kendall_identical_and_reversed():
    a = [0.1, 0.5, 0.2, 0.9, 0.3]
    assert seed_consistency([a, a]) == pytest.approx(1.0)
    assert seed_consistency([a, [-x for x in a]]) == pytest.approx(-1.0)
    assert seed_consistency([[1, 2, 3, 4, 5], [5, 4, 3, 2, 1]]) == pytest.approx(-1.0)


def test_kendall_known_swap_counts():
    # one adjacent swap among 5 items: 1 discordant pair of 10 -> (9 - 1) / 10
    assert seed_consistency([[1, 2, 3, 4, 5], [2, 1, 3, 4, 5]]) == pytest.approx(0.8)
    # two swaps among 4 items: 2 discordant of 6 -> (4 - 2) / 6
    assert seed_consistency([[1, 2, 3, 4], [2, 1, 4, 3]]) == pytest.approx(1 / 3)
    # three runs: pairs (a, a) = 1, (a, rev) = -1, (a, rev) = -1
    a, rev = [1, 2, 3, 4], [4, 3, 2, 1]
    assert pairwise_kendall([a, a, rev]) == pytest.approx([1.0, -1.0, -1.0])
    assert seed_consistency([a, a, rev]) == pytest.approx(-1 / 3)
    with pytest.raises(ValueError):
        seed_consistency([a])
    with pytest.raises(ValueError):
        seed_consistency([a, [1, 2, 3]])


# -- per-location geometry ----------------------------------------------------------------
@pytest.fixture(scope="module")
def prompts(tiny_model):
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(4, tiny_model.cfg.d_vocab, (5, SEQ), generator=g)
    ids[:, 0] = tiny_model.tokenizer.bos_token_id
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


@pytest.fixture(scope="module")
def steervec(tiny_model):
    grid = build_grid(tiny_model.cfg, sites=["attnOut", "mlpOut", "z"], positions=[0, 2, 5], seq_len=SEQ)
    method = SteerVec(grid, tiny_model.cfg)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in method.params.values():
            p.copy_(torch.randn(p.shape, generator=g))
    return method


def _find(geo, **where):
    (i,) = [i for i, loc in enumerate(geo["locations"]) if all(loc[k] == v for k, v in where.items())]
    return geo["norm_change"][i], geo["cosine_distance"][i]


def test_norm_change_and_cosine_distance_match_direct_computation(tiny_model, prompts, steervec):
    geo = steervec_geometry(tiny_model, steervec, prompts)
    assert geo["n_prompts"] == 5
    # 3 positions x 2 layers x (attnOut + mlpOut + 4 heads of z)
    assert len(geo["locations"]) == len(geo["norm_change"]) == 3 * 2 * (1 + 1 + 4)
    with torch.no_grad():
        _, cache = tiny_model.run_with_cache(prompts["input_ids"])
    for site, hook, layer, pos_i, head in (
        ("mlpOut", "blocks.1.hook_mlp_out", 1, 1, ""),
        ("attnOut", "blocks.0.hook_attn_out", 0, 2, ""),
        ("z", "blocks.1.attn.hook_z", 1, 0, 2),
    ):
        pos = steervec.grid.positions[pos_i]
        h = cache[hook][:, pos]  # [N, D] or [N, heads, d_head]
        v = steervec.param(site, layer).detach()[pos_i]
        if head != "":
            h, v = h[:, head], v[head]
        hv = h + v
        expected_norm = (hv.norm(dim=-1) - h.norm(dim=-1)).mean()
        cos = (h * hv).sum(-1) / (h.norm(dim=-1) * hv.norm(dim=-1))
        expected_cos = (1 - cos).mean()
        norm_change, cos_dist = _find(geo, site=site, layer=layer, position=pos, head=head)
        assert norm_change == pytest.approx(float(expected_norm), abs=1e-4)
        assert cos_dist == pytest.approx(float(expected_cos), abs=1e-5)
        assert cos_dist > 0.0
        (i,) = [i for i, loc in enumerate(geo["locations"])
                if (loc["site"], loc["layer"], loc["position"], loc["head"]) == (site, layer, pos, head)]  # fmt: skip
        assert geo["vector_norm"][i] == pytest.approx(float(v.norm()), rel=1e-5)


def test_vector_agreement_on_hand_made_vectors():
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    runs = [[e1, e1], [e1, e2], [-e1, 2 * e2]]
    # location 0: pairs (e1, e1) = 1, (e1, -e1) = -1, (e1, -e1) = -1
    # location 1: pairs (e1, e2) = 0, (e1, 2e2) = 0, (e2, 2e2) = 1
    assert vector_agreement(runs) == pytest.approx([-1 / 3, 1 / 3])


def test_a_loader_averages_like_one_batch(tiny_model, prompts, steervec):
    whole = steervec_geometry(tiny_model, steervec, prompts)
    parts = [{k: v[:2] for k, v in prompts.items()}, {k: v[2:] for k, v in prompts.items()}]
    split = steervec_geometry(tiny_model, steervec, parts)
    assert split["norm_change"] == pytest.approx(whole["norm_change"], abs=1e-5)
    assert split["cosine_distance"] == pytest.approx(whole["cosine_distance"], abs=1e-6)


def test_zero_vector_changes_nothing(tiny_model, prompts):
    grid = build_grid(tiny_model.cfg, sites=["residPost"], positions="all", seq_len=SEQ)
    geo = steervec_geometry(tiny_model, SteerVec(grid, tiny_model.cfg), prompts)
    assert max(abs(x) for x in geo["norm_change"]) < 1e-5
    assert max(abs(x) for x in geo["cosine_distance"]) < 1e-5


# -- the study ----------------------------------------------------------------------------
def test_geometry_study_on_the_tiny_model(tiny_model, tmp_path):
    train = load_task("ccc", model=tiny_model, split="train", n=8, fixed_length=True)
    test = load_task("ccc", model=tiny_model, split="test", n=4, fixed_length=True)
    result = geometry_study(tiny_model, train, test, n_seeds=2, intervention=intervention_spec("steervec", sites=["mlpOut"]),
                            run=RunSpec(epochs=1, batch_size=4))  # fmt: skip
    assert {"norm_change", "cosine_distance", "kendall_tau", "locations"} <= set(result)
    assert set(result["kendall_tau"]) >= {"norm", "direction"}
    n_loc = len(result["locations"])
    assert n_loc == tiny_model.cfg.n_layers * len(tiny_model.to_str_tokens(train[0].prompt))
    for q in ("norm_change", "cosine_distance"):
        assert len(result[q]["per_seed"]) == 2 and all(len(r) == n_loc for r in result[q]["per_seed"])
        assert len(result[q]["mean"]) == n_loc
    # the τ values are the helper's on the stored per-seed values
    norm_abs = [[abs(x) for x in r] for r in result["norm_change"]["per_seed"]]
    assert result["kendall_tau"]["norm"] == pytest.approx(seed_consistency(norm_abs))
    assert result["kendall_tau"]["direction"] == pytest.approx(
        seed_consistency(result["cosine_distance"]["per_seed"])
    )
    assert len(result["vector_cosine"]["per_location"]) == n_loc
    assert -1.0 <= result["vector_cosine"]["mean"] <= 1.0
    # different seeds give different vectors
    assert result["cosine_distance"]["per_seed"][0] != result["cosine_distance"]["per_seed"][1]
    written = write_geometry(tmp_path, result)
    assert all(p.exists() and p.stat().st_size > 0 for p in written)
    assert tau_line(result).startswith("norm τ = ")
