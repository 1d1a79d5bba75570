"""ActivScalar, SteerVec and DynScalar hooks on a tiny TransformerBridge (docs/method.md §2-§3).

Each formula is re-implemented here, location by location, and compared with what the
hooked model really computes (read back with run_with_cache, or with capture hooks
placed just before and after the method's hook on the same HookPoint).
"""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from interventions.errors import ConfigError, ExportError
from interventions.forward import last_position_logits
from interventions.methods import ActivScalar, DynScalar, SteerVec
from interventions.sites import build_grid
from interventions.tasks.datamodule import encode
from interventions.tasks.datapoint import DataPoint, Task

SEQ = 7
ALL_SITES = ("attnOut", "mlpOut", "residPost", "z", "v", "o")
HEAD = ("z", "v", "o")
METHOD_CLASSES = {"activscalar": ActivScalar, "steervec": SteerVec, "dynscalar": DynScalar}

# Where each site is read in TransformerLens terms (docs/method.md §2), written out here
# independently of interventions.sites. `o` is read through z (o_h = z_h W_O^h).
READ_AT = {
    "attnOut": "blocks.{l}.hook_attn_out",
    "mlpOut": "blocks.{l}.hook_mlp_out",
    "residPost": "blocks.{l}.hook_resid_post",
    "z": "blocks.{l}.attn.hook_z",
    "v": "blocks.{l}.attn.hook_v",
    "o": "blocks.{l}.attn.hook_z",
}


@pytest.fixture(scope="module")
def tokens(tiny_model):
    """Two prompts of SEQ random tokens (BOS first), fixed seed."""
    g = torch.Generator().manual_seed(123)
    ids = torch.randint(4, tiny_model.cfg.d_vocab, (2, SEQ), generator=g)
    ids[:, 0] = tiny_model.tokenizer.bos_token_id
    return ids


@pytest.fixture(scope="module")
def clean(tiny_model, tokens):
    with torch.no_grad():
        return tiny_model.run_with_cache(tokens)


def make_method(model, name, site, layers="all", positions="all", heads="all", scale=0.5, seed=1):
    cls = METHOD_CLASSES[name]
    sites = [site] if isinstance(site, str) else list(site)
    grid = build_grid(
        model.cfg, sites=sites, layers=layers, positions=positions if cls.position_tied else None,
        heads=heads, seq_len=SEQ,
    )  # fmt: skip
    method = cls(grid, model.cfg, W_O=model.W_O if "o" in sites else None)
    method.initialize("normal", scale=scale, seed=seed)  # non-trivial values, not 1e-5
    return method


def run_hooked(model, tokens, method, beta):
    with torch.no_grad(), model.hooks(fwd_hooks=method.hooks(beta)):
        return model.run_with_cache(tokens)


def per_head_o(model, z, layer):
    """o_h = z_h W_O^h: [batch, pos, heads, d_model]."""
    return torch.einsum("bphd,hdm->bphm", z, model.W_O[layer])


def expected(method, site, layer, h, beta, model):
    """The method's formula applied to the activation h it sees at (site, layer).

    Residual sites: h [batch, pos, D]; z, v and o: h is z or v [batch, pos, heads, d_head].
    Returns the expected hooked activation at the same hook (for SteerVec `o`: the
    expected attention output, given the clean attention output as h).
    """
    grid = method.grid
    p = method.param(site, layer).detach()
    out = h.clone()
    if method.name == "activscalar":
        for i, pos in enumerate(grid.positions):
            if site in HEAD:
                for j, head in enumerate(grid.head_indices):
                    out[:, pos, head] = h[:, pos, head] * (1 + beta * p[i, j])
            else:
                out[:, pos] = h[:, pos] * (1 + beta * p[i])
    elif method.name == "steervec":
        for i, pos in enumerate(grid.positions):
            if site == "o":  # the heads' vectors add up in the attention output
                out[:, pos] = h[:, pos] + beta * p[i].sum(0)
            elif site in HEAD:
                for j, head in enumerate(grid.head_indices):
                    out[:, pos, head] = h[:, pos, head] + beta * p[i, j]
            else:
                out[:, pos] = h[:, pos] + beta * p[i]
    else:  # dynscalar: α = gᵀ h / ‖h‖ per position (per head), then h (1 + β α)
        if site in HEAD:
            act = per_head_o(model, h, layer) if site == "o" else h
            for j, head in enumerate(grid.head_indices):
                vec = act[:, :, head]
                alpha = (vec @ p[j]) / vec.norm(dim=-1)
                out[:, :, head] = h[:, :, head] * (1 + beta * alpha)[..., None]
        else:
            alpha = (h @ p) / h.norm(dim=-1)
            out = h * (1 + beta * alpha)[..., None]
    return out


