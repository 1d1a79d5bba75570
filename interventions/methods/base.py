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

from interventions.errors import ConfigError
from interventions.methods.positions import Positions, check_beyond
from interventions.sites import HEAD_SITES, LocationGrid, site_width

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
        self.register_buffer("_head_idx", torch.tensor(grid.head_indices, dtype=torch.long), persistent=False)
        # the positions a position-tied method's parameters act on (methods.positions); None for the others
        self.positions: Positions | None = Positions(grid, self.name) if self.position_tied else None

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
        """Position-tied methods apply only to prompts of the length they were trained on
        (LengthError); the others to any."""
        if self.positions is not None:
            self.positions.check_length(seq_len)

    def full_heads(self, values: torch.Tensor, n_heads: int, head_dim: int) -> torch.Tensor:
        """Scatter per-selected-head values (H' along `head_dim`) into all n_heads."""
        if len(self.grid.head_indices) == n_heads:
            return values
        shape = list(values.shape)
        shape[head_dim] = n_heads
        return values.new_zeros(shape).index_copy(head_dim, self._head_idx, values)

    @contextmanager
    def track_positions(self, beyond: str = "none"):
        """Within the block, the caller hands each forward's positions to the yielded callable,
        `see(ids)` or `see(past=k)` (`methods.positions.Positions.see`): generation, the plain
        Hugging Face model, teacher-forced answers. A method not tied to positions acts on every
        position and ignores them."""
        if self.positions is None:
            check_beyond(beyond)
            yield lambda ids=None, past=0, length=None: None
            return
        with self.positions.track(beyond) as see:
            yield see

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
