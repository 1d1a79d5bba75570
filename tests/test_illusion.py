"""The subspace-illusion diagnostic (docs/method.md §10, Makelov et al.) on a planted model.

The planted model scales up the seed's 3-neuron example into a TransformerBridge whose
every weight is set by hand (native, 2 layers, d_model 8, no normalization, attention
output zeroed, so the residual stream is exactly linear in the features below). Prompts
are [BOS, t_k]; token t_k embeds as x_k·e0 with x_k in ±{0.5, 1, 1.5, 2}.

    layer 0 MLP  reads e0, writes x·e2      the faithful component: mlpOut L0 spans {e2}
    layer 1 MLP  reads e0, writes x·e1      the irrelevant neuron: mlpOut L1 spans {e1}
    unembedding  f_A − f_B = r·h, r = e2 + 2·e3   (e1 is never read; e3 is dormant:
                 read with weight 2, but nothing ever writes it)

Both MLPs compute x exactly: relu(x) − relu(−x) = x with two neurons. So the clean logit
difference is x (carried by mlpOut L0 alone), and mean-ablating mlpOut L1 changes
nothing. Makelov's bridge v = e1 + e3 at mlpOut L1 (last position) has half of ‖v‖²
outside the activation span {e1}, steers the logit difference by r·v = 2 entirely
through its out-of-span part e3, while ablating the component does nothing: the planted
illusion. v = e2 at mlpOut L0 lies in the span, is read (S = 1), and ablating L0 moves
the logit difference by E|x − x̄| = 1.25 per prompt: faithful. Every expected number
below follows from these weights, not from the diagnostic.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from interventions.reports.illusion import diagnose_illusion
from interventions.reports.illusion_files import format_illusion, write_illusion
from interventions.reports.span import activation_span, out_of_span_fraction, split_vector
from interventions.methods import SteerVec
from interventions.sites import build_grid

D = 8
X_VALUES = [-2.0, -1.5, -1.0, -0.5, 0.5, 1.0, 1.5, 2.0]
FIRST_TOKEN = 20  # the data tokens are ids 20..27
ANSWER_A, ANSWER_B = 10, 11


def e(i: int) -> torch.Tensor:
    v = torch.zeros(D)
    v[i] = 1.0
    return v


def _param(model, suffix: str) -> torch.Tensor:
    """The bridge parameter whose name (without the `_original_component.` wrappers) is `suffix`."""
    matches = [p for n, p in model.named_parameters() if n.replace("_original_component.", "") == suffix]
    assert len(matches) == 1, (suffix, [n for n, _ in model.named_parameters()])
    return matches[0]


@pytest.fixture(scope="module")
def planted(toy_tokenizer):
    import transformer_lens.model_bridge.sources.native  # noqa: F401  (attaches boot_native)
    from transformer_lens.model_bridge import TransformerBridge

    from interventions.models import freeze

    cfg = dict(
        d_model=D, n_layers=2, n_heads=2, d_head=4, d_mlp=4, n_ctx=8, act_fn="relu",
        normalization_type=None, positional_embedding_type="standard",
        d_vocab=len(toy_tokenizer), seed=0,
    )  # fmt: skip
    model = TransformerBridge.boot_native(cfg, tokenizer=toy_tokenizer)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # attention, positions, biases: all zero
        embed = _param(model, "tok_embed.weight")
        for k, x in enumerate(X_VALUES):
            embed[FIRST_TOKEN + k, 0] = x
        for layer, writes in ((0, 2), (1, 1)):
            w_in = _param(model, f"layers.{layer}.mlp.fc_in.weight")  # [d_mlp, d_model]
            w_out = _param(model, f"layers.{layer}.mlp.fc_out.weight")  # [d_model, d_mlp]
            w_in[0, 0], w_in[1, 0] = 1.0, -1.0
            w_out[writes, 0], w_out[writes, 1] = 1.0, -1.0
        head = _param(model, "head.weight")  # [vocab, d_model]
        head[ANSWER_A] = e(2) + 2 * e(3)
    model = freeze(model)
    ids = torch.tensor([[toy_tokenizer.bos_token_id, FIRST_TOKEN + k] for k in range(len(X_VALUES))])
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "last_index": torch.full((len(ids),), 1),
        "correct": torch.full((len(ids),), ANSWER_A),
        "wrong": torch.full((len(ids),), ANSWER_B),
    }
    return model, batch


def at_last(v: torch.Tensor) -> torch.Tensor:
    """[seq_len 2, D]: v at the last position, nothing at BOS."""
    return torch.stack([torch.zeros(D), v])


def test_planted_model_is_what_the_docstring_says(planted):
    model, batch = planted
    with torch.no_grad():
        logits, cache = model.run_with_cache(batch["input_ids"])
    x = torch.tensor(X_VALUES)
    ld = logits[:, -1, ANSWER_A] - logits[:, -1, ANSWER_B]
    torch.testing.assert_close(ld, x)
    torch.testing.assert_close(cache["blocks.0.hook_mlp_out"][:, 1], x[:, None] * e(2))
    torch.testing.assert_close(cache["blocks.1.hook_mlp_out"][:, 1], x[:, None] * e(1))
    assert cache["blocks.0.hook_attn_out"].abs().max() == 0


def test_planted_illusion_is_flagged(planted):
    model, batch = planted
    report = diagnose_illusion(model, {("mlpOut", 1): at_last(e(1) + e(3))}, batch)
    assert report["summary"]["flag"] is True
    assert "ILLUSION" in report["summary"]["message"]
    (loc,) = report["locations"]  # the zero vector at BOS is left out
    assert (loc["site"], loc["layer"], loc["position"]) == ("mlpOut", 1, 1)
    assert loc["span_dim"] == 1
    assert loc["out_of_span_fraction"] == pytest.approx(0.5, abs=1e-6)
    assert loc["chance_out_of_span_fraction"] == pytest.approx(1 - 1 / D)
    assert "note" in report["summary"]  # 8 prompts for 8 dimensions
    effect = loc["effect"]
    assert effect["full"]["steering_effect"] == pytest.approx(2.0, abs=1e-5)  # r·v
    assert effect["in_span"]["steering_effect"] == pytest.approx(0.0, abs=1e-5)  # r·e1
    assert effect["out_of_span"]["steering_effect"] == pytest.approx(2.0, abs=1e-5)  # r·e3
    # logit diff x ± 2 at β = ±1, averaged over x (mean 0)
    assert effect["full"]["logit_diff"]["+1"] == pytest.approx(2.0, abs=1e-5)
    assert effect["full"]["logit_diff"]["-1"] == pytest.approx(-2.0, abs=1e-5)
    # -E_0 = -mean[max(0, -(x+2)) + max(0, x-2)] = 0 for |x| <= 2
    assert effect["full"]["effectiveness"] == pytest.approx(0.0, abs=1e-5)
    assert effect["in_span"]["effectiveness"] == pytest.approx(
        -sum(max(0, -x) + max(0, x) for x in X_VALUES) / len(X_VALUES), abs=1e-5
    )
    assert loc["ablation"]["mean_abs_change"] == pytest.approx(0.0, abs=1e-6)
    assert loc["flag"] is True
    assert report["global"]["flag"] is True


def test_faithful_direction_is_not_flagged(planted):
    model, batch = planted
    report = diagnose_illusion(model, {("mlpOut", 0): at_last(e(2))}, batch)
    assert report["summary"]["flag"] is False
    assert report["summary"]["message"].startswith("no illusion flagged")
    (loc,) = report["locations"]
    assert loc["out_of_span_fraction"] == pytest.approx(0.0, abs=1e-6)
    assert loc["effect"]["full"]["steering_effect"] == pytest.approx(1.0, abs=1e-5)
    assert loc["effect"]["in_span"]["steering_effect"] == pytest.approx(1.0, abs=1e-5)
    assert loc["effect"]["out_of_span"]["steering_effect"] == pytest.approx(0.0, abs=1e-5)
    x = torch.tensor(X_VALUES)
    expected_ablation = float((x - x.mean()).abs().mean())  # the logit diff x becomes x̄
    assert loc["ablation"]["mean_abs_change"] == pytest.approx(expected_ablation, abs=1e-5)
    assert loc["ablation_ratio"] == pytest.approx(expected_ablation / 1.0, abs=1e-5)
    assert loc["flag"] is False


def test_dormant_direction_in_a_component_that_matters_is_not_flagged(planted):
    """v = e3 at mlpOut L0: all of it out of span and all of its effect too, but ablating
    L0 moves the logit diff by 1.25 = 0.625 x the steering effect 2 (>= 0.25): no flag.
    With a looser ablation threshold (0.7) the same location is flagged."""
    model, batch = planted
    vectors = {("mlpOut", 0): at_last(e(3))}
    report = diagnose_illusion(model, vectors, batch)
    (loc,) = report["locations"]
    assert loc["out_of_span_fraction"] == pytest.approx(1.0, abs=1e-6)
    assert loc["out_of_span_share"] == pytest.approx(1.0, abs=1e-5)
    assert loc["ablation_ratio"] == pytest.approx(0.625, abs=1e-5)
    assert report["summary"]["flag"] is False
    assert diagnose_illusion(model, vectors, batch, ablation_fraction=0.7)["summary"]["flag"] is True


def test_mixed_vectors_flag_only_the_illusion_and_report_is_json(planted, tmp_path):
    model, batch = planted
    vectors = {("mlpOut", 0): at_last(e(2)), ("mlpOut", 1): at_last(e(1) + e(3))}
    report = diagnose_illusion(model, vectors, batch)
    by_layer = {loc["layer"]: loc for loc in report["locations"]}
    assert by_layer[1]["flag"] is True and by_layer[0]["flag"] is False
    assert report["summary"]["flagged"] == [by_layer[1]["label"]]
    # globally: S = 1 + 2, of which the out-of-span part (e3) carries 2; ablating both
    # components moves the logit diff by 1.25 = 0.42 x 3 -> the whole is not flagged
    glob = report["global"]
    assert glob["effect"]["full"]["steering_effect"] == pytest.approx(3.0, abs=1e-5)
    assert glob["out_of_span_share"] == pytest.approx(2 / 3, abs=1e-5)
    assert glob["out_of_span_fraction"] == pytest.approx(1 / 3, abs=1e-6)  # ‖e3‖² / (1 + 2)
    assert glob["flag"] is False and report["summary"]["flag"] is True
    path = write_illusion(tmp_path / "illusion.json", report)
    assert json.loads(path.read_text())["summary"]["flagged"] == report["summary"]["flagged"]
    text = format_illusion(report)
    assert "FLAG" in text and "mlpOut L1" in text


def test_steervec_input(planted):
    """The same planted illusion given as a SteerVec on mlpOut L1 (both positions)."""
    model, batch = planted
    grid = build_grid(model.cfg, sites=["mlpOut"], layers=[1], positions="all", seq_len=2)
    method = SteerVec(grid, model.cfg)
    with torch.no_grad():
        method.param("mlpOut", 1).copy_(at_last(e(1) + e(3)))
    report = diagnose_illusion(model, method, batch)
    assert report["summary"]["flag"] is True
    assert [loc["position"] for loc in report["locations"]] == [1]


# -- the span and the out-of-span fraction on hand-made activations ----------------------
def test_out_of_span_fraction_of_a_hand_made_span():
    g = torch.Generator().manual_seed(0)
    coeffs = torch.randn(50, 2, generator=g)
    acts = coeffs[:, :1] * e(1) + coeffs[:, 1:] * e(2)  # in span(e1, e2)
    assert out_of_span_fraction(e(1) + e(3), acts) == pytest.approx(0.5, abs=1e-6)
    assert out_of_span_fraction(3 * e(2) - e(1), acts) == pytest.approx(0.0, abs=1e-6)
    assert out_of_span_fraction(e(5), acts) == pytest.approx(1.0, abs=1e-6)
    v_in, v_out = split_vector(e(1) + e(3), activation_span(acts))
    torch.testing.assert_close(v_in, e(1), atol=1e-6, rtol=0)
    torch.testing.assert_close(v_out, e(3), atol=1e-6, rtol=0)


def test_span_keeps_the_mean_and_truncates_variance_only():
    """A large offset 5·e4 with a small variation along e1: the offset is in the span and
    so is e1, although e1 holds far less than 1% of the second moment (the uncentered
    top-99% components would drop it). A direction with < 1% of the variance is cut."""
    g = torch.Generator().manual_seed(1)
    n = 64
    signs = torch.where(torch.arange(n) % 2 == 0, 1.0, -1.0)  # zero-mean variations
    a = torch.rand(n, generator=g) * signs
    small = 0.01 * torch.rand(n, generator=g) * signs.roll(1)
    acts = 5 * e(4) + 0.05 * a[:, None] * e(1)
    second_moment_e1 = float((0.05 * a).pow(2).mean()) / float(acts.pow(2).sum(1).mean())
    assert second_moment_e1 < 0.01
    assert out_of_span_fraction(e(4), acts) == pytest.approx(0.0, abs=1e-6)
    assert out_of_span_fraction(e(1), acts) == pytest.approx(0.0, abs=1e-6)
    assert out_of_span_fraction(e(6), acts) == pytest.approx(1.0, abs=1e-6)
    # variance along e2 ~1e-4 of the variance along e1: below the 1% cut, kept at variance=1
    acts2 = a[:, None] * e(1) + small[:, None] * e(2)
    assert out_of_span_fraction(e(2), acts2, variance=0.99) == pytest.approx(1.0, abs=1e-3)
    assert out_of_span_fraction(e(2), acts2, variance=1.0) == pytest.approx(0.0, abs=1e-6)
    # a constant location spans its value only
    const = torch.ones(10, 1) * (e(0) + e(1))
    assert activation_span(const).shape[0] == 1
    assert out_of_span_fraction(e(0), const) == pytest.approx(0.5, abs=1e-6)


def test_rejects_scalar_methods_and_zero_vectors(planted):
    from interventions.methods import ActivScalar

    model, batch = planted
    grid = build_grid(model.cfg, sites=["mlpOut"], layers=[1], positions="all", seq_len=2)
    with pytest.raises(TypeError, match="vector"):
        diagnose_illusion(model, ActivScalar(grid, model.cfg), batch)
    with pytest.raises(ValueError, match="zero"):
        diagnose_illusion(model, {("mlpOut", 1): torch.zeros(2, D)}, batch)
    with pytest.raises(ValueError, match="attnOut"):
        diagnose_illusion(model, {("o", 1): torch.ones(2, 2, D)}, batch)
    assert math.isfinite(diagnose_illusion(model, {"mlpOut_1": at_last(e(3))}, batch)["global"]["ablation_ratio"])
