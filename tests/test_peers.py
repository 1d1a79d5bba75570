"""The peers' methods (docs/method.md §12): LoReFT, DiffMean and PCA, each checked against a
direct computation of its formula on tiny tensors, and through export, the plain Hugging Face
model, generation and llama.cpp control vectors."""

from __future__ import annotations

import pytest
import torch

from interventions import hf, load_task, train_fused, train_intervention
from interventions.controlvector import read_control_vector, write_control_vector
from interventions.errors import ConfigError
from interventions.export import load_intervention
from interventions.methods import METHODS, intervention_spec
from interventions.methods.contrastive import answer_differences
from interventions.objective import Objective
from interventions.sites import build_grid, hook_name
from interventions.spec import RunSpec
from interventions.tasks.datamodule import encode
from interventions.toyworld.hf_form import hf_form


def loreft(model, rank=2, positions=None, seq_len=None, seed=0):
    options = intervention_spec("loreft", sites=["residPost"], rank=rank, positions=positions)
    grid = build_grid(model.cfg, sites=["residPost"], positions=positions, seq_len=seq_len)
    method = METHODS["loreft"](grid, model.cfg, options=options)
    method.initialize("normal", 0.3, seed=seed)
    return method


def test_loreft_is_its_formula_with_orthonormal_rows(tiny_model):
    method = loreft(tiny_model, rank=3)
    R, W, b = (method.param("residPost", 1, t).detach() for t in ("R", "W", "b"))
    torch.testing.assert_close(R @ R.T, torch.eye(3), atol=1e-5, rtol=0)
    h = torch.randn(2, 5, tiny_model.cfg.d_model)
    for beta in (1.0, -0.5):
        want = h + beta * ((h @ W.T + b - h @ R.T) @ R)  # h + β Rᵀ(W h + b − R h)
        torch.testing.assert_close(method(h, beta, "residPost", 1), want, atol=1e-5, rtol=1e-5)
    assert torch.equal(method(h, 0.0, "residPost", 1), h)  # β = 0: the clean model
    edit = torch.cat([torch.cat([(method.param("residPost", l, "W") - method.param("residPost", l, "R")).reshape(-1),
                                 method.param("residPost", l, "b")]) for l in (0, 1)])  # fmt: skip
    torch.testing.assert_close(method.minimality_vector(), edit)  # L1 and its count on the edit, W − R and b
    value = (W - R).norm() + b.norm()
    torch.testing.assert_close(method.location_values("residPost", 1), value)


def test_loreft_tied_to_positions_acts_only_there(tiny_model):
    method = loreft(tiny_model, positions=[1, 2], seq_len=4)
    assert method.position_tied and method.positions is not None
    h = torch.randn(1, 4, tiny_model.cfg.d_model)
    out = method(h, 1.0, "residPost", 0)
    assert torch.equal(out[:, [0, 3]], h[:, [0, 3]]) and not torch.equal(out[:, 1:3], h[:, 1:3])
    with pytest.raises(Exception, match="tied to 4-token prompts"):
        method.check_length(5)
    with method.track_positions() as see:  # a decoding step past the prompt: nothing to edit
        see(past=4)
        assert method(h[:, :1], 1.0, "residPost", 0) is h[:, :1] or torch.equal(method(h[:, :1], 1.0, "residPost", 0), h[:, :1])


