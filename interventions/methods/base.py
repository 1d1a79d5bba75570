"""The interface every intervention method implements.

A method owns its parameters, one tensor per (site, layer), and turns a steering
strength β into TransformerLens forward hooks. β is a tensor [batch] so that one
batched forward can run β = +1 and β = -1 (and 0, the clean model) side by side.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable

import torch
from torch import nn

from interventions.errors import ConfigError, LengthError
from interventions.sites import HEAD_SITES, LocationGrid, site_width
from interventions.spec import POSITIONS_BEYOND

Hook = tuple[str, Callable]

# Initialisations by name; each fills a method's parameters in place. `interventions.methods`
# adds INITS["obsprop"] (observable propagation).
INITS: dict[str, Callable] = {}


def register_init(name: str):
    def deco(fn):
        INITS[name] = fn
        return fn

    return deco


@register_init("normal")
def _init_normal(method: "Method", scale: float, generator: torch.Generator, **_) -> None:
    """Gaussian noise of a very small scale (the paper: 1e-5)."""
    with torch.no_grad():
        for p in method.params.values():
            p.copy_(torch.randn(p.shape, generator=generator) * scale)


@register_init("zeros")
def _init_zeros(method: "Method", scale: float, generator: torch.Generator, **_) -> None:
    with torch.no_grad():
        for p in method.params.values():
            p.zero_()


def param_key(site: str, layer: int) -> str:
    return f"{site}_{layer}"


def nonzero_locations(grad: torch.Tensor, vector_param: bool) -> torch.Tensor:
    """Which locations a parameter gradient reaches: grad != 0, reduced over the vector axis
    (the last) of a method whose locations hold vectors. Bool, the locations' shape."""
    nonzero = grad.detach() != 0
    return nonzero.any(-1) if vector_param else nonzero


def beta_view(beta, h: torch.Tensor) -> torch.Tensor:
    """β (a float, or a tensor [batch]) shaped to broadcast against h [batch, pos, ...]."""
    beta = torch.as_tensor(beta, dtype=h.dtype, device=h.device)
    if beta.dim() == 0:
        return beta
    return beta.view(-1, *([1] * (h.dim() - 1)))


class BetaViews:
    """`beta_view(beta, h)`, made once per (dtype, device, rank) of h: a hook runs at every
    forward, and a decoding loop runs hundreds of forwards with the same β."""

    def __init__(self, beta):
        self.beta = beta
        self._views: dict[tuple, torch.Tensor] = {}

    def __call__(self, h: torch.Tensor) -> torch.Tensor:
        key = (h.dtype, h.device, h.dim())
        view = self._views.get(key)
        if view is None:
            view = self._views[key] = beta_view(self.beta, h)
        return view


