"""Attribution baselines: DLA, activation patching and attribution patching scores against
independent computations, corrupted prompts, and the baseline end to end."""

import pytest
import torch

from interventions import attribution as attr
from interventions.errors import ConfigError, TaskError
from interventions.forward import last_position_logits
from interventions.sites import build_grid
from interventions.tasks.corruption import corrupted_task
from interventions.tasks import load_task
from interventions.tasks.datamodule import encode
from interventions.spec import RunSpec
from interventions.methods import intervention_spec


@pytest.fixture(scope="module")
def data(tiny_model):
    task = load_task("ccc", model=tiny_model, split="train", template=0, n=6)
    clean = encode(tiny_model, task, fixed_length=True)
    corrupt = encode(tiny_model, corrupted_task(task), fixed_length=True)
    grid = build_grid(tiny_model.cfg, sites=["attnOut", "mlpOut"], seq_len=clean["input_ids"].shape[1])
    return task, clean, corrupt, grid


def _ld(model, batch, hooks=()):
    with torch.no_grad():
        logits = last_position_logits(
            model, batch["input_ids"], batch["attention_mask"], batch["last_index"], fwd_hooks=list(hooks)
        )
    rows = torch.arange(len(logits))
    return logits[rows, batch["correct"]] - logits[rows, batch["wrong"]]


@pytest.mark.parametrize("task_name", ["ccc", "ioi", "pronouns", "bias"])
def test_corrupted_prompts_keep_the_length_and_change_the_entity(tiny_model, task_name):
    task = load_task(task_name, model=tiny_model, split="train", template=0, n=10)
    corrupted = corrupted_task(task)
    for clean, bad in zip(task, corrupted):
        assert clean.prompt != bad.prompt
        assert len(clean.prompt.split()) == len(bad.prompt.split())
        assert (clean.correct, clean.wrong) == (bad.correct, bad.wrong)
    lengths = {len(tiny_model.to_tokens(p.prompt)[0]) for p in corrupted}
    assert lengths == {len(tiny_model.to_tokens(task[0].prompt)[0])}


def test_user_tasks_need_their_own_corrupted_prompts(tmp_path):
    from interventions.tasks.datapoint import DataPoint, Task

    task = Task("jsonl", "train", "0", (DataPoint("a b", " Paris", " Rome"),))
    with pytest.raises(TaskError, match="'corrupted' field"):
        corrupted_task(task)
    path = tmp_path / "data.jsonl"
    path.write_text('{"prompt": "The capital of France is", "correct": " Paris", "wrong": " Rome", '
                    '"corrupted": "The capital of Italy is"}\n')  # fmt: skip
    from interventions.tasks.files import read_points

    (point,) = read_points(path)
    assert point.corrupted == "The capital of Italy is"
    corrupted = corrupted_task(Task("jsonl", "train", "0", (point,)))
    assert corrupted[0].prompt == "The capital of Italy is" and corrupted[0].correct == " Paris"


def test_dla_decomposes_the_logit_difference_through_the_final_layernorm(tiny_model, data):
    """Σ DLA over every component + the LayerNorm and unembedding biases = the logit diff."""
    _, clean, _, grid = data
    model = tiny_model
    scores = attr.dla_scores(model, grid, clean)
    # direct computation: the components of the last position's final residual stream
    _, cache = model.run_with_cache(clean["input_ids"])
    last = clean["input_ids"].shape[1] - 1  # one template: every prompt ends there
    scale = cache["ln_final.hook_scale"][:, last]  # [B, 1]
    direction = model.W_U[:, clean["correct"]] - model.W_U[:, clean["wrong"]]  # [D, B]
    w, b = model.ln_final.weight, model.ln_final.bias

    def direct(x):  # [B, D] component -> its mean contribution through LN's linear part
        x = x - x.mean(-1, keepdim=True)
        return (x * w / scale * direction.T).sum(-1).mean()

    embeds = cache["hook_embed"][:, last] + cache["hook_pos_embed"][:, last]
    total = direct(embeds)
    for layer in range(model.cfg.n_layers):
        for site, name in (("attnOut", f"blocks.{layer}.hook_attn_out"), ("mlpOut", f"blocks.{layer}.hook_mlp_out")):
            expected = direct(cache[name][:, last])
            assert scores[(site, layer)][-1] == pytest.approx(float(expected), abs=1e-5)
            assert torch.all(scores[(site, layer)][:-1] == 0)  # no direct path from earlier positions
            total = total + expected
    bias_terms = (b @ direction).mean() + (model.b_U[clean["correct"]] - model.b_U[clean["wrong"]]).mean()
    assert float(total + bias_terms) == pytest.approx(float(_ld(model, clean).mean()), abs=1e-4)


