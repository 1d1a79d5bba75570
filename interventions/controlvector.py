"""Export additive per-layer residual vectors as a llama.cpp control vector (GGUF).

    >>> iv = load_intervention("outputs/2026-11-21/12-00-00")     # a steervec_shared run on residPost
    >>> write_control_vector(iv, "honest.gguf", scale=2.0)        # the file holds 2.0 · v_l
    $ llama-cli -m model.gguf --control-vector honest.gguf ...    # strength 1: this run at β = 2.0

llama.cpp's convention, as its loader and graph apply a file (ggml-org/llama.cpp, read at
the stored versions of these files):

- GGUF architecture: `general.architecture = "controlvector"` (tools/cvector-generator/
  cvector-generator.cpp, `export_gguf`: `arch = "controlvector"`; vgel/repeng
  repeng/extract.py, `ControlVector.export_gguf`: `GGUFWriter(path, "controlvector")`).
- Metadata: `controlvector.model_hint` (string; cvector-generator writes the model's
  `general.architecture`, repeng the Hugging Face `model_type`) and
  `controlvector.layer_count` (cvector-generator: `gguf_set_val_i32(..., v_ctrl.size())`,
  the number of direction tensors; repeng: uint32 `len(self.directions)`). The loader
  reads neither (common/common.cpp, `common_control_vector_load_one` reads only tensors):
  both are informational. We write layer_count as int32, as llama.cpp's own writer does.
- Tensor names: `direction.N`, N parsed from the text after the first '.'; N < 0 and
  N == 0 are refused ("invalid (zero) direction tensor layer index") (common/common.cpp,
  `common_control_vector_load_one`). Several tensors for one N add up.
- Which layer N is: the graph's 0-based layer index `il`. The loader stores direction.N
  at offset `n_embd * (N - 1)` ("layer 1 at [0]", common/common.cpp,
  `common_control_vector_load_one`); `llama_adapter_cvec::apply` fills `tensors[il]` from
  offset `n_embd * (il - 1)` for `il = 1 .. n_layer-1` and `init` pushes `nullptr` for
  il = 0 ("there's never a tensor for layer 0") (src/llama-adapter.cpp), so the two -1s
  cancel: direction.N is `tensors[N]`. Each model graph's layer loop
  `for (int il = 0; il < n_layer; ++il)` ends with `cur = ggml_add(ctx0, cur, ffn_inp);
  cur = build_cvec(cur, il); cb(cur, "l_out", il);` (src/models/llama.cpp), and
  `llm_graph_context::build_cvec` calls `cvec->apply_to(ctx0, cur, il)`
  (src/llama-graph.cpp). So direction.N is added to the output of 0-based block N after
  its MLP residual add: the residual stream TransformerLens calls
  `blocks.{N}.hook_resid_post`, our site residPost at layer N. N ranges over
  1 .. n_layer-1; block 0's output cannot be steered. (repeng agrees: its layer index L
  reads `hidden_states[L + 1]`, block L's output, and is written as `direction.{L}`.)
- dtype float32 (non-F32 is refused: "invalid (non-F32) direction tensor type"), shape
  one dimension of n_embd = d_model (non-1D refused; every tensor must have the same
  n_embd) (common/common.cpp, `common_control_vector_load_one`).
- Sign and scale: the loader multiplies each file by its strength
  (`dst[j] += src[j] * load_info.strength`, common/common.cpp) and `apply_to` adds it,
  `cur = ggml_add(ctx, cur, layer_dir)` (src/llama-adapter.cpp), at every token position
  (an [n_embd] tensor broadcast over the tokens): h + strength * direction.

The same code is in the llama.cpp that llama-cpp-python 0.3.36 vendors (its sdist:
vendor/llama.cpp/common/common.cpp, src/llama-adapter.cpp, src/models/llama.cpp and
src/models/gpt2.cpp, whose GPT-2 graph also calls `build_cvec(cur, il)` right after the
MLP residual add). Note that llama.cpp's own generator measures at `l_out` of blocks
0 .. n_layer-2 (its `cb_eval` skips the last block, whose rows `inp_out_ids` cut) and names
block il's vector `direction.{il+1}` (tools/cvector-generator/mean.hpp and pca.hpp), so it
is applied one block after where it was measured; we follow the loader, not the generator.

So a `steervec_shared` vector v_l on residPost (h + β v_l at every position) is
`direction.l` with the same values: the file holds `scale * v_l`, and llama.cpp at
strength s applies the intervention at β = s * scale.
"""

