"""Observable propagation (interventions.obsprop): observables, feature vectors of heads,
paths and MLPs, LayerNorm modes, data-free analyses, the CLI and the obsprop init.

Expected values are computed independently: head contributions from run_with_cache
(z -> W_O -> ln_final with its scale frozen -> W_U -> n), LayerNorm gradients with
torch.nn.functional.layer_norm, MLP gradients from W_in/W_out in float64, Theorem 2 by
sampling.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import build_tiny_model
from interventions.errors import ConfigError, TaskError
from interventions.obsprop import (
    ActivationData,
    Observable,
    coupling,
    cosine,
    head_features,
    ln_backward,
    mlp_feature,
    observable_for_task,
    path_feature,
    svd_comparison,
    theorem2_bounds,
)
from interventions.obsprop.analysis import ov_svd
from interventions.tasks.datapoint import DataPoint

PROMPTS = [
    "So , Mary really is a great friend , isn't",
    "So , John really is a great friend , isn't",
    "I saw Anna at the party , and I think",
    "I saw Peter at the party , and I think",
]


# -- fixtures ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rich_model(toy_tokenizer):
    """A tiny random model whose LayerNorm weights, LayerNorm biases and value/other biases
    are random too (the stock tiny model has w = 1, b = 0, which would hide mistakes)."""
    model = build_tiny_model(toy_tokenizer, seed=1)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif ".ln" in name or name.startswith(("ln_out", "ln_final")):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
    return model


def tokens_of(model, prompts):
    return model.to_tokens(prompts, padding_side="right")


def ln_final_frozen(model, o, scale):
    """o [..., d] through ln_final's linear map with a frozen scale (no bias)."""
    w = model.ln_final.weight.detach()
    return (o - o.mean(-1, keepdim=True)) / scale * w


def subj(tok):
    return Observable.parse("she-he", tok)