CASES = [(m, s) for m in METHOD_CLASSES for s in ALL_SITES]


# -- the hook changes exactly the intended activation (first intervened layer) -----------


@pytest.mark.parametrize("beta", [1.0, -1.0])
@pytest.mark.parametrize("name, site", CASES)
def test_hook_matches_formula_at_first_layer(tiny_model, tokens, clean, name, site, beta):
    model = tiny_model
    method = make_method(model, name, site)
    _, clean_cache = clean
    _, cache = run_hooked(model, tokens, method, beta)
    layer = method.grid.layers[0]
    assert layer == 0

    if name == "steervec" and site == "o":
        key = f"blocks.{layer}.hook_attn_out"
        want = expected(method, site, layer, clean_cache[key], beta, model)
        assert torch.allclose(cache[key], want, atol=1e-5)
    elif site == "o":
        key = READ_AT["o"].format(l=layer)
        o_clean = per_head_o(model, clean_cache[key], layer)
        o_hooked = per_head_o(model, cache[key], layer)
        if name == "activscalar":
            alpha = method.param(site, layer).detach()  # [pos, heads]
            want_o = o_clean * (1 + beta * alpha)[None, :, :, None]
        else:
            g = method.param(site, layer).detach()  # [heads, d_model]
            alpha = torch.einsum("bphm,hm->bph", o_clean, g) / o_clean.norm(dim=-1)
            want_o = o_clean * (1 + beta * alpha)[..., None]
        assert torch.allclose(o_hooked, want_o, atol=1e-5)
        # and the attention output is the sum of the scaled heads' outputs (+ b_O)
        attn_out = cache[f"blocks.{layer}.hook_attn_out"]
        assert torch.allclose(attn_out, o_hooked.sum(2) + model.b_O[layer], atol=1e-5)
    else:
        key = READ_AT[site].format(l=layer)
        want = expected(method, site, layer, clean_cache[key], beta, model)
        assert torch.allclose(cache[key], want, atol=1e-5)
        assert not torch.allclose(cache[key], clean_cache[key], atol=1e-3)  # it did act

    # what comes before the site in the same layer is untouched
    before = {
        "attnOut": "blocks.0.hook_resid_pre",
        "mlpOut": "blocks.0.hook_resid_mid",
        "residPost": "blocks.0.hook_resid_mid",
        "z": "blocks.0.attn.hook_pattern",
        "v": "blocks.0.attn.hook_pattern",
        "o": "blocks.0.attn.hook_pattern",
    }[site]
    assert torch.equal(cache[before], clean_cache[before])