from __future__ import annotations

import logging
import math
import re
import tempfile
from pathlib import Path

import gguf
import numpy as np
import torch

from interventions.errors import ExportError
from interventions.io import atomic_write_bytes

# gguf's writer logs each file it writes at INFO level; the command line reports the file itself
logging.getLogger("gguf").setLevel(logging.WARNING)
ARCHITECTURE = "controlvector"
KEY_MODEL_HINT = f"{ARCHITECTURE}.model_hint"
KEY_LAYER_COUNT = f"{ARCHITECTURE}.layer_count"
TENSOR_PREFIX = "direction."
SITE = "residPost"
_EXPORT_HINT = "export steervec_shared (or diffmean, pca) on residPost"


def llama_cpp_layer(layer: int) -> int:
    """llama.cpp's control-vector index N (tensor `direction.N`) of our residPost `layer`
    (0-based, `blocks.{layer}.hook_resid_post`): the same number, llama.cpp's `il`, for
    layers >= 1 (module docstring). ExportError for layer 0, which llama.cpp never steers."""
    if layer < 1:
        raise ExportError(
            f"layer {layer}: llama.cpp never adds a control vector to block 0's output (it refuses "
            "direction.0); train with intervention.layers set to layers >= 1, e.g. intervention.layers=[1,2,3]"
        )
    return layer


def _refusal(method) -> str | None:
    """Why `method` is not a set of additive per-layer residual vectors (None: it is)."""
    name = method.name
    if method.additive_per_layer:  # one vector per (site, layer), added at every position: what llama.cpp adds
        return None
    if not getattr(method, "vector_param", False):
        return (f"{name} scales activations (h·(1+βα)); a control vector is added to the residual "
                f"stream: {_EXPORT_HINT}")  # fmt: skip
    if getattr(method, "dynamic", False):
        return (f"{name} scales activations by an input-dependent α (h·(1+βα(h))); a control vector is "
                f"a fixed vector added to the residual stream: {_EXPORT_HINT}")  # fmt: skip
    if getattr(method, "position_tied", True):
        return (f"{name} is tied to prompt positions; llama.cpp adds one vector per layer at every "
                "position: train steervec_shared")  # fmt: skip
    return (f"{name} is not one additive vector per layer; llama.cpp adds one vector per layer to "
            f"the residual stream: {_EXPORT_HINT}")  # fmt: skip


def control_vector_directions(iv, scale: float = 1.0) -> dict[int, np.ndarray]:
    """{llama.cpp index N: scale · v [d_model] float32} of an intervention, or ExportError
    (one line) if it is not additive per-layer vectors on residPost."""
    method = iv.method
    reason = _refusal(method)
    if reason is not None:
        raise ExportError(reason)
    sites = tuple(method.grid.sites)
    other = [site for site in sites if site != SITE]
    if other:
        raise ExportError(
            f"site {other[0]}: llama.cpp adds control vectors to each layer's output, the residual "
            f"stream ({SITE}); train steervec_shared on {SITE} only"
        )
    if sites != (SITE,):
        raise ExportError(f"the intervention has sites {list(sites)}; a control vector needs exactly [{SITE}]")
    layers = tuple(method.grid.layers)
    if not layers:
        raise ExportError("the intervention has no layers; a control vector needs at least one layer >= 1")
    if not math.isfinite(scale):
        raise ExportError(f"scale {scale} is not finite")
    d_model = ((getattr(iv, "meta", None) or {}).get("model") or {}).get("config", {}).get("d_model")
    directions: dict[int, np.ndarray] = {}
    for layer in sorted(layers):
        index = llama_cpp_layer(layer)
        v = method.param(SITE, layer).detach().to("cpu", torch.float32)
        if v.dim() != 1 or (d_model is not None and v.shape[0] != d_model):
            raise ExportError(
                f"{method.name} parameter {SITE}_{layer} has shape {list(v.shape)}; a control vector needs "
                f"one vector [{d_model if d_model is not None else 'd_model'}] per layer"
            )
        if not bool(torch.isfinite(v).all()):
            raise ExportError(f"{method.name} parameter {SITE}_{layer} holds NaN or infinite values")
        directions[index] = (v * scale).numpy().astype(np.float32, copy=False)
    return directions


