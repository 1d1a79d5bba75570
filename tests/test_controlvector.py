"""llama.cpp control-vector export (interventions.controlvector): the GGUF it writes, read back
both through our reader and through gguf's own, and the interventions it refuses."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

gguf = pytest.importorskip("gguf")

from interventions.controlvector import (  # noqa: E402
    llama_cpp_layer,
    read_control_vector,
    write_control_vector,
)
from interventions.errors import ExportError  # noqa: E402
from interventions.export import Intervention  # noqa: E402
from interventions.methods import METHODS  # noqa: E402
from interventions.methods.base import param_key  # noqa: E402
from interventions.sites import LocationGrid, hook, parse_hook  # noqa: E402

D_MODEL, N_LAYERS = 32, 3
META = {"model": {"name": "tiny", "config": {"d_model": D_MODEL, "n_layers": N_LAYERS}}}
DIMS = SimpleNamespace(d_model=D_MODEL, d_head=8, n_heads=4)


class SharedVectors(nn.Module):
    """A stand-in for steervec_shared: one vector [d_model] per (site, layer), no positions."""

    name = "steervec_shared"
    position_tied = False
    vector_param = True
    additive_per_layer = True

    def __init__(self, layers=(1, 2), sites=("residPost",), seed=0):
        super().__init__()
        self.grid = LocationGrid(sites=tuple(sites), layers=tuple(layers), positions=None, n_heads=4)
        generator = torch.Generator().manual_seed(seed)
        self.params = nn.ParameterDict(
            [(param_key(s, l), nn.Parameter(torch.randn(D_MODEL, generator=generator))) for s in sites for l in layers]
        )

    def param(self, site, layer):
        return self.params[param_key(site, layer)]


def intervention(method, meta=META) -> Intervention:
    return Intervention(method, meta, Path("run"))


def test_write_read_round_trip(tmp_path):
    method = SharedVectors(layers=(1, 2))
    path = write_control_vector(intervention(method), tmp_path / "cv.gguf")
    assert path == tmp_path / "cv.gguf" and path.exists()

    back = read_control_vector(path)
    assert back["architecture"] == "controlvector"
    assert back["model_hint"] == "tiny"  # the export's model name by default
    assert back["layer_count"] == 2
    assert sorted(back["directions"]) == [1, 2]  # our layer l (hook_resid_post of block l) is direction.l
    for layer in (1, 2):
        got = back["directions"][layer]
        assert got.dtype == np.float32 and got.shape == (D_MODEL,)
        np.testing.assert_array_equal(got, method.param("residPost", layer).detach().numpy())


def test_file_layout_read_by_gguf_itself(tmp_path):
    """What llama.cpp's loader checks, read off the raw file with gguf.GGUFReader."""
    method = SharedVectors(layers=(2, 1))
    path = write_control_vector(intervention(method), tmp_path / "cv.gguf", model_hint="llama")
    reader = gguf.GGUFReader(str(path))

    keys = {name: field for name, field in reader.fields.items() if not name.startswith("GGUF.")}
    assert set(keys) == {"general.architecture", "controlvector.model_hint", "controlvector.layer_count"}
    assert keys["general.architecture"].contents() == "controlvector"
    assert keys["controlvector.model_hint"].contents() == "llama"
    assert keys["controlvector.layer_count"].types == [gguf.GGUFValueType.INT32]  # as cvector-generator writes it
    assert keys["controlvector.layer_count"].contents() == 2

    assert [t.name for t in reader.tensors] == ["direction.1", "direction.2"]
    for tensor in reader.tensors:
        assert tensor.tensor_type == gguf.GGMLQuantizationType.F32
        assert list(tensor.shape) == [D_MODEL]  # one dimension of n_embd
        layer = int(tensor.name.split(".")[1])
        np.testing.assert_array_equal(np.asarray(tensor.data), method.param("residPost", layer).detach().numpy())


@pytest.mark.parametrize("scale", [-1.5, 0.3, 0.0])
def test_scale_multiplies_every_vector(tmp_path, scale):
    method = SharedVectors(layers=(1, 2), seed=3)
    back = read_control_vector(write_control_vector(intervention(method), tmp_path / "cv.gguf", scale=scale))
    for layer in (1, 2):
        v = method.param("residPost", layer).detach().numpy()
        np.testing.assert_array_equal(back["directions"][layer], v * np.float32(scale))
    assert back["directions"][1].dtype == np.float32


def test_overwrites_atomically_and_leaves_no_temporaries(tmp_path):
    path = tmp_path / "sub" / "cv.gguf"
    write_control_vector(intervention(SharedVectors(seed=1)), path)
    write_control_vector(intervention(SharedVectors(seed=2)), path, scale=2.0)
    assert sorted(p.name for p in path.parent.iterdir()) == ["cv.gguf"]
    v = SharedVectors(seed=2).param("residPost", 1).detach().numpy()
    np.testing.assert_array_equal(read_control_vector(path)["directions"][1], 2.0 * v)


def test_layer_mapping_is_llama_cpp_il():
    assert llama_cpp_layer(1) == 1 and llama_cpp_layer(7) == 7
    with pytest.raises(ExportError):
        llama_cpp_layer(0)


