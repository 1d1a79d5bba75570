"""Export an intervention (safetensors + JSON), load it back, and apply it to a model.

    intervention.safetensors   the learned tensors, one per (site, layer): "attnOut_3", ...
                               (plain `safetensors.torch.load_file` reads them)
    intervention.json          method, location grid (sites, layers, positions and their
                               tokens), model identity and fingerprint, tokenizer identity,
                               the tokens the model adds to a prompt and its context,
                               objective and other hyperparameters, seed, versions, metrics

    >>> iv = load_intervention("outputs/2026-11-21/12-00-00")
    >>> with iv.apply(model, beta=-1.0):
    ...     logits = model(tokens)          # steered; hooks are gone afterwards
    >>> iv.generate(model, ["The capital of France is"], betas=(-1, 0, 1), max_new_tokens=5)
"""

from __future__ import annotations

import importlib.metadata as md
import json
import platform
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from interventions.errors import ConfigError, ExportError
from interventions.generation import Completion, generate
from interventions.io import atomic_write_bytes, write_json
from interventions.methods.base import Method
from interventions.methods.registry import class_path, method_class, options_record
from interventions.models import model_device, model_fingerprint, tokenizer_identity
from interventions.tasks.tokenize import added_tokens
from interventions.sites import LocationGrid

FORMAT_VERSION = 1
TENSORS_FILE = "intervention.safetensors"
META_FILE = "intervention.json"


def versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("interventions", "torch", "transformer_lens", "transformers", "lightning", "hydra-core"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


PROBE_TOKENS, PROBE_VALUES = 8, 16


def probe_ids(d_vocab: int, n_ctx: int | None = None) -> torch.Tensor:
    """[1, 8] a fixed token sequence whose clean logits identify a model across wrappers; as
    many of its tokens as fit where the context is shorter (a compiled program's 6)."""
    length = PROBE_TOKENS if n_ctx is None else min(PROBE_TOKENS, n_ctx)
    return (torch.arange(1, length + 1) * 7919 % d_vocab)[None]


@torch.no_grad()
def model_probe(model) -> list[float]:
    """The first logits at the last position of `probe_ids`: a fingerprint that a plain Hugging
    Face model of the same weights reproduces (`hf.apply` checks it; the weight hash cannot
    be read off a model without TransformerBridge's names)."""
    logits = model(probe_ids(model.cfg.d_vocab, model.cfg.n_ctx).to(model_device(model)))[0, -1]
    return [round(float(v), 5) for v in logits[:PROBE_VALUES]]


def probe_matches(logits: torch.Tensor, probe: list[float]) -> bool:
    """Whether logits [vocab] agree with a recorded probe to 1e-3 of their scale (the fused
    GELU and the wrappers move them by about 1e-6)."""
    want = torch.tensor(probe)
    got = logits[: len(probe)].detach().float().cpu()
    return bool(((got - want).abs() <= 1e-3 * (1 + want.abs().max())).all())


def model_identity(model, name: str) -> dict:
    cfg = model.cfg
    return {
        "name": name,
        "fingerprint": model_fingerprint(model),
        "probe": model_probe(model),
        "dtype": str(next(model.parameters()).dtype).removeprefix("torch."),  # the precision it ran in
        "config": {k: getattr(cfg, k, None)
                   for k in ("n_layers", "n_heads", "d_model", "d_head", "d_mlp", "d_vocab", "n_ctx")},
    }


def save_intervention(run_dir: str | Path, method: Method, model, model_name: str, extra: dict) -> Path:
    """Write intervention.safetensors and intervention.json into `run_dir`."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in method.params.items()}
    atomic_write_bytes(run_dir / TENSORS_FILE, safetensors_bytes(tensors, metadata={"method": method.name}))
    meta = {
        "format_version": FORMAT_VERSION,
        "method": method.name,
        "class": class_path(type(method)),  # where a method that is not built in is imported from on load
        "options": options_record(method.options),
        "position_tied": method.position_tied,
        "grid": method.grid.to_dict(),
        "n_params": method.n_params,
        "param_shapes": {k: list(v.shape) for k, v in tensors.items()},
        # per parameter, its locations that got a gradient in training (None: not trained here)
        "received_gradient": None if method.received_gradient is None
        else {k: v.cpu().tolist() for k, v in method.received_gradient.items()},
        "model": model_identity(model, model_name),
        "tokenizer": tokenizer_identity(model.tokenizer),
        # what the model adds to a prompt's own tokens (a BOS), and its context: a prompt's
        # length from the tokenizer alone, checked before the model loads (cli.preflight)
        "tokenization": {"added_tokens": added_tokens(model, model.tokenizer), "n_ctx": model.cfg.n_ctx},
        **method.extra_state(),
        **extra,
        "versions": versions(),
    }
    write_json(run_dir / META_FILE, meta)
    return run_dir


class Intervention:
    """A loaded export: its method (parameters + hooks) and its metadata."""

    def __init__(self, method: Method, meta: dict, path: Path):
        self.method = method
        self.meta = meta
        self.path = path

    @property
    def name(self) -> str:
        return self.method.name

    def check_model(self, model) -> None:
        """Fail with one line if `model` is not the model this was trained on."""
        want = self.meta["model"]
        got = model_fingerprint(model)
        if got != want["fingerprint"]:
            raise ExportError(
                f"{self.path} was trained on model {want['name']!r} (fingerprint {want['fingerprint']}) "
                f"but is applied to a different model (fingerprint {got}); load the same model "
                "or pass check_model=False if you know they match"
            )

    def to(self, model) -> "Intervention":
        device = model_device(model)
        self.method.to(device)
        if "o" in self.method.grid.sites:
            self.method.W_O = model.W_O.detach().to(device)
        return self

    @contextmanager
    def apply(self, model, beta: float | torch.Tensor = 1.0, check_model: bool = True):
        """Attach the intervention's hooks to `model` for the duration of the block.

        β may be a float or a tensor [batch]. Hooks are removed on exit, also when the
        block raises. Position-tied methods raise ExportError for prompts of another
        length.
        """
        if check_model:
            self.check_model(model)
        self.to(model)
        with model.hooks(fwd_hooks=self.method.hooks(beta)):
            yield model


    def generate(self, model, prompts, betas=(-1.0, 0.0, 1.0), max_new_tokens: int = 20, check_model: bool = True,
                 **options) -> list[Completion]:  # fmt: skip
        """Continue `prompts` at each β with this intervention's hooks on `model`
        (`generation.generate`: options do_sample, temperature, top_k, seed,
        positions_beyond, batch_size, stop_at_eos). Refuses another model unless
        `check_model` is false; position-tied methods refuse prompts of another length."""
        if check_model:
            self.check_model(model)
        self.to(model)
        return generate(model, self.method, prompts, betas, max_new_tokens, **options)


def exported_options(cls, meta: dict):
    """The options an export was written with: its "options", else (written before they were
    recorded) the run's "intervention" settings, else the method's defaults; keys the class no
    longer knows are dropped."""
    recorded = meta.get("options") or meta.get("intervention") or {}
    known = {f.name for f in fields(cls.Options)}
    return cls.Options(**{k: v for k, v in recorded.items() if k in known and k != "method"}, method=cls.name)


def build_method(meta: dict, tensors: dict | None = None) -> Method:
    """Rebuild a Method from intervention.json metadata (and its tensors, if given)."""
    try:
        cls = method_class(meta["method"], meta.get("class"))
    except ConfigError as error:
        raise ExportError(f"the export's method cannot be loaded: {error}") from None
    dims = SimpleNamespace(**meta["model"]["config"])
    method = cls(LocationGrid.from_dict(meta["grid"]), dims, options=exported_options(cls, meta))
    if meta.get("received_gradient") is not None:
        method.received_gradient = {k: torch.tensor(v, dtype=torch.bool) for k, v in meta["received_gradient"].items()}
    if tensors is not None:
        expected = set(method.params)
        if set(tensors) != expected:
            raise ExportError(
                f"the export's tensors {sorted(tensors)} do not match its grid {sorted(expected)}"
            )
        method.set_tensors(tensors)
    return method


def load_intervention(path: str | Path) -> Intervention:
    """Load an export from a run directory, or from its .json or .safetensors file."""
    path = Path(path)
    run_dir = path if path.is_dir() else path.parent
    meta_path, tensors_path = run_dir / META_FILE, run_dir / TENSORS_FILE
    if not path.exists():
        raise ExportError(f"{path} does not exist; pass a run directory or its intervention.json")
    if not meta_path.exists() or not tensors_path.exists():
        raise ExportError(
            f"{run_dir} has no finished export ({META_FILE} and {TENSORS_FILE}); "
            "was the run interrupted before it finished?"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as error:
        raise ExportError(f"{meta_path} is not valid JSON ({error.msg})") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise ExportError(f"{meta_path} has format_version {meta.get('format_version')}, expected {FORMAT_VERSION}")
    method = build_method(meta, read_tensors(tensors_path))
    return Intervention(method, meta, run_dir)


def read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of an export file; ExportError (naming the file) if it is damaged or not
    finite (a run that diverged is never exported, so such a file was changed since)."""
    try:
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as error:
        raise ExportError(
            f"{path} cannot be read ({str(error).strip() or type(error).__name__}): the file is damaged or was cut "
            "short; export the run again, or pass another run"
        ) from None
    bad = [key for key, value in tensors.items() if not bool(torch.isfinite(value).all())]
    if bad:
        raise ExportError(f"{path} holds NaN or infinite values (in {', '.join(bad)}); it cannot be applied")
    return tensors