@pytest.mark.parametrize("name, site", CASES)
def test_hook_matches_formula_at_every_layer(tiny_model, tokens, name, site):
    """Capture the activation right before and right after the method's hook at each layer."""
    model = tiny_model
    method = make_method(model, name, site)
    beta = -1.0
    hooks = method.hooks(beta)
    seen = {}

    def capture(tag, layer):
        def fn(h, hook=None):
            seen[(tag, layer)] = h.detach().clone()

        return fn

    wrapped = []
    for layer, (hook_name, fn) in zip(method.grid.layers, hooks):
        wrapped += [(hook_name, capture("in", layer)), (hook_name, fn), (hook_name, capture("out", layer))]
    with torch.no_grad(), model.hooks(fwd_hooks=wrapped):
        model(tokens)
    for layer in method.grid.layers:
        want = expected(method, site, layer, seen[("in", layer)], beta, model)
        assert torch.allclose(seen[("out", layer)], want, atol=1e-5), f"layer {layer}"


def test_v_intervention_reaches_z(tiny_model, tokens, clean):
    """Scaling v changes z as pattern @ v̂ (the change propagates through attention)."""
    method = make_method(tiny_model, "activscalar", "v")
    _, cache = run_hooked(tiny_model, tokens, method, 1.0)
    z = torch.einsum("bhqk,bkhd->bqhd", cache["blocks.0.attn.hook_pattern"], cache["blocks.0.attn.hook_v"])
    assert torch.allclose(cache["blocks.0.attn.hook_z"], z, atol=1e-5)
    assert not torch.allclose(cache["blocks.0.attn.hook_z"], clean[1]["blocks.0.attn.hook_z"], atol=1e-3)


# -- β = 0, β per row -----------------------------------------------------------------------


@pytest.mark.parametrize("name, site", CASES)
def test_beta_zero_is_the_clean_model(tiny_model, tokens, clean, name, site):
    method = make_method(tiny_model, name, site, scale=1.0)
    clean_logits = clean[0]
    with torch.no_grad():
        for beta in (0.0, torch.zeros(2)):
            with tiny_model.hooks(fwd_hooks=method.hooks(beta)):
                logits = tiny_model(tokens)
            assert torch.equal(logits, clean_logits)


@pytest.mark.parametrize("name, site", CASES)
def test_beta_tensor_equals_separate_scalar_runs(tiny_model, tokens, name, site):
    model = tiny_model
    method = make_method(model, name, site)
    with torch.no_grad():
        with model.hooks(fwd_hooks=method.hooks(torch.tensor([1.0, -1.0]))):
            mixed = model(tokens)
        with model.hooks(fwd_hooks=method.hooks(1.0)):
            plus = model(tokens)
        with model.hooks(fwd_hooks=method.hooks(-1.0)):
            minus = model(tokens)
    assert torch.allclose(mixed[0], plus[0], atol=1e-5)
    assert torch.allclose(mixed[1], minus[1], atol=1e-5)
    assert not torch.allclose(plus, minus, atol=1e-3)  # the two directions differ


# -- subsets of positions, layers and heads ------------------------------------------------


@pytest.mark.parametrize("name", ["activscalar", "steervec"])
def test_last_position_only_leaves_earlier_positions_untouched(tiny_model, tokens, clean, name):
    model = tiny_model
    method = make_method(model, name, "attnOut", layers=[1], positions=[-1])
    assert method.grid.positions == (SEQ - 1,)
    logits, cache = run_hooked(model, tokens, method, 1.0)
    clean_logits, clean_cache = clean
    for key in clean_cache.keys():
        if ".hook_pattern" in key or ".hook_attn_scores" in key:
            continue  # [batch, heads, q, k]: position is not the second axis
        a, b = cache[key], clean_cache[key]
        if key.startswith("blocks.0."):
            assert torch.equal(a, b), key  # layer 0 is not in the grid
        elif a.dim() >= 2 and a.shape[1] == SEQ:
            assert torch.equal(a[:, : SEQ - 1], b[:, : SEQ - 1]), key  # causal: earlier positions
    key = "blocks.1.hook_attn_out"
    want = expected(method, "attnOut", 1, clean_cache[key], 1.0, model)
    assert torch.allclose(cache[key], want, atol=1e-5)
    assert torch.equal(logits[:, : SEQ - 1], clean_logits[:, : SEQ - 1])
    assert not torch.allclose(logits[:, -1], clean_logits[:, -1], atol=1e-4)