class Method(nn.Module):
    """Parameters + hooks for a location grid.

    Subclasses define `name`, `position_tied`, `param_shape(site)` and `site_hook`.
    """

    name: str = ""
    position_tied: bool = True
    scalar: bool = True  # parameters are scalars per location (heatmaps, scalars.csv)
    trained: bool = True  # False: parameters come from attribution scores, not gradient descent
    dynamic: bool = False  # True: the applied value depends on the activation (DynScalar's α = gᵀh/‖h‖)
    # True: each location's parameter is a vector (its last axis), as for SteerVec's v and
    # DynScalar's g; False: one scalar per location (ActivScalar's α)
    vector_param: bool = False
    # Adam's default step size (conf/intervention/<name>.yaml repeats it; a test keeps them equal).
    # The paper's 1e-3 / 1e-4 are for one data point and flip nothing on 256 prompts (README).
    default_lr: float = 1e-2

    def __init__(self, grid: LocationGrid, cfg, W_O: torch.Tensor | None = None):
        """
        Args:
            grid: where the method acts.
            cfg: the model config (d_model, d_head, n_heads).
            W_O: [n_layers, n_heads, d_head, d_model], needed for the `o` site.
        """
        super().__init__()
        if self.position_tied and grid.positions is None:
            raise ValueError(f"{self.name} needs a position-tied grid")
        self.grid = grid
        self.d_model, self.d_head = cfg.d_model, cfg.d_head
        self.cfg_dims = {"d_model": cfg.d_model, "d_head": cfg.d_head, "n_heads": cfg.n_heads}
        # A list of pairs, not a dict: ParameterDict sorts a dict's keys, which would put
        # layer 10 before layer 2 in `flat_params` (and in the normal init's draw order).
        self.params = nn.ParameterDict(
            [
                (param_key(site, layer), nn.Parameter(torch.zeros(self.param_shape(site, cfg))))
                for site in grid.sites
                for layer in grid.layers
            ]
        )
        if W_O is not None and "o" in grid.sites:
            self.register_buffer("W_O", W_O.detach().clone(), persistent=False)
        else:
            self.W_O = None
        # per parameter: which of its locations got a non-zero gradient in training (`note_gradients`);
        # None for a method that was not trained here (a baseline, an export written before this existed)
        self.received_gradient: dict[str, torch.Tensor] | None = None
        self.register_buffer("_pos_idx", torch.tensor(grid.positions or [], dtype=torch.long), persistent=False)
        self.register_buffer("_head_idx", torch.tensor(grid.head_indices, dtype=torch.long), persistent=False)
        # Set by `at_positions`: [rows or 1, seq] the position of each activation counted from
        # its row's first real token (-1 for padding); None: the activations are exactly the
        # trained prompts' positions 0..seq_len-1.
        self.position_ids: torch.Tensor | None = None
        self.beyond = "none"

    # -- to implement -------------------------------------------------------------
    def param_shape(self, site: str, cfg) -> tuple[int, ...]:
        raise NotImplementedError

    def site_hook(self, site: str, layer: int, beta: torch.Tensor) -> Hook:
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------
    def units_width(self, site: str, cfg) -> tuple[int, ...]:
        """(heads, D) for head sites, (D,) for residual sites."""
        width = site_width(site, cfg)
        return (len(self.grid.head_indices), width) if site in HEAD_SITES else (width,)

    def initialize(self, init: str = "normal", scale: float = 1e-5, seed: int = 0, **context) -> None:
        """Fill the parameters with a named initialisation (see INITS)."""
        if init not in INITS:
            raise ConfigError(f"intervention.init: unknown {init!r}; allowed: {', '.join(sorted(INITS))}")
        INITS[init](self, scale=scale, generator=torch.Generator().manual_seed(seed), **context)

    def hooks(self, beta) -> list[Hook]:
        """Forward hooks for steering strength `beta` (a float or a tensor [batch])."""
        return [
            self.site_hook(site, layer, beta)
            for site in self.grid.sites
            for layer in self.grid.layers
        ]

    def forward(self, h: torch.Tensor, beta, site: str, layer: int) -> torch.Tensor:
        """The intervened activation at (site, layer): h [batch, pos, ...] -> same shape.
        (The hooks do this inside the model; `fused` calls it through `functional_call`.)"""
        return self.site_hook(site, layer, beta)[1](h)

    def note_gradients(self) -> None:
        """Record which locations received a non-zero gradient (after a backward pass).

        A location whose parameter never gets a gradient (e.g. the last layer's positions
        before the read one: nothing there reaches the logits) keeps its initial value,
        which a heatmap must not show as a learned zero.
        """
        if self.received_gradient is None:
            self.received_gradient = {
                key: torch.zeros(p.shape[:-1] if self.vector_param else p.shape, dtype=torch.bool, device=p.device)
                for key, p in self.params.items()
            }  # fmt: skip
        for key, p in self.params.items():
            if p.grad is not None:
                self.received_gradient[key] |= nonzero_locations(p.grad, self.vector_param)

    def param(self, site: str, layer: int) -> torch.Tensor:
        return self.params[param_key(site, layer)]

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.params.values())

    def flat_params(self) -> torch.Tensor:
        """vec(θ): every parameter in one vector, in grid order (site-major, then layer)."""
        return torch.cat([p.reshape(-1) for p in self.params.values()])

    def check_length(self, seq_len: int) -> None:
        """Position-tied methods apply only to prompts of the length they were trained on."""
        if self.position_tied and seq_len != self.grid.seq_len:
            raise LengthError(
                f"this {self.name} intervention is tied to {self.grid.seq_len}-token prompts but got "
                f"{seq_len}-token prompts; use prompts of the trained template, or train "
                "intervention=dynscalar, which accepts any length",
                trained=self.grid.seq_len, got=seq_len,
            )

    def full_positions(self, values: torch.Tensor, seq_len: int) -> torch.Tensor:
        """Scatter per-grid-position values [P, ...] into a full [seq_len, ...] (zeros elsewhere)."""
        self.check_length(seq_len)
        if len(self.grid.positions) == seq_len:
            return values
        full = values.new_zeros((seq_len, *values.shape[1:]))
        return full.index_copy(0, self._pos_idx, values)

    def full_heads(self, values: torch.Tensor, n_heads: int, head_dim: int) -> torch.Tensor:
        """Scatter per-selected-head values (H' along `head_dim`) into all n_heads."""
        if len(self.grid.head_indices) == n_heads:
            return values
        shape = list(values.shape)
        shape[head_dim] = n_heads
        return values.new_zeros(shape).index_copy(head_dim, self._head_idx, values)

    @contextmanager
    def at_positions(self, position_ids: torch.Tensor, beyond: str = "none"):
        """Position-tied hooks read each activation's position from `position_ids` while the
        block runs (the caller may replace `self.position_ids` between forwards, as a decoding
        loop with a key-value cache does, one new position per step).

        Args:
            position_ids: [rows or 1, seq] positions counted from each row's first real token,
                -1 at padding (never intervened on).
            beyond: "none" or "last" (POSITIONS_BEYOND): positions at or past the trained
                prompt length get no intervention, or the last prompt position's parameters.
        """
        if beyond not in POSITIONS_BEYOND:
            raise ConfigError(f"positions_beyond={beyond!r} is not allowed; allowed: {', '.join(POSITIONS_BEYOND)}")
        previous = self.position_ids, self.beyond
        self.position_ids, self.beyond = position_ids, beyond
        try:
            yield self
        finally:
            self.position_ids, self.beyond = previous

    def positioned(self, values: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """Per-grid-position values [P, ...] laid over the positions of h [rows, seq, ...]:
        [seq, ...] for the trained prompts themselves (no `at_positions` block), else
        [rows, seq, ...] read off `position_ids` (zeros at padding, and past the prompt unless
        `beyond` is "last"). `position_ids` of fewer rows than h repeat over h's rows (a batch
        repeated once per β, or per fused setting)."""
        if self.position_ids is None:
            return self.full_positions(values, h.shape[1])
        index, keep, _ = self._position_index()
        if index.shape[0] not in (1, h.shape[0]):
            reps = h.shape[0] // index.shape[0]
            index, keep = index.repeat(reps, 1), keep.repeat(reps, 1)
        full = self.full_positions(values, self.grid.seq_len)  # [trained, ...]
        return full[index] * keep.view(*keep.shape, *([1] * (full.dim() - 1)))

    def acts_here(self) -> bool:
        """Whether a position-tied method acts on any of this forward's positions. False on a
        decoding step past the prompt without `positions_beyond="last"`: its hooks then
        return the activation as it is, which is what their arithmetic gives there
        (h · (1 + β·0), h + β·0)."""
        if not self.position_tied or self.position_ids is None:
            return True
        return self._position_index()[2]

    def _position_index(self) -> tuple[torch.Tensor, torch.Tensor, bool]:
        """(index [rows, seq] into the trained positions, keep [rows, seq] 1.0 where that
        position's parameters apply, else 0.0, whether any does), computed once per
        `position_ids` tensor: every hook of a forward reads the same positions."""
        pos = self.position_ids
        cached = getattr(self, "_index_cache", None)
        if cached is not None and cached[0] is pos and cached[1] == self.beyond:
            return cached[2]
        trained = self.grid.seq_len
        pos = pos.to(self._pos_idx.device)
        keep = (pos >= 0) if self.beyond == "last" else (pos >= 0) & (pos < trained)
        result = (pos.clamp(0, trained - 1), keep.to(self.params[next(iter(self.params))].dtype), bool(keep.any()))
        self._index_cache = (self.position_ids, self.beyond, result)
        return result

    def o_from_z(self, z: torch.Tensor, layer: int) -> torch.Tensor:
        """Per-head outputs o [batch, pos, n_heads, d_model] from z [batch, pos, n_heads, d_head]."""
        return torch.einsum("bphd,hdm->bphm", z, self.W_O[layer])

    def fit(self, model, datamodule, task) -> tuple["Method", dict]:
        """A training-free method (`trained` False) sets its own parameters from the model and
        the train split in `datamodule`; returns the fitted method (this one, or one on the
        grid it chose) and what it found (recorded in intervention.json)."""
        raise NotImplementedError(f"{self.name} is trained by gradient descent, not fitted")

    def extra_state(self) -> dict:
        """Anything besides the grid and parameters that an export must carry."""
        return {}
