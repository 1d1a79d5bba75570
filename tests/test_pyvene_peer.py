"""The pyvene peer of `benchmarks/run.py peer` trains the same thing as we do.

The speed comparison means something only if both sides do the same work: same initial
α, same batches, same objective, same optimizer. This checks that the pyvene ActivScalar
ends with our parameters after two epochs on a random 11-layer GPT-2-shaped HF model. pyvene is
the optional `bench` extra (`run.sh` installs it for the test suite).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("pyvene")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.pyvene_peer import build_peer, train_peer  # noqa: E402
from conftest import hub_offline, save_tiny_gpt2  # noqa: E402


@pytest.fixture(scope="module")
def hf_and_bridge(tmp_path_factory, toy_tokenizer):
    from interventions.models import load_model

    folder = tmp_path_factory.mktemp("peer_gpt2")
    hf = save_tiny_gpt2(folder, toy_tokenizer, seed=3, n_layer=11)  # > 10 layers: order of layers 10 vs 2
    with pytest.MonkeyPatch.context() as mp:
        hub_offline(mp)
        model, _ = load_model(str(folder))
    return hf, model


@pytest.mark.parametrize("logits_to_keep", [0, 1])
def test_peer_trains_the_same_parameters(hf_and_bridge, logits_to_keep):
    from interventions.objective import Objective
    from interventions.tasks import load_task
    from interventions.spec import RunSpec
    from interventions.methods import intervention_spec
    from interventions.training.setup import initialized_method, prepare
    from interventions.training.train import train_intervention

    hf, model = hf_and_bridge
    train = load_task("ccc", model=model, split="train", n=12, seed=0)
    objective = Objective(lambda_f=0.1, lambda_m=0.01, margin=1.0)
    spec, run = intervention_spec("activscalar", init_scale=0.05, lr=1e-2), RunSpec(epochs=2, seed=0, batch_size=4)
    ours = train_intervention(model, train, intervention=spec, objective=objective, run=run).method.flat_params()

    dm, seq_len = prepare(model, train, None, None, spec, run)
    init = initialized_method(spec, model, dm, train[0].prompt, seq_len, 0).flat_params()
    peer, interventions = build_peer(hf, seq_len, init)
    before = {k: v.clone() for k, v in hf.state_dict().items()}
    train_peer(peer, interventions, dm, objective, lr=1e-2, epochs=2, logits_to_keep=logits_to_keep)
    theirs = torch.cat([iv.alpha.detach() for iv in interventions])

    assert (theirs - init).abs().max() > 1e-3  # both moved
    torch.testing.assert_close(theirs, ours, atol=2e-5, rtol=0)
    assert all(torch.equal(before[k], v) for k, v in hf.state_dict().items())
    assert all(p.grad is None for p in hf.parameters())


def test_peer_benchmark_alternates_every_side_over_rounds(monkeypatch):
    from benchmarks import peer as bench
    from benchmarks.summary import peer_rows

    order = []  # the recording stand-ins replace the names bench_peer calls
    stand_ins = ((bench, "train_intervention"), (bench, "train_peer"), (bench, "bare_epoch"))
    for module, name in stand_ins:
        fn = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _fn=fn, _name=name, **k: order.append(_name) or _fn(*a, **k))
    result = bench.bench_peer("toy", n_train=8, epochs=2, rounds=2)
    # per round: ours, the HF floor (2 epochs), pyvene, ours with skip_unread, pyvene with last-position logits,
    # ours with HF's GELU module, pyvene with weights requiring grad
    one_round = ["train_intervention", "bare_epoch", "bare_epoch", "train_peer", "train_intervention", "train_peer",
                 "train_intervention", "train_peer"]  # fmt: skip
    # after one warm-up epoch of the floor; then one profiled epoch of ours with skip_unread
    assert order == ["bare_epoch"] + one_round * 2 + ["train_intervention"]
    sides = ("ours", "hf_bare", "pyvene", "ours_skip_unread", "pyvene_last_logits", "ours_hf_gelu", "pyvene_model_grads")
    for side in sides:
        rounds = result[f"{side}_epoch_s_rounds"]
        assert len(rounds) == 2 and all(s > 0 for s in rounds)
        assert result[f"{side}_epoch_s"] == pytest.approx(sum(rounds) / 2, abs=1e-3)  # the median of two
    for label in ("pyvene", "pyvene_last_logits", "pyvene_model_grads"):
        assert result[f"{label}_max_abs_param_diff"] < 1e-5  # both sides trained the same thing
    assert result["ours_max_abs_param_diff"] < 1e-5  # the fused GELU changes rounding only
    assert 0 < result["ours_skip_unread_gemm_epoch_s"] < result["ours_skip_unread_epoch_s"]
    assert len(peer_rows([result])) == 8  # the summary reads every ratio it shows