@pytest.mark.parametrize("name", ["activscalar", "steervec"])
def test_position_subset_in_the_middle(tiny_model, tokens, clean, name):
    model = tiny_model
    method = make_method(model, name, "attnOut", layers=[0], positions=[2, 4])
    _, cache = run_hooked(model, tokens, method, -1.0)
    h, h0 = cache["blocks.0.hook_attn_out"], clean[1]["blocks.0.hook_attn_out"]
    for pos in (0, 1, 3, 5, 6):
        assert torch.equal(h[:, pos], h0[:, pos]), pos
    for pos in (2, 4):
        assert not torch.allclose(h[:, pos], h0[:, pos], atol=1e-4), pos
    assert torch.allclose(h, expected(method, "attnOut", 0, h0, -1.0, model), atol=1e-5)


@pytest.mark.parametrize("name", list(METHOD_CLASSES))
@pytest.mark.parametrize("site", ["z", "v"])
def test_head_subset_leaves_other_heads_untouched(tiny_model, tokens, clean, name, site):
    model = tiny_model
    method = make_method(model, name, site, layers=[0], heads=[1, 3])
    _, cache = run_hooked(model, tokens, method, 1.0)
    key = READ_AT[site].format(l=0)
    h, h0 = cache[key], clean[1][key]
    for head in (0, 2):
        assert torch.equal(h[:, :, head], h0[:, :, head]), head
    for head in (1, 3):
        assert not torch.allclose(h[:, :, head], h0[:, :, head], atol=1e-4), head
    assert torch.allclose(h, expected(method, site, 0, h0, 1.0, model), atol=1e-5)


@pytest.mark.parametrize("name", list(METHOD_CLASSES))
def test_head_subset_on_o(tiny_model, tokens, clean, name):
    model = tiny_model
    method = make_method(model, name, "o", layers=[0], heads=[1, 3])
    _, cache = run_hooked(model, tokens, method, 1.0)
    if name == "steervec":
        key = "blocks.0.hook_attn_out"
        want = expected(method, "o", 0, clean[1][key], 1.0, model)
        assert torch.allclose(cache[key], want, atol=1e-5)
        return
    z, z0 = cache["blocks.0.attn.hook_z"], clean[1]["blocks.0.attn.hook_z"]
    for head in (0, 2):
        assert torch.equal(z[:, :, head], z0[:, :, head])
    assert torch.allclose(z, expected(method, "o", 0, z0, 1.0, model), atol=1e-5)


@pytest.mark.parametrize("name", list(METHOD_CLASSES))
def test_layer_subset_leaves_other_layers_untouched(tiny_model, tokens, clean, name):
    model = tiny_model
    method = make_method(model, name, "mlpOut", layers=[1])
    _, cache = run_hooked(model, tokens, method, 1.0)
    clean_cache = clean[1]
    for key in clean_cache.keys():
        if key.startswith(("blocks.0.", "embed.", "pos_embed.", "hook_embed", "hook_pos_embed")):
            assert torch.equal(cache[key], clean_cache[key]), key
    key = "blocks.1.hook_mlp_out"
    want = expected(method, "mlpOut", 1, clean_cache[key], 1.0, model)
    assert torch.allclose(cache[key], want, atol=1e-5)
    assert torch.equal(cache["blocks.1.hook_attn_out"], clean_cache["blocks.1.hook_attn_out"])


def test_one_hook_per_site_and_layer(tiny_model):
    method = make_method(tiny_model, "activscalar", ["attnOut", "mlpOut"])
    names = sorted(name for name, _ in method.hooks(1.0))
    assert names == sorted(
        ["blocks.0.hook_attn_out", "blocks.1.hook_attn_out", "blocks.0.hook_mlp_out", "blocks.1.hook_mlp_out"]
    )