def write_control_vector(iv, path, model_hint: str | None = None, scale: float = 1.0) -> Path:
    """Write `iv` (a loaded export: `.method`, `.meta`) as a llama.cpp control vector.

    Args:
        iv: an `Intervention` of a method that is one additive vector per layer
            (`Method.additive_per_layer`) on site residPost only.
        path: the .gguf file to write (replaced atomically; its folder is created).
        model_hint: `controlvector.model_hint`; default the export's model name
            (`iv.meta["model"]["name"]`). llama.cpp does not check it.
        scale: multiplies every vector: llama.cpp at strength s then applies β = s · scale.

    Returns the path. ExportError (one line) for anything llama.cpp cannot apply as it was
    trained: scaling methods, position-tied vectors, sites other than residPost, no
    layers, layer 0.
    """
    directions = control_vector_directions(iv, scale)
    if model_hint is None:
        model_hint = ((getattr(iv, "meta", None) or {}).get("model") or {}).get("name")
        if not model_hint:
            raise ExportError("the export records no model name; pass model_hint")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=f".{path.name}.") as tmp:
        staged = Path(tmp) / path.name
        writer = gguf.GGUFWriter(str(staged), ARCHITECTURE)  # writes general.architecture
        writer.add_string(KEY_MODEL_HINT, str(model_hint))
        writer.add_int32(KEY_LAYER_COUNT, len(directions))
        for index, vector in directions.items():
            writer.add_tensor(f"{TENSOR_PREFIX}{index}", vector)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        atomic_write_bytes(path, staged.read_bytes())
    return path


def read_control_vector(path) -> dict:
    """A control-vector GGUF read back: {"architecture", "model_hint", "layer_count",
    "directions": {llama.cpp index N: float32 array [n_embd]}} (tensors of one N add up, as
    llama.cpp's loader adds them). ExportError (one line) for a file llama.cpp would refuse."""
    path = Path(path)
    try:
        reader = gguf.GGUFReader(str(path))
    except (OSError, ValueError) as error:
        raise ExportError(f"{path} is not a readable GGUF file ({str(error).strip() or type(error).__name__})") from None

    def field(key):
        found = reader.get_field(key)
        return None if found is None else found.contents()

    directions: dict[int, np.ndarray] = {}
    for tensor in reader.tensors:
        match = re.fullmatch(r"direction\.(\d+)", tensor.name)
        if match is None or int(match.group(1)) == 0:
            raise ExportError(f"{path}: tensor {tensor.name!r} is not direction.N with N >= 1")
        if tensor.tensor_type != gguf.GGMLQuantizationType.F32 or len(tensor.shape) != 1:
            raise ExportError(f"{path}: {tensor.name} is not a one-dimensional float32 tensor")
        index = int(match.group(1))
        values = np.array(tensor.data, dtype=np.float32)
        directions[index] = directions[index] + values if index in directions else values
    widths = {v.shape[0] for v in directions.values()}
    if len(widths) > 1:
        raise ExportError(f"{path}: direction tensors of different widths {sorted(widths)}")
    return {
        "architecture": field("general.architecture"),
        "model_hint": field(KEY_MODEL_HINT),
        "layer_count": field(KEY_LAYER_COUNT),
        "directions": dict(sorted(directions.items())),
    }