def test_activation_patching_equals_patching_one_location_by_hand(tiny_model, data):
    _, clean, corrupt, grid = data
    scores = attr.activation_patching_scores(tiny_model, grid, clean, corrupt)
    _, corrupt_cache = tiny_model.run_with_cache(corrupt["input_ids"])
    base = _ld(tiny_model, clean)
    for site, layer, pos, name in (("attnOut", 0, 3, "blocks.0.hook_attn_out"), ("mlpOut", 1, 7, "blocks.1.hook_mlp_out"),
                                   ("attnOut", 1, grid.seq_len - 1, "blocks.1.hook_attn_out")):  # fmt: skip
        def patch(act, hook, pos=pos, name=name):
            act = act.clone()
            act[:, pos] = corrupt_cache[name][:, pos]
            return act

        expected = (base - _ld(tiny_model, clean, [(name, patch)])).mean()
        assert float(scores[(site, layer)][pos]) == pytest.approx(float(expected), abs=1e-5)


def test_attribution_patching_equals_the_first_order_formula(tiny_model, data):
    _, clean, corrupt, grid = data
    scores = attr.attribution_patching_scores(tiny_model, grid, clean, corrupt)
    _, corrupt_cache = tiny_model.run_with_cache(corrupt["input_ids"])
    _, clean_cache = tiny_model.run_with_cache(clean["input_ids"])
    name, layer, pos = "blocks.0.hook_mlp_out", 0, 4
    delta = clean_cache[name][:, pos] - corrupt_cache[name][:, pos]  # [B, D]
    # directional derivative of LD along (h_clean - h_corrupt) at that location, by finite differences
    eps = 1e-3

    def shifted(sign):
        def hook(act, hook):
            act = act.clone()
            act[:, pos] = act[:, pos] + sign * eps * delta
            return act

        return _ld(tiny_model, clean, [(name, hook)])

    expected = ((shifted(1) - shifted(-1)) / (2 * eps)).mean()
    assert float(scores[("mlpOut", layer)][pos]) == pytest.approx(float(expected), rel=2e-2, abs=1e-4)


def test_dla_refuses_sites_without_a_direct_path(tiny_model, data):
    _, clean, _, _ = data
    grid = build_grid(tiny_model.cfg, sites=["v"], seq_len=clean["input_ids"].shape[1])
    with pytest.raises(ConfigError, match="dla"):
        attr.dla_scores(tiny_model, grid, clean)


@pytest.mark.parametrize("kind", ["dla", "attrpatch", "activpatch"])
def test_baselines_train_without_gradients_and_tune_a_scale(tiny_model, kind):
    from interventions import train_intervention

    train = load_task("ccc", model=tiny_model, split="train", template=0, n=8)
    test = load_task("ccc", model=tiny_model, split="test", template=0, n=4)
    trained = train_intervention(tiny_model, train, test, intervention=intervention_spec(kind, layers=[1]))
    assert trained.info["scale"] in attr.DEFAULT_SCALES
    params = trained.method.flat_params().detach()
    assert float(params.abs().max()) == pytest.approx(trained.info["scale"], rel=1e-5)  # normalised scores × scale
    metrics = trained.evaluate("train")
    assert metrics["effectiveness"] == pytest.approx(trained.info["train_effectiveness"], abs=1e-5)


def test_head_study_compares_alpha_and_dla_per_head(tiny_model, tmp_path):
    from interventions.reports.heads import head_study, plot
    from interventions.io import save_figure

    train = load_task("ioi", model=tiny_model, split="train", template=0, n=8)
    test = load_task("ioi", model=tiny_model, split="test", template=0, n=4)
    result = head_study(tiny_model, train, test, RunSpec(epochs=1))
    n_layers, n_heads = tiny_model.cfg.n_layers, tiny_model.cfg.n_heads
    assert len(result["alpha"]) == n_layers and len(result["alpha"][0]) == n_heads
    assert len(result["dla"]) == n_layers and len(result["dla"][0]) == n_heads
    assert -1 <= result["spearman"] <= 1 and -1 <= result["kendall"] <= 1
    save_figure(plot(result), tmp_path / "heads.png")
    assert (tmp_path / "heads.png").stat().st_size > 0


def test_obsprop_steer_picks_a_head_a_position_and_a_scale(tiny_model):
    from interventions import train_intervention
    from interventions.methods.obsprop_steer import choose_head

    norms = torch.tensor([[9.0, 0.0], [1.0, 3.0], [2.0, 0.5]])
    assert choose_head(norms, None, None) == (1, 1)  # layer 0 excluded although largest
    assert choose_head(norms, [2], None) == (2, 0)
    with pytest.raises(ConfigError, match="layer >= 1"):
        choose_head(norms, [0], None)

    train = load_task("bias", model=tiny_model, split="train", template=0, n=8)
    trained = train_intervention(tiny_model, train, train, intervention="obsprop_steer")
    info = trained.info
    grid = trained.method.grid
    assert grid.sites == ("residPost",) and len(grid.layers) == 1 and len(grid.positions) == 1
    assert info["head"] == f"L{grid.layers[0] + 1}H{info['head'].split('H')[1]}"
    assert 0 <= info["position"] < grid.seq_len
    assert info["scale"] > 0
    assert trained.evaluate("train")["effectiveness"] == pytest.approx(info["train_effectiveness"], abs=1e-5)