# -- parameter counts (docs/method.md §3) ---------------------------------------------------------

TINY = SimpleNamespace(n_layers=2, n_heads=4, d_model=32, d_head=8)


def grid_for(cfg, sites, name, seq_len=SEQ, **kw):
    tied = METHOD_CLASSES[name].position_tied
    return build_grid(cfg, sites=sites, positions="all" if tied else None, seq_len=seq_len, **kw)


@pytest.mark.parametrize(
    "sites, activscalar, steervec, dynscalar",
    [
        # L=2, P=7, H=4, d_model=32, d_head=8
        (["attnOut"], 2 * 7, 2 * 7 * 32, 2 * 32),
        (["attnOut", "mlpOut"], 2 * 7 * 2, 2 * 7 * 2 * 32, 2 * 2 * 32),
        (["residPost"], 2 * 7, 2 * 7 * 32, 2 * 32),
        (["z"], 2 * 7 * 4, 2 * 7 * 4 * 8, 2 * 4 * 8),
        (["v"], 2 * 7 * 4, 2 * 7 * 4 * 8, 2 * 4 * 8),
        (["o"], 2 * 7 * 4, 2 * 7 * 4 * 32, 2 * 4 * 32),
        (["mlpOut", "z"], 2 * 7 + 2 * 7 * 4, 2 * 7 * 32 + 2 * 7 * 4 * 8, 2 * 32 + 2 * 4 * 8),
    ],
)
def test_parameter_counts(sites, activscalar, steervec, dynscalar):
    counts = {"activscalar": activscalar, "steervec": steervec, "dynscalar": dynscalar}
    for name, want in counts.items():
        method = METHOD_CLASSES[name](grid_for(TINY, sites, name), TINY)
        assert method.n_params == want, name
        assert method.flat_params().numel() == want, name
    # |K| = layers x positions x sites (x heads)
    grid = grid_for(TINY, sites, "activscalar")
    assert grid.n_locations == activscalar


def test_parameter_counts_of_subsets():
    grid = build_grid(TINY, sites=["z", "attnOut"], layers=[1], positions=[0, -1], heads=[1, 3], seq_len=SEQ)
    assert ActivScalar(grid, TINY).n_params == 1 * 2 * 2 + 1 * 2  # z: L·P·H', attnOut: L·P
    assert SteerVec(grid, TINY).n_params == 1 * 2 * 2 * 8 + 1 * 2 * 32
    dgrid = build_grid(TINY, sites=["z", "attnOut"], layers=[1], positions=None, heads=[1, 3])
    assert DynScalar(dgrid, TINY).n_params == 1 * 2 * 8 + 1 * 32


def test_paper_example_parameter_counts():
    """GPT2-XL residPost, 48 layers, 19 tokens, D = 1600 (docs/method.md §3)."""
    gpt2_xl = SimpleNamespace(n_layers=48, n_heads=25, d_model=1600, d_head=64)
    grid = build_grid(gpt2_xl, sites=["residPost"], positions="all", seq_len=19)
    assert SteerVec(grid, gpt2_xl).n_params == 1_459_200
    assert ActivScalar(grid, gpt2_xl).n_params == 912
    dgrid = build_grid(gpt2_xl, sites=["residPost"], positions=None)
    assert DynScalar(dgrid, gpt2_xl).n_params == 48 * 1600


# -- DynScalar on padded batches --------------------------------------------------------------

MIXED = Task(
    "mixed",
    "test",
    "mixed",
    (
        DataPoint("The capital of France is Rome . Q: What is the capital of France ? A:", " Paris", " Rome"),
        DataPoint("My friend Mary is an excellent", " nurse", " programmer"),
        DataPoint("When Mary and John went to the park , John gave a book to", " Mary", " John"),
        DataPoint("Rome is the capital of France . Q: Which city is the capital of France ? A:", " Paris", " Rome"),
    ),
)