# -- observables --------------------------------------------------------------------------
def test_observable_vectors_and_direction(rich_model, toy_tokenizer):
    tok = toy_tokenizer
    she, he, her, him = (tok(w, add_special_tokens=False)["input_ids"][0] for w in ("she", "he", "her", "him"))
    V = rich_model.cfg.d_vocab
    n = Observable.from_pair(tok, " she", " he").vector(V)
    assert n[she] == 1 and n[he] == -1 and n.abs().sum() == 2
    w = Observable.parse("her:2,him:-0.5", tok).vector(V)
    assert w[her] == 2 and w[him] == -0.5 and w.abs().sum() == 2.5
    signed = Observable.parse("+her+she-him", tok).vector(V)
    assert (signed[her], signed[she], signed[him]) == (1, 1, -1)
    u = Observable.parse("she-he", tok).direction(rich_model)
    W_U = rich_model.W_U.detach()
    torch.testing.assert_close(u, W_U[:, she] - W_U[:, he])
    raw = torch.randn(V, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(Observable.from_vector(raw).direction(rich_model), W_U @ raw, rtol=1e-5, atol=1e-5)


def test_observable_validation_is_one_clear_line(rich_model, toy_tokenizer):
    with pytest.raises(TaskError, match=r"'she he' is not a single token: it tokenizes as \['she', 'he'\]"):
        Observable.from_pair(toy_tokenizer, "she he", "him")
    with pytest.raises(TaskError, match="d_vocab"):
        Observable.from_vector(torch.ones(7)).direction(rich_model)
    with pytest.raises(TaskError, match="A-B"):
        Observable.parse("she", toy_tokenizer)


def test_observable_for_task_pairs_means_and_cancellation(toy_tokenizer):
    tok = toy_tokenizer
    V = len(tok)
    ids = {w: tok(w, add_special_tokens=False)["input_ids"][0] for w in ("Paris", "Berlin", "Rome")}
    one = observable_for_task([DataPoint("a", " Paris", " Berlin")] * 3, tok)
    expected = torch.zeros(V)
    expected[ids["Paris"]], expected[ids["Berlin"]] = 1, -1
    torch.testing.assert_close(one.vector(V), expected)
    mixed = observable_for_task([DataPoint("a", " Paris", " Berlin"), DataPoint("b", " Paris", " Rome")], tok)
    expected = torch.zeros(V)
    expected[ids["Paris"]], expected[ids["Berlin"]], expected[ids["Rome"]] = 1, -0.5, -0.5
    torch.testing.assert_close(mixed.vector(V), expected)
    symmetric = [DataPoint("a", " she", " he"), DataPoint("b", " he", " she")]
    with pytest.raises(TaskError, match="cancel out.*--observable"):
        observable_for_task(symmetric, tok)
    assert observable_for_task(symmetric, tok, allow_cancel=True).vector(V).abs().sum() == 0
    with pytest.raises(TaskError, match="not a single token"):
        observable_for_task([DataPoint("a", " New York", " Paris")], tok)


# -- heads ---------------------------------------------------------------------------------
def test_batched_head_features_equal_a_per_head_loop(rich_model, toy_tokenizer):
    model, obs = rich_model, subj(toy_tokenizer)
    u = obs.direction(model).double()
    W_V, W_O = model.W_V.detach().double(), model.W_O.detach().double()
    loop = torch.stack([torch.stack([W_V[l, h] @ W_O[l, h] @ u for h in range(model.cfg.n_heads)])
                        for l in range(model.cfg.n_layers)])  # fmt: skip
    torch.testing.assert_close(head_features(model, obs).double(), loop, rtol=1e-5, atol=1e-6)
    # approximate mode, with explicit inverse scales: ρ_l P(w_l ⊙ W_OV ρ_f P(w_f ⊙ u))
    rho = {"ln_final": 0.7, "blocks.0.ln1": 1.3, "blocks.1.ln1": 0.4}
    wf = model.ln_final.weight.detach().double()
    uf = 0.7 * (wf * u - (wf * u).mean())
    for l in range(model.cfg.n_layers):
        w1 = model.blocks[l].ln1.weight.detach().double()
        for h in range(model.cfg.n_heads):
            y = w1 * (W_V[l, h] @ W_O[l, h] @ uf)
            expected = rho[f"blocks.{l}.ln1"] * (y - y.mean())
            got = head_features(model, obs, ln_mode="approximate", scales=rho)[l, h].double()
            torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_head_feature_dot_input_equals_head_contribution(rich_model, toy_tokenizer):
    """y · x = the head's contribution to n · logits, attention and LN scales frozen."""
    model, obs = rich_model, subj(toy_tokenizer)
    toks = tokens_of(model, PROMPTS[:2])
    _, cache = model.run_with_cache(toks)
    u = obs.direction(model)
    checked = 0
    for b in range(len(toks)):
        last = toks.shape[1] - 1
        s_f = cache["ln_final.hook_scale"][b, last]
        for l in range(model.cfg.n_layers):
            A = cache[f"blocks.{l}.attn.hook_pattern"][b, :, last]  # [H, pos]
            x_in = torch.einsum("hp,pd->hd", A, cache[f"blocks.{l}.ln1.hook_out"][b])  # each head's input
            resid = cache[f"blocks.{l}.hook_resid_pre"][b]
            s_1 = cache[f"blocks.{l}.ln1.hook_scale"][b, :, 0]  # [pos]
            b_1 = model.blocks[l].ln1.bias.detach()
            for h in range(model.cfg.n_heads):
                z = cache[f"blocks.{l}.attn.hook_z"][b, last, h]
                # (1) head input space: value bias b_V is a constant, left out
                direct = ln_final_frozen(model, (z - model.b_V[l, h]) @ model.W_O[l, h], s_f) @ u
                y = head_features(model, obs, ln_mode="approximate", scales={"ln_final": 1 / s_f},
                                  input_space="ln_out")[l, h]  # fmt: skip
                assert abs(float(y @ x_in[h] - direct)) < 1e-4
                # (2) residual space with ln1's scale frozen per source position
                full = ln_final_frozen(model, z @ model.W_O[l, h], s_f) @ u
                const = ln_final_frozen(model, (b_1 @ model.W_V[l, h] + model.b_V[l, h]) @ model.W_O[l, h], s_f) @ u
                total = const
                for p in range(toks.shape[1]):
                    scales = {f"blocks.{k}.ln1": 1 / s_1[p] for k in range(model.cfg.n_layers)}  # layer l's used
                    y_p = head_features(model, obs, ln_mode="approximate", scales={"ln_final": 1 / s_f, **scales})[l, h]
                    total = total + A[h, p] * (y_p @ resid[p])
                assert abs(float(total - full)) < 1e-4
                checked += 1
    assert checked == 2 * model.cfg.n_layers * model.cfg.n_heads


def test_two_head_path_feature_equals_path_contribution(rich_model, toy_tokenizer):
    """Virtual head L0H1 -> L1H2: Σ_j A1[last, j] y_j · x0_j equals the path's contribution
    computed forward from the cache (z of L0H1 -> W_O -> ln1 of layer 1 with frozen scale
    -> W_V, attention, W_O of L1H2 -> ln_final frozen -> W_U -> n)."""
    model, obs = rich_model, subj(toy_tokenizer)
    (l0, h0), (l1, h1) = (0, 1), (1, 2)
    toks = tokens_of(model, PROMPTS[2:3])
    _, cache = model.run_with_cache(toks)
    last = toks.shape[1] - 1
    u = obs.direction(model)
    s_f = cache["ln_final.hook_scale"][0, last]
    s_1 = cache[f"blocks.{l1}.ln1.hook_scale"][0, :, 0]
    w_1 = model.blocks[l1].ln1.weight.detach()
    z0 = cache[f"blocks.{l0}.attn.hook_z"][0, :, h0] - model.b_V[l0, h0]  # [pos, d_head], no bias
    o0 = z0 @ model.W_O[l0, h0]  # head L0H1's output at every position
    ln_part = (o0 - o0.mean(-1, keepdim=True)) / s_1[:, None] * w_1  # its part of ln1(layer 1)
    A1 = cache[f"blocks.{l1}.attn.hook_pattern"][0, h1, last]  # [pos]
    o1 = (A1[:, None] * (ln_part @ model.W_V[l1, h1])).sum(0) @ model.W_O[l1, h1]
    direct = float(ln_final_frozen(model, o1, s_f) @ u)

    A0 = cache[f"blocks.{l0}.attn.hook_pattern"][0, h0]  # [pos, pos]
    x0 = A0 @ cache[f"blocks.{l0}.ln1.hook_out"][0]  # head L0H1's input at every position
    total = 0.0
    for j in range(toks.shape[1]):
        pf = path_feature(model, [f"L{l1}H{h1}", f"L{l0}H{h0}"], obs, ln_mode="approximate",
                          scales={"ln_final": 1 / s_f, f"blocks.{l1}.ln1": 1 / s_1[j]}, input_space="ln_out")  # fmt: skip
        total += float(A1[j] * (pf.vector @ x0[j]))
    assert abs(direct) > 1e-4  # not trivially zero
    assert abs(total - direct) < 1e-4
    # ignore mode: the plain product of OV matrices, deepest applied first
    W_OV = lambda l, h: model.W_V[l, h] @ model.W_O[l, h]  # noqa: E731
    torch.testing.assert_close(path_feature(model, ["1.2", "0.1"], obs).vector, W_OV(l0, h0) @ (W_OV(l1, h1) @ u),
                               rtol=1e-4, atol=1e-6)  # fmt: skip


def test_path_validation(rich_model, toy_tokenizer):
    with pytest.raises(ConfigError, match="deepest first"):
        path_feature(rich_model, ["L0H1", "L1H2"], subj(toy_tokenizer))
    with pytest.raises(ConfigError, match="has heads"):
        path_feature(rich_model, ["L1H9"], subj(toy_tokenizer))
    with pytest.raises(ConfigError, match="unknown path component"):
        path_feature(rich_model, ["head1"], subj(toy_tokenizer))
    with pytest.raises(ConfigError, match="needs the mean inverse scale"):
        head_features(rich_model, subj(toy_tokenizer), ln_mode="approximate")


# -- LayerNorm ------------------------------------------------------------------------------
def test_theorem1_layernorm_barely_turns_feature_vectors():
    d, trials = 128, 200
    g = torch.Generator().manual_seed(0)
    x = torch.randn(trials, d, generator=g, dtype=torch.float64, requires_grad=True)
    n = torch.randn(trials, d, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad((F.layer_norm(x, (d,)) * n).sum(), x)
    angle = torch.arccos(F.cosine_similarity(grad, n, dim=-1))
    bound = 2 * math.acos(math.sqrt(1 - 1 / (d - 1)))
    assert float(angle.mean()) < bound
    # the approximate mode's direction, P n / s, against the exact gradient
    approx = n - n.mean(-1, keepdim=True)
    cos = F.cosine_similarity(approx, grad, dim=-1)
    assert float(cos.mean()) > 0.99 and float(cos.median()) > 0.99


def test_ln_backward_modes_against_functional_layer_norm(toy_model):
    model, _ = toy_model
    d = model.cfg.d_model
    g = torch.Generator().manual_seed(1)
    x = 3 * torch.randn(64, d, generator=g) + 0.5
    y = torch.randn(d, generator=g)
    data = ActivationData(ln_inputs={"ln_final": x})
    w, b = model.ln_final.weight.detach(), model.ln_final.bias.detach()
    xr = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad((F.layer_norm(xr, (d,), w, b, model.cfg.eps) @ y).sum(), xr)
    torch.testing.assert_close(ln_backward(model, "ln_final", y, "exact", data), grad.mean(0), rtol=1e-4, atol=1e-6)
    s = (x.var(-1, unbiased=False) + model.cfg.eps).sqrt()
    approx = ln_backward(model, "ln_final", y, "approximate", scales={"ln_final": float((1 / s).mean())})
    assert float(F.cosine_similarity(approx, grad.mean(0), dim=0)) > 0.99
    torch.testing.assert_close(ln_backward(model, "ln_final", y, "ignore"), y)


def test_toy_data_scales_and_approximate_vs_exact_heads(toy_model):
    model, tok = toy_model
    toks = tokens_of(model, PROMPTS)
    data = ActivationData.collect(model, toks)
    _, cache = model.run_with_cache(toks)
    # the scale convention is TransformerLens's hook_scale: ρ = mean of 1/hook_scale
    expected = (1 / cache["blocks.2.ln1.hook_scale"]).mean()
    assert abs(data.inv_scales["blocks.2.ln1"] - float(expected)) < 1e-4 * float(expected)
    expected_f = (1 / cache["ln_final.hook_scale"][:, -1]).mean()
    assert abs(data.inv_scales["ln_final"] - float(expected_f)) < 1e-4 * float(expected_f)
    obs = subj(tok)
    approx = head_features(model, obs, ln_mode="approximate", data=data)
    exact = head_features(model, obs, ln_mode="exact", data=data)
    assert float(cosine(approx, exact).min()) > 0.99
    ratio = approx.norm(dim=-1) / exact.norm(dim=-1)
    assert 0.8 < float(ratio.min()) and float(ratio.max()) < 1.25


# -- MLPs ---------------------------------------------------------------------------------
def test_mlp_decision_point_and_gradient(toy_model):
    model, tok = toy_model
    layer = 2
    toks = tokens_of(model, PROMPTS)
    data = ActivationData.collect(model, toks)
    u = subj(tok).direction(model)
    info = mlp_feature(model, layer, u, data=data)
    assert info.decision_point and info.g_minus < 0 < info.g_plus and 0 <= info.t0 <= 1

    W_in, b_in = model.W_in[layer].double(), model.b_in[layer].double()
    W_out, b_out = model.W_out[layer].double(), model.b_out[layer].double()

    def g(x):
        return (F.gelu(x @ W_in + b_in) @ W_out + b_out) @ u.double()

    x0 = info.x0.double().requires_grad_(True)
    value = g(x0)
    (grad,) = torch.autograd.grad(value, x0)
    assert abs(info.value) < 1e-4 and abs(float(value.detach())) < 1e-4
    torch.testing.assert_close(info.gradient.double(), grad, rtol=1e-4, atol=1e-6)
    # x0 lies on the segment between the data points with the extreme values of g
    mlp_in = data.mlp_inputs[layer].double()
    vals = torch.stack([g(x) for x in mlp_in[data.last]]).detach()
    x_m, x_p = mlp_in[data.last][vals.argmin()], mlp_in[data.last][vals.argmax()]
    torch.testing.assert_close(x0.detach(), (1 - info.t0) * x_m + info.t0 * x_p, rtol=1e-4, atol=1e-5)
    with pytest.raises(ConfigError, match="opposite signs"):
        mlp_feature(model, layer, u, x_minus=x_p.float(), x_plus=x_p.float())


# -- analyses ------------------------------------------------------------------------------
def test_coupling_is_the_conditional_mean_and_theorem2_bounds_hold():
    d = 16
    g = torch.Generator().manual_seed(0)
    y1, y2 = torch.randn(d, generator=g, dtype=torch.float64), torch.randn(d, generator=g, dtype=torch.float64)
    y2 = y2 + 0.8 * y1  # correlated
    C = float(coupling(y1, y2))
    assert abs(C - float(y1 @ y2 / (y1 @ y1))) < 1e-12
    assert abs(float(coupling(y1, y2) * coupling(y2, y1)) - float(cosine(y1, y2)) ** 2) < 1e-12
    # E[x · y2 | x · y1 = 1], x ~ N(0, I) projected onto the hyperplane
    x = torch.randn(200_000, d, generator=g, dtype=torch.float64)
    x = x + ((1 - x @ y1) / (y1 @ y1))[:, None] * y1
    dots = x @ y2
    assert abs(float(dots.mean()) - C) < 5 * float(dots.std()) / math.sqrt(len(dots))
    # Theorem 2: uniform x on {‖x‖ = s, x · y1 = k}
    s, k = 2.0, 1.5
    e = torch.randn(100_000, d, generator=g, dtype=torch.float64)
    e = e - (e @ y1 / (y1 @ y1))[:, None] * y1
    e = e / e.norm(dim=-1, keepdim=True)
    x = (k / (y1 @ y1)) * y1 + math.sqrt(s**2 - k**2 / float(y1 @ y1)) * e
    assert torch.allclose(x.norm(dim=-1), torch.full((len(x),), s, dtype=torch.float64))
    dots = x @ y2
    bounds = theorem2_bounds(y1, y2, s, k)
    lo, hi = float(bounds["low"]), float(bounds["high"])
    assert lo - 1e-9 <= float(dots.min()) and float(dots.max()) <= hi + 1e-9
    assert float(dots.min()) < lo + 0.6 * (hi - lo) / 2 and float(dots.max()) > hi - 0.6 * (hi - lo) / 2
    assert abs(float(dots.mean()) - k * C) < 5 * float(dots.std()) / math.sqrt(len(dots))
    # in 2-D the constraint set is two points: exactly the bounds
    a, b = torch.tensor([1.0, 0.0], dtype=torch.float64), torch.tensor([1.0, 1.0], dtype=torch.float64)
    bb = theorem2_bounds(a, b, 2.0, 1.0)  # x = (1, ±√3)
    torch.testing.assert_close(torch.stack([bb["low"], bb["high"]]), torch.tensor([1 - 3**0.5, 1 + 3**0.5], dtype=torch.float64))
    with pytest.raises(ValueError, match="no x"):
        theorem2_bounds(a, b, 1.0, 2.0)


def test_svd_comparison_uses_the_input_side_singular_vectors(rich_model, toy_tokenizer):
    model = rich_model
    Y = head_features(model, subj(toy_tokenizer))
    comp = svd_comparison(model, Y, "ignore", top=3)
    U, S, Vh = ov_svd(model, "ignore")
    d_head = model.cfg.d_head
    for l, h in [(0, 0), (1, 3)]:
        W = (model.W_V[l, h] @ model.W_O[l, h]).double()
        Uf, Sf, _ = torch.linalg.svd(W)
        torch.testing.assert_close(S[l, h].double(), Sf[:d_head], rtol=1e-4, atol=1e-6)
        # row vectors: x W_OV = Σ σ_i (x · U_i) Vh_i, so y = W_OV u is a combination of U's columns
        y = Y[l, h].double()
        expected = (Uf[:, :d_head].T @ y) / y.norm()
        torch.testing.assert_close(comp["cos_all"][l, h].abs().double(), expected.abs(), rtol=1e-3, atol=1e-4)
        assert abs(float(comp["cos_all"][l, h].pow(2).sum()) - 1) < 1e-4
        assert int(comp["best_index"][l, h]) == int(expected.abs().argmax())
    assert comp["cos_top"].shape == (model.cfg.n_layers, model.cfg.n_heads, 3)


def test_cli_writes_json_and_heatmaps(toy_model, tmp_path, capsys):
    from interventions.cli.commands import main

    out = tmp_path / "obsprop"
    rc = main(["obsprop", "analyze", "--model", "toy", "--task", "pronouns", "--n", "12", "--out", str(out),
               "--observable", "she-he", "--other-observable", "her-him", "--path", "L3H0,L1H3", "mlp2,L1H3"])  # fmt: skip
    assert rc == 0
    assert list((out / "wandb").glob("offline-run-*")), "the analysis is also an offline W&B run"
    report = json.loads((out / "report.json").read_text())
    model, tok = toy_model
    assert set(report["observables"]) == {"she-he", "her-him"}
    norms = torch.tensor(report["observables"]["she-he"]["norm"]["ignore"])
    torch.testing.assert_close(norms, head_features(model, subj(tok)).norm(dim=-1), rtol=1e-4, atol=1e-5)
    pair = report["pair"]
    assert len(pair["top_heads"]) == 5 and "cosine" in pair and len(report["paths"]) == 2
    for name in ("norm_she_he_ignore", "norm_she_he_approximate", "norm_her_him_approximate",
                 "cosine_she_he__her_him_approximate", "coupling_she_he_to_her_him", "coupling_her_him_to_she_he",
                 "svd_best_cos_she_he", "attribution_rms_she_he"):  # fmt: skip
        png = out / f"{name}.png"
        assert png.exists() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    assert "top heads by" in capsys.readouterr().out
    # a multi-token observable is one line and exit status 2
    rc = main(["obsprop", "analyze", "--model", "toy", "--task", "pronouns", "--n", "4", "--out", str(tmp_path / "x"),
               "--observable", "she he-him"])  # fmt: skip
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("error:") and "not a single token" in err and "\n" not in err


# -- the init --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ccc_data(toy_model):
    from interventions.tasks import load_task
    from interventions.tasks.datamodule import TaskDataModule

    model, _ = toy_model
    task = load_task("ccc", model=model, split="train", template=0, n=64)
    dm = TaskDataModule(model, task, batch_size=32, fixed_length=True)
    dm.setup()
    return dm


def mean_logit_diff(model, tensors, hooks):
    from interventions.forward import last_position_logits

    with torch.no_grad():
        logits = last_position_logits(model, tensors["input_ids"], tensors["attention_mask"], tensors["last_index"], hooks)
    rows = torch.arange(len(logits))
    return float((logits[rows, tensors["correct"]] - logits[rows, tensors["wrong"]]).mean())


def residual_directions(model, tensors):
    """Per data point u_i = P(w_f ⊙ (W_U[:, c_i] − W_U[:, w_i])), [N, d_model]."""
    W_U, w_f = model.W_U.detach(), model.ln_final.weight.detach()
    u = (W_U[:, tensors["correct"]] - W_U[:, tensors["wrong"]]).T * w_f
    return u - u.mean(-1, keepdim=True)


@pytest.mark.parametrize(
    "name,scale,probe", [("activscalar", 0.5, "auto"), ("steervec", 0.25, "auto"), ("dynscalar", 1.0, "feature"),
                         ("dynscalar", 1.0, "projection")],
)  # fmt: skip
def test_obsprop_init_shapes_and_sign_convention(toy_model, ccc_data, name, scale, probe):
    import warnings

    from interventions.methods import INITS, METHODS
    from interventions.sites import build_grid

    assert "obsprop" in INITS
    model, _ = toy_model
    t = ccc_data.datasets["train"].tensors
    cls = METHODS[name]
    grid = build_grid(model.cfg, sites=("attnOut", "mlpOut", "z"), positions="all" if cls.position_tied else None,
                      seq_len=t["input_ids"].shape[1])  # fmt: skip
    method = cls(grid, model.cfg, W_O=model.W_O.detach())
    shapes = {k: p.shape for k, p in method.params.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # CCC's answer pairs cancel: SteerVec warns
        method.initialize("obsprop", scale, model=model, datamodule=ccc_data, probe=probe)
    assert {k: p.shape for k, p in method.params.items()} == shapes
    flat = method.flat_params().detach()
    assert torch.isfinite(flat).all() and flat.abs().max() > 0
    u_i = residual_directions(model, t)
    if name == "activscalar":
        assert abs(float(flat.abs().max()) - scale) < 1e-6
        # α ∝ mean_i h_i · y_i per location (y = u_i for attnOut/mlpOut, W_O u_i for z)
        _, cache = model.run_with_cache(t["input_ids"])
        proj = {}
        for l in range(model.cfg.n_layers):
            proj[f"attnOut_{l}"] = torch.einsum("npd,nd->p", cache[f"blocks.{l}.hook_attn_out"], u_i) / len(u_i)
            proj[f"mlpOut_{l}"] = torch.einsum("npd,nd->p", cache[f"blocks.{l}.hook_mlp_out"], u_i) / len(u_i)
            o = torch.einsum("nphe,hed->nphd", cache[f"blocks.{l}.attn.hook_z"], model.W_O[l])
            proj[f"z_{l}"] = torch.einsum("nphd,nd->ph", o, u_i) / len(u_i)
        top = max(float(v.abs().max()) for v in proj.values())
        for key, value in proj.items():
            torch.testing.assert_close(method.params[key].detach(), value * scale / top, rtol=1e-3, atol=1e-5)
    else:  # unit directions times scale
        for p in method.params.values():
            torch.testing.assert_close(p.norm(dim=-1), torch.full(p.shape[:-1], scale), rtol=1e-4, atol=1e-6)
    if name == "steervec" or probe == "feature":  # ± the direction of the mean observable's feature
        u_bar = u_i.mean(0)
        v = method.params["attnOut_2"].detach()
        v = v[0] if v.dim() == 2 else v
        assert abs(abs(float(F.cosine_similarity(v, u_bar, dim=0))) - 1) < 1e-4
    if name == "dynscalar":  # each probe's first-order direct effect at the last position is ≥ 0
        _, cache = model.run_with_cache(t["input_ids"])
        last = t["last_index"]
        rows = torch.arange(len(last))
        effects = []
        for l in range(model.cfg.n_layers):
            for site, hook in (("attnOut", "hook_attn_out"), ("mlpOut", "hook_mlp_out")):
                h = cache[f"blocks.{l}.{hook}"][rows, last]
                g = method.params[f"{site}_{l}"].detach()
                effects.append(float(((h @ g) / h.norm(dim=-1) * (h * u_i).sum(-1)).mean()))
        assert min(effects) >= 0, effects
    clean = mean_logit_diff(model, t, [])
    up, down = mean_logit_diff(model, t, method.hooks(1.0)), mean_logit_diff(model, t, method.hooks(-1.0))
    assert up > clean and down < clean, (down, clean, up)


def test_obsprop_init_with_an_explicit_observable(toy_model):
    from interventions.methods import METHODS
    from interventions.sites import build_grid

    model, tok = toy_model
    toks = tokens_of(model, PROMPTS[:2])
    grid = build_grid(model.cfg, sites=("attnOut", "mlpOut"), positions="all", seq_len=toks.shape[1])
    method = METHODS["steervec"](grid, model.cfg)
    method.initialize("obsprop", 0.5, model=model, observable="she-he")
    she, he = (tok(w, add_special_tokens=False)["input_ids"][0] for w in ("she", "he"))

    def she_minus_he(beta):
        with torch.no_grad(), model.hooks(fwd_hooks=method.hooks(beta)):
            logits = model(toks)[:, -1]
        return float((logits[:, she] - logits[:, he]).mean())

    assert she_minus_he(1.0) > she_minus_he(0.0) > she_minus_he(-1.0)
    with pytest.raises(ConfigError, match="needs a datamodule"):
        METHODS["activscalar"](grid, model.cfg).initialize("obsprop", 0.5, model=model)


def test_parse_keeps_leading_spaces_for_bpe(bpe_tokenizer):
    tok = bpe_tokenizer
    she, he = tok(" she")["input_ids"], tok(" he")["input_ids"]
    assert len(she) == len(he) == 1
    for spec in (" she- he", " she:1, he:-1", "+ she- he"):
        assert dict(Observable.parse(spec, tok).terms) == {she[0]: 1.0, he[0]: -1.0}, spec
    paris, berlin = tok(" Paris")["input_ids"], tok(" Berlin")["input_ids"]
    assert len(tok("Paris")["input_ids"]) == len(tok("Berlin")["input_ids"]) == 1  # bare words: other tokens
    assert Observable.parse("Paris-Berlin", tok).terms.keys() != {paris[0], berlin[0]}
    with pytest.raises(TaskError, match=r"' Nairobi' is not a single token"):
        Observable.parse(" Nairobi- Paris", tok)
