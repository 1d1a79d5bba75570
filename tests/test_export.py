"""Export (safetensors + JSON), load and apply: round trips, model checks, hook cleanup."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import build_tiny_model
from interventions.errors import ExportError
from interventions.export import load_intervention, save_intervention
from interventions.forward import last_position_logits
from interventions.methods import METHODS
from interventions.training.module import InterventionModule
from interventions.objective import Objective
from interventions.sites import build_grid
from interventions.tasks import load_task
from interventions.tasks.datamodule import TaskDataModule

CASES = {
    "activscalar": ["attnOut", "mlpOut"],
    "steervec": ["residPost", "z"],
    "dynscalar": ["o", "mlpOut"],
    "activscalar-heads": ["o", "v"],
}


@pytest.fixture(scope="module")
def batch(tiny_model):
    task = load_task("ccc", model=tiny_model, split="test", template=0, n=8, seed=0, fixed_length=True)
    dm = TaskDataModule(tiny_model, None, None, task, batch_size=8, fixed_length=True)
    dm.setup()
    return next(iter(dm.loader("test")))


@pytest.fixture(scope="module")
def other_model(toy_tokenizer):
    """Same architecture and tokenizer as tiny_model, different random weights."""
    return build_tiny_model(toy_tokenizer, seed=1)


def make_module(model, case: str, seq_len: int, tokens=None) -> InterventionModule:
    name = case.split("-")[0]
    cls = METHODS[name]
    sites = CASES[case]
    grid = build_grid(
        model.cfg, sites=sites, positions="all" if cls.position_tied else None, seq_len=seq_len,
        tokens=tokens, heads=[0, 2] if case.endswith("heads") else "all",
    )  # fmt: skip
    method = cls(grid, model.cfg, W_O=model.W_O if "o" in sites else None)
    method.initialize("normal", scale=0.3, seed=7)  # non-trivial values
    return InterventionModule(model, method, Objective(lambda_f=2.0, lambda_m=0.5, margin=1.0))


@pytest.fixture(scope="module")
def exports(tiny_model, batch, tmp_path_factory):
    """{case: (module, run_dir)} for every case, exported once."""
    out = {}
    seq_len = batch["input_ids"].shape[1]
    tokens = tiny_model.to_str_tokens(batch["input_ids"][0])
    for case in CASES:
        module = make_module(tiny_model, case, seq_len, tokens)
        run_dir = tmp_path_factory.mktemp(f"export-{case}")
        extra = {"objective": {"lambda_f": 2.0, "lambda_m": 0.5, "margin": 1.0}, "seed": 0, "metrics": {"test": {}}}
        assert save_intervention(run_dir, module.method, tiny_model, "tiny", extra) == run_dir
        out[case] = (module, run_dir)
    return out


def hooked_names(iv) -> set[str]:
    return {name for name, _ in iv.method.hooks(1.0)}


def no_hooks_on(model, names) -> bool:
    return all(len(model.hook_dict[name]._forward_hooks) == 0 for name in names)


def last_logits(model, batch):
    return last_position_logits(model, batch["input_ids"], batch["attention_mask"], batch["last_index"])


# -- round trip ------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["dir", "json", "safetensors"])
@pytest.mark.parametrize("case", list(CASES))
def test_roundtrip_apply_reproduces_module_logits(tiny_model, batch, exports, case, where):
    module, run_dir = exports[case]
    path = {"dir": run_dir, "json": run_dir / "intervention.json", "safetensors": run_dir / "intervention.safetensors"}[where]
    iv = load_intervention(path)
    assert iv.name == module.method.name
    assert iv.method.grid == module.method.grid
    for key, p in module.method.params.items():
        assert torch.equal(iv.method.params[key], p.detach()), key
    with torch.no_grad():
        want_pos, want_neg = module.steered_logits(batch, betas=(1.0, -1.0))
        for beta, want in ((1.0, want_pos), (-1.0, want_neg)):
            with iv.apply(tiny_model, beta=beta) as model:
                got = last_logits(model, batch)
            assert torch.allclose(got, want, atol=1e-5), beta
        clean = last_logits(tiny_model, batch)
    assert not torch.allclose(want_pos, clean, atol=1e-3)  # the export really steers
    assert torch.allclose(clean.log_softmax(-1), batch["clean_logprobs"], atol=1e-5)  # and is gone


def test_apply_with_beta_per_row(tiny_model, batch, exports):
    module, run_dir = exports["activscalar"]
    iv = load_intervention(run_dir)
    b = batch["input_ids"].shape[0]
    beta = torch.tensor([1.0, -1.0]).repeat_interleave(b)
    doubled = {k: v.repeat(2, *([1] * (v.dim() - 1))) for k, v in batch.items()}
    with torch.no_grad():
        want_pos, want_neg = module.steered_logits(batch)
        with iv.apply(tiny_model, beta=beta):
            got = last_logits(tiny_model, doubled)
    assert torch.allclose(got[:b], want_pos, atol=1e-5)
    assert torch.allclose(got[b:], want_neg, atol=1e-5)


@pytest.mark.parametrize("case", list(CASES))
def test_safetensors_readable_with_plain_load_file(exports, case):
    module, run_dir = exports[case]
    tensors = load_file(str(run_dir / "intervention.safetensors"))
    assert set(tensors) == set(module.method.params)
    for key, value in tensors.items():
        assert torch.equal(value, module.method.params[key].detach()), key
    assert sum(v.numel() for v in tensors.values()) == module.method.n_params


def test_json_metadata(tiny_model, exports, batch):
    module, run_dir = exports["activscalar"]
    meta = json.loads((run_dir / "intervention.json").read_text())
    assert meta["method"] == "activscalar"
    grid = meta["grid"]
    seq_len = batch["input_ids"].shape[1]
    assert grid["sites"] == ["attnOut", "mlpOut"]
    assert grid["layers"] == [0, 1]
    assert grid["positions"] == list(range(seq_len))
    assert grid["tokens"] == tiny_model.to_str_tokens(batch["input_ids"][0])
    assert meta["n_params"] == 2 * 2 * seq_len
    assert meta["model"]["name"] == "tiny"
    assert isinstance(meta["model"]["fingerprint"], str) and len(meta["model"]["fingerprint"]) >= 8
    assert meta["model"]["config"]["d_model"] == 32
    assert meta["tokenizer"]["vocab_size"] == len(tiny_model.tokenizer.get_vocab())
    assert meta["objective"] == {"lambda_f": 2.0, "lambda_m": 0.5, "margin": 1.0}
    assert meta["seed"] == 0
    assert str(meta["versions"]["torch"]).startswith(torch.__version__.split("+")[0])
    assert "python" in meta["versions"]


def test_fingerprints_differ_between_models(exports, other_model):
    from interventions.models import model_fingerprint

    _, run_dir = exports["activscalar"]
    meta = json.loads((run_dir / "intervention.json").read_text())
    assert model_fingerprint(other_model) != meta["model"]["fingerprint"]


# -- model checks ------------------------------------------------------------------------------


def test_apply_to_model_with_other_weights_raises(exports, other_model, batch):
    _, run_dir = exports["activscalar"]
    iv = load_intervention(run_dir)
    with pytest.raises(ExportError) as info:
        with iv.apply(other_model, beta=1.0):
            pass
    message = str(info.value)
    assert "\n" not in message
    assert "fingerprint" in message
    assert no_hooks_on(other_model, hooked_names(iv))
    # explicitly skipping the check is allowed
    with torch.no_grad(), iv.apply(other_model, beta=1.0, check_model=False):
        last_logits(other_model, batch)
    assert no_hooks_on(other_model, hooked_names(iv))


def test_apply_detects_weights_changed_after_first_fingerprint(toy_tokenizer, tiny_model, exports):
    _, run_dir = exports["activscalar"]
    iv = load_intervention(run_dir)
    model = build_tiny_model(toy_tokenizer, seed=1)
    with pytest.raises(ExportError):  # different weights: refused (and fingerprint cached)
        with iv.apply(model):
            pass
    model.load_state_dict(tiny_model.state_dict())  # now exactly tiny_model's weights
    with iv.apply(model):  # should be accepted: the weights are the export's model's
        pass


# -- hooks are removed ------------------------------------------------------------------------


def test_hooks_removed_after_block(tiny_model, batch, exports):
    _, run_dir = exports["dynscalar"]
    iv = load_intervention(run_dir)
    with torch.no_grad():
        clean = last_logits(tiny_model, batch)
        with iv.apply(tiny_model, beta=1.0):
            assert not no_hooks_on(tiny_model, hooked_names(iv))  # attached inside
            steered = last_logits(tiny_model, batch)
        after = last_logits(tiny_model, batch)
    assert not torch.allclose(steered, clean, atol=1e-3)
    assert torch.equal(after, clean)
    assert no_hooks_on(tiny_model, hooked_names(iv))
    assert all(len(hp._forward_hooks) == 0 for hp in tiny_model.hook_dict.values())


def test_hooks_removed_after_exception_in_block(tiny_model, batch, exports):
    _, run_dir = exports["steervec"]
    iv = load_intervention(run_dir)
    with torch.no_grad():
        clean = last_logits(tiny_model, batch)
        with pytest.raises(RuntimeError, match="user code failed"):
            with iv.apply(tiny_model, beta=-1.0):
                last_logits(tiny_model, batch)
                raise RuntimeError("user code failed")
        after = last_logits(tiny_model, batch)
    assert torch.equal(after, clean)
    assert all(len(hp._forward_hooks) == 0 for hp in tiny_model.hook_dict.values())


@pytest.mark.parametrize("case", ["activscalar", "steervec"])
def test_position_tied_export_on_other_length_raises_and_leaves_no_hooks(tiny_model, batch, exports, case):
    _, run_dir = exports[case]
    iv = load_intervention(run_dir)
    seq_len = batch["input_ids"].shape[1]
    short = batch["input_ids"][:, : seq_len - 3]
    with pytest.raises(ExportError) as info:
        with torch.no_grad(), iv.apply(tiny_model, beta=1.0):
            tiny_model(short)
    message = str(info.value)
    assert "\n" not in message and str(seq_len) in message and str(seq_len - 3) in message
    assert all(len(hp._forward_hooks) == 0 for hp in tiny_model.hook_dict.values())
    with torch.no_grad():
        tiny_model(short)  # the model itself still works on any length


def test_dynscalar_export_applies_to_other_lengths(tiny_model, batch, exports):
    _, run_dir = exports["dynscalar"]
    iv = load_intervention(run_dir)
    short = batch["input_ids"][:, :5]
    with torch.no_grad(), iv.apply(tiny_model, beta=1.0):
        assert tiny_model(short).shape[:2] == short.shape


# -- loading errors ------------------------------------------------------------------------------


def one_line_export_error(path) -> str:
    with pytest.raises(ExportError) as info:
        load_intervention(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_load_missing_path(tmp_path):
    message = one_line_export_error(tmp_path / "nope")
    assert "nope" in message and "does not exist" in message


def test_load_folder_without_files(tmp_path):
    message = one_line_export_error(tmp_path)
    assert "intervention.json" in message


def test_load_folder_with_only_the_json(tmp_path, exports):
    _, run_dir = exports["activscalar"]
    (tmp_path / "intervention.json").write_text((run_dir / "intervention.json").read_text())
    message = one_line_export_error(tmp_path)
    assert "intervention.safetensors" in message


def test_load_invalid_json(tmp_path, exports):
    _, run_dir = exports["activscalar"]
    (tmp_path / "intervention.safetensors").write_bytes((run_dir / "intervention.safetensors").read_bytes())
    (tmp_path / "intervention.json").write_text('{"method": "activscalar", ')
    message = one_line_export_error(tmp_path)
    assert "JSON" in message and "intervention.json" in message
    one_line_export_error(tmp_path / "intervention.json")


def test_load_wrong_format_version(tmp_path, exports):
    _, run_dir = exports["activscalar"]
    meta = json.loads((run_dir / "intervention.json").read_text())
    meta["format_version"] = 999
    (tmp_path / "intervention.json").write_text(json.dumps(meta))
    (tmp_path / "intervention.safetensors").write_bytes((run_dir / "intervention.safetensors").read_bytes())
    assert "999" in one_line_export_error(tmp_path)


def test_load_tensors_not_matching_grid(tmp_path, exports):
    _, run_dir = exports["activscalar"]
    _, other_dir = exports["steervec"]
    (tmp_path / "intervention.json").write_text((run_dir / "intervention.json").read_text())
    (tmp_path / "intervention.safetensors").write_bytes((other_dir / "intervention.safetensors").read_bytes())
    one_line_export_error(tmp_path)