def test_loreft_fused_settings_train_as_separate_runs(tiny_model):
    train = load_task("ccc", model=tiny_model, split="train", n=16)
    spec = intervention_spec("loreft", sites=["residPost"], init_scale=1e-2, lr=0.05)
    objectives = [Objective(lambda_f=0.0), Objective(lambda_f=1.0, lambda_m=0.01)]
    fused = train_fused(tiny_model, train, objectives, intervention=spec, run=RunSpec(epochs=2))
    for objective, together in zip(objectives, fused):
        alone = train_intervention(tiny_model, train, intervention=spec, objective=objective, run=RunSpec(epochs=2))
        for key, value in alone.method.params.items():
            torch.testing.assert_close(together.params[key], value.detach(), atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("name", ["diffmean", "pca"])
def test_contrastive_vectors_are_their_formula(tiny_model, name):
    task = load_task("ccc", model=tiny_model, split="train", n=12)
    tensors = encode(tiny_model, task)
    grid = build_grid(tiny_model.cfg, sites=["residPost", "mlpOut"], positions=None)
    method = METHODS[name](grid, tiny_model.cfg)
    diffs = answer_differences(tiny_model, method, tensors, batch_size=5)
    # directly: each prompt alone with its answer appended, the activation at that last token
    for i, point in enumerate(task):
        reads = []
        for answer in (point.correct, point.wrong):
            ids = tiny_model.to_tokens(point.prompt + answer)
            _, cache = tiny_model.run_with_cache(ids, names_filter=lambda n: n == hook_name("residPost", 1))
            reads.append(cache[hook_name("residPost", 1)][0, -1])
        torch.testing.assert_close(diffs[("residPost", 1)][i], reads[0] - reads[1], atol=1e-5, rtol=1e-5)
    d = diffs[("mlpOut", 0)]
    v = method.direction(d)
    if name == "diffmean":
        torch.testing.assert_close(v, d.mean(0))
    else:  # the unit vector of largest uncentred variance, pointing along the differences
        assert abs(float(v.norm()) - 1) < 1e-5 and float((d @ v).mean()) > 0
        assert float((d @ v).pow(2).sum()) >= float((d @ torch.linalg.qr(torch.randn(d.shape[1], 5)).Q).pow(2).sum(0).max())


@pytest.mark.parametrize("name", ["diffmean", "pca"])
def test_contrastive_vectors_fit_export_and_write_control_vectors(tiny_model, tmp_path, name):
    train = load_task("ccc", model=tiny_model, split="train", n=16)
    spec = intervention_spec(name, layers=[1])
    fitted = train_intervention(tiny_model, train, intervention=spec)
    info = fitted.info
    assert info["scale"] > 0 and info["kind"] == name
    v = fitted.method.param("residPost", 1).detach()
    assert abs(float(v.norm()) - info["scale"] * info["vector_norms"]["residPost_1"]) < 1e-4 * (1 + float(v.norm()))
    fitted.save(tmp_path / "run")
    iv = load_intervention(tmp_path / "run")
    back = read_control_vector(write_control_vector(iv, tmp_path / "cv.gguf"))
    assert set(back["directions"]) == {1}
    torch.testing.assert_close(torch.from_numpy(back["directions"][1]), v)
    ids = tiny_model.to_tokens(train[0].prompt)
    with torch.no_grad(), iv.apply(tiny_model, beta=1.0):
        steered = tiny_model(ids)[0, -1]
    with torch.no_grad():
        tiny_model.blocks[1].hook_resid_post.add_hook(lambda h, hook: h + v)
        try:
            direct = tiny_model(ids)[0, -1]
        finally:
            tiny_model.reset_hooks()
    torch.testing.assert_close(steered, direct, atol=1e-5, rtol=1e-5)  # h + β s v at every position


def test_training_free_methods_are_refused_what_they_cannot_do():
    from interventions.methods import options_from
    from interventions.methods.registry import configured
    from interventions.spec import TaskSpec, TrainConfig

    for name in ("diffmean", "pca"):
        with pytest.raises(ConfigError, match=f"intervention={name} is training-free"):
            configured(TrainConfig(intervention=options_from({"method": name}), fused=[{"lambda_f": 0}]))
        with pytest.raises(ConfigError, match="task.multi_token=true"):
            configured(TrainConfig(intervention={"method": name}, task=TaskSpec(multi_token=True)))


@pytest.mark.parametrize("name, options", [("loreft", {"sites": ["residPost"]}), ("diffmean", {}), ("pca", {})])
def test_the_peers_apply_to_the_plain_hf_model_and_generate(toy_model, tmp_path, name, options):
    model, _ = toy_model
    train = load_task("ccc", model=model, split="train", n=16)
    trained = train_intervention(model, train, intervention=intervention_spec(name, **options), run=RunSpec(epochs=1))
    trained.save(tmp_path / "run")
    iv = load_intervention(tmp_path / "run")
    ids = model.to_tokens(train[0].prompt)
    plain = hf_form(model)
    with torch.no_grad():
        with iv.apply(model, beta=-1.0):
            bridge = model(ids)[0, -1]
        with hf.apply(plain, iv, beta=-1.0):
            theirs = plain(ids).logits[0, -1]
    torch.testing.assert_close(theirs, bridge, atol=1e-4, rtol=0)
    bridged = iv.generate(model, [train[0].prompt], betas=(-1.0, 1.0), max_new_tokens=3)
    cached = hf.generate(plain, iv, [train[0].prompt], model.tokenizer, betas=(-1.0, 1.0), max_new_tokens=3)
    assert [c.tokens for c in bridged] == [c.tokens for c in cached]