@pytest.mark.parametrize("beta", [1.0, -1.0])
def test_dynscalar_padded_batch_equals_each_prompt_alone(tiny_model, beta):
    model = tiny_model
    enc = encode(model, MIXED, padding_side="right")
    lengths = enc["attention_mask"].sum(1).tolist()
    assert len(set(lengths)) == len(lengths)  # really different lengths
    method = make_method(model, "dynscalar", list(ALL_SITES), scale=0.3, seed=5)
    with torch.no_grad():
        batched = last_position_logits(
            model, enc["input_ids"], enc["attention_mask"], enc["last_index"], fwd_hooks=method.hooks(beta)
        )
        clean_batched = last_position_logits(model, enc["input_ids"], enc["attention_mask"], enc["last_index"])
        for i, point in enumerate(MIXED):
            one = encode(model, Task("one", "test", "0", (point,)))
            assert one["input_ids"].shape[1] == lengths[i]  # no padding alone
            alone = last_position_logits(
                model, one["input_ids"], one["attention_mask"], one["last_index"], fwd_hooks=method.hooks(beta)
            )
            assert torch.allclose(batched[i], alone[0], atol=1e-4), i
    assert not torch.allclose(batched, clean_batched, atol=1e-2)  # the intervention acts


def test_dynscalar_accepts_any_length(tiny_model):
    method = make_method(tiny_model, "dynscalar", ["attnOut", "z"])
    for length in (3, SEQ, 12):
        ids = torch.full((1, length), 10)
        with torch.no_grad(), tiny_model.hooks(fwd_hooks=method.hooks(1.0)):
            assert tiny_model(ids).shape[:2] == (1, length)


# -- errors ---------------------------------------------------------------------------------


def no_hooks_left(model) -> bool:
    return all(len(hp._forward_hooks) == 0 for hp in model.hook_dict.values())


@pytest.mark.parametrize("name", ["activscalar", "steervec"])
def test_position_tied_method_rejects_other_length(tiny_model, name):
    method = make_method(tiny_model, name, ["attnOut"])
    short = torch.full((1, SEQ - 2), 10)
    with pytest.raises(ExportError) as info:
        with torch.no_grad(), tiny_model.hooks(fwd_hooks=method.hooks(1.0)):
            tiny_model(short)
    message = str(info.value)
    assert str(SEQ) in message and str(SEQ - 2) in message and "dynscalar" in message
    assert "\n" not in message
    with pytest.raises(ExportError):
        last_position_logits(tiny_model, short, None, torch.tensor([SEQ - 3]), fwd_hooks=method.hooks(1.0))
    assert no_hooks_left(tiny_model)


def test_build_grid_unknown_site():
    with pytest.raises(ConfigError) as info:
        build_grid(TINY, sites=["attnOut", "bogus"], seq_len=SEQ)
    message = str(info.value)
    assert "bogus" in message and "attnOut" in message and "residPost" in message


@pytest.mark.parametrize("layers, bad", [([0, 2], "2"), ([5], "5"), ([-3], "-3")])
def test_build_grid_layer_out_of_range(layers, bad):
    with pytest.raises(ConfigError) as info:
        build_grid(TINY, sites=["attnOut"], layers=layers, seq_len=SEQ)
    message = str(info.value)
    assert "layer" in message and bad in message and "0..1" in message


@pytest.mark.parametrize("positions, bad", [([SEQ], str(SEQ)), ([-SEQ - 1], str(-SEQ - 1))])
def test_build_grid_position_out_of_range(positions, bad):
    with pytest.raises(ConfigError) as info:
        build_grid(TINY, sites=["attnOut"], positions=positions, seq_len=SEQ)
    message = str(info.value)
    assert "position" in message and bad in message and str(SEQ) in message