def one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


def position_tied_grid(sites=("residPost",), layers=(1,)):
    return LocationGrid(sites=sites, layers=layers, positions=(0, 1), n_heads=4, seq_len=2)


def test_refuses_scaling_methods(tmp_path):
    method = METHODS["activscalar"](position_tied_grid(), DIMS)
    with pytest.raises(ExportError) as excinfo:
        write_control_vector(intervention(method), tmp_path / "cv.gguf")
    message = one_line(excinfo)
    assert message.startswith("activscalar scales activations") and "steervec_shared (or diffmean, pca) on residPost" in message
    dyn = METHODS["dynscalar"](LocationGrid(("residPost",), (1,), None, 4), DIMS)
    with pytest.raises(ExportError) as excinfo:
        write_control_vector(intervention(dyn), tmp_path / "cv.gguf")
    assert one_line(excinfo).startswith("dynscalar scales activations")
    assert not (tmp_path / "cv.gguf").exists()


def test_refuses_position_tied_steervec(tmp_path):
    method = METHODS["steervec"](position_tied_grid(), DIMS)
    with pytest.raises(ExportError) as excinfo:
        write_control_vector(intervention(method), tmp_path / "cv.gguf")
    message = one_line(excinfo)
    assert "tied to prompt positions" in message and "train steervec_shared" in message


def test_refuses_other_sites(tmp_path):
    method = SharedVectors(sites=("residPost", "attnOut"))
    with pytest.raises(ExportError) as excinfo:
        write_control_vector(intervention(method), tmp_path / "cv.gguf")
    message = one_line(excinfo)
    assert message.startswith("site attnOut:") and "residPost" in message
    assert not (tmp_path / "cv.gguf").exists()


def test_refuses_no_layers_and_layer_zero(tmp_path):
    with pytest.raises(ExportError) as excinfo:
        write_control_vector(intervention(SharedVectors(layers=())), tmp_path / "cv.gguf")
    assert "no layers" in one_line(excinfo)
    with pytest.raises(ExportError) as excinfo:
        write_control_vector(intervention(SharedVectors(layers=(0, 1))), tmp_path / "cv.gguf")
    assert one_line(excinfo).startswith("layer 0:")
    assert not (tmp_path / "cv.gguf").exists()


def test_refuses_non_finite(tmp_path):
    method = SharedVectors()
    with torch.no_grad():
        method.param("residPost", 2)[3] = float("nan")
    with pytest.raises(ExportError) as excinfo:
        write_control_vector(intervention(method), tmp_path / "cv.gguf")
    assert "residPost_2" in one_line(excinfo)
    with pytest.raises(ExportError):
        write_control_vector(intervention(SharedVectors()), tmp_path / "cv.gguf", scale=float("inf"))


def test_real_method_applied_as_llama_cpp_applies_the_file(tiny_model, tmp_path):
    """The registered steervec_shared at β equals adding direction.N (scale β) to the output
    of block N (hook_resid_post) at every position, which is what llama.cpp does."""
    if "steervec_shared" not in METHODS:
        pytest.skip("steervec_shared is not registered yet")
    model = tiny_model
    n_layers = model.cfg.n_layers
    grid = LocationGrid(("residPost",), tuple(range(1, n_layers)), None, model.cfg.n_heads)
    method = METHODS["steervec_shared"](grid, model.cfg)
    with torch.no_grad():
        for p in method.params.values():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(5)))
    for name, _ in method.hooks(1.0):  # the method itself acts where we say direction.N goes
        short, layer = parse_hook(name)
        assert short == "resid_post" and layer in grid.layers

    beta = -0.75
    iv = Intervention(method, {"model": {"name": "tiny", "config": {"d_model": model.cfg.d_model}}}, tmp_path)
    back = read_control_vector(write_control_vector(iv, tmp_path / "cv.gguf", scale=beta))
    assert set(back["directions"]) <= set(range(1, n_layers))

    tokens = torch.tensor([[1, 5, 9, 2, 7, 3]])
    with iv.apply(model, beta=beta, check_model=False):
        steered = model(tokens)

    def add(direction):
        return lambda h, hook=None: h + torch.as_tensor(direction, dtype=h.dtype, device=h.device)

    file_hooks = [(hook("resid_post", n), add(d)) for n, d in back["directions"].items()]
    with model.hooks(fwd_hooks=file_hooks):
        llama_cpp_like = model(tokens)
    clean = model(tokens)
    assert not torch.allclose(steered, clean)
    torch.testing.assert_close(llama_cpp_like, steered, rtol=1e-5, atol=1e-5)


def test_read_refuses_other_files(tmp_path):
    bad = tmp_path / "model.gguf"
    writer = gguf.GGUFWriter(str(bad), "llama")
    writer.add_tensor("blk.0.attn_norm.weight", np.ones(4, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(ExportError) as excinfo:
        read_control_vector(bad)
    assert "blk.0.attn_norm.weight" in one_line(excinfo)
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all")
    with pytest.raises(ExportError) as excinfo:
        read_control_vector(junk)
    one_line(excinfo)