def test_build_grid_head_out_of_range():
    with pytest.raises(ConfigError) as info:
        build_grid(TINY, sites=["z"], heads=[4], seq_len=SEQ)
    assert "head" in str(info.value) and "4" in str(info.value)


def test_build_grid_negative_indices_count_from_the_end():
    grid = build_grid(TINY, sites="attnOut,mlpOut", layers=[-1], positions=[-1, 0], seq_len=SEQ)
    assert grid.sites == ("attnOut", "mlpOut")
    assert grid.layers == (1,)
    assert grid.positions == (0, SEQ - 1)


def test_flat_params_follow_the_grid_order():
    """Site-major, then layer in grid order, also past layer 9 (a sorted dict would put
    layer 10 before layer 2)."""
    cfg = SimpleNamespace(n_layers=12, n_heads=2, d_model=4, d_head=2)
    grid = build_grid(cfg, sites=["mlpOut", "attnOut"], positions="all", seq_len=3)
    method = ActivScalar(grid, cfg)
    with torch.no_grad():
        for i, (site, layer) in enumerate((s, l) for s in ("mlpOut", "attnOut") for l in range(12)):
            method.param(site, layer).fill_(i)
    assert method.flat_params().tolist() == [float(i) for i in range(24) for _ in range(3)]


def test_beta_views_are_made_once_per_dtype_and_equal_beta_view():
    """A hook shapes β once per (dtype, device, rank) of its activations; the view is beta_view's."""
    from interventions.methods.base import BetaViews, beta_view

    beta = torch.tensor([1.0, -1.0, 0.5])
    views = BetaViews(beta)
    h32, h64, heads = torch.zeros(3, 4, 5), torch.zeros(3, 4, 5, dtype=torch.float64), torch.zeros(3, 4, 2, 5)
    assert views(h32) is views(torch.ones(3, 7, 5))  # the same rank and dtype: the same tensor
    for h in (h32, h64, heads):
        assert torch.equal(views(h), beta_view(beta, h)) and views(h).dtype == h.dtype and views(h).dim() == h.dim()
    assert float(BetaViews(2.0)(h32)) == 2.0


@pytest.mark.parametrize("beta", [1.0, -0.5, 0.0, torch.tensor([1.0, -1.0, 0.25])])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dynscalar_decoding_hooks_equal_its_hooks(tiny_model, beta, dtype):
    """Steered generation's DynScalar hooks (β·g formed once, one addcdiv) compute its hooks'
    function: to float rounding at residual sites (relative 1e-6 in float32; one rounding
    of the model's dtype in bfloat16), exactly at head sites; zero activations stay zero."""
    sites = [s for s in ALL_SITES if dtype == torch.float32 or s != "o"]  # o reads z through the model's W_O
    method = make_method(tiny_model, "dynscalar", sites, scale=0.3, seed=7)
    generator = torch.Generator().manual_seed(0)
    shapes = {"residual": (3, 5, tiny_model.cfg.d_model), "head": (3, 5, tiny_model.cfg.n_heads, tiny_model.cfg.d_head)}
    pairs = zip(method.hooks(beta), method.decoding_hooks(beta), strict=True)
    sites = [site for site in method.grid.sites for _ in method.grid.layers]  # `hooks`' order
    for ((name, hook), (decoding_name, decoding_hook)), site in zip(pairs, sites, strict=True):
        assert name == decoding_name
        h = torch.randn(shapes["head" if site in HEAD else "residual"], generator=generator).to(dtype)
        h[1, 2] = 0  # an activation of norm zero: α = 0, not 0/0
        with torch.no_grad():
            want, got = hook(h), decoding_hook(h)
        assert got.dtype == dtype and bool(got[1, 2].eq(0).all())
        if site in HEAD or dtype != torch.float32:
            torch.testing.assert_close(got, want, rtol=0 if site in HEAD else 2 ** -7, atol=0)
        else:
            torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6 * float(want.abs().max()))
