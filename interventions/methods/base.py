"""The interface every intervention method implements, and what a method declares about
itself (docs/architecture.md, "Adding a method").

A method owns its parameters, one or several named tensors per (site, layer), and turns a
steering strength β into TransformerLens forward hooks. β is a tensor [batch] so that one
batched forward can run β = +1 and β = -1 (and 0, the clean model) side by side.

A subclass with a `name` registers itself (`methods.registry`) and declares, as class
attributes, everything the rest of the package asks of it: its options (`Options`, a
dataclass: the schema of its YAML, passed to its constructor, recorded in its export),
whether it is trained or fits itself, which sites it supports, whether it is tied to prompt
positions, can be fused, takes answers of several tokens, is one additive vector per layer
(a llama.cpp control vector), and how a report shows it (label, value, colour map, colour).
No module outside `methods/` looks at a method's name to decide what to do.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, ClassVar

import torch
from torch import nn

from interventions.errors import ConfigError
from interventions.methods.positions import Positions, check_beyond
from interventions.methods.registry import register
from interventions.sites import HEAD_SITES, SITES, LocationGrid, site_width
from interventions.spec import InterventionSpec, TrainedInterventionSpec, site_list

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


def param_key(site: str, layer: int, tensor: str = "") -> str:
    """A parameter's name: "attnOut_3", or "attnOut_3__W" for tensor "W" of a method that holds
    several per (site, layer)."""
    return f"{site}_{layer}__{tensor}" if tensor else f"{site}_{layer}"


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

    Subclasses define `name`, `param_shape(site, cfg)` (or `param_shapes` for several named
    tensors) and `site_hook`, and override the declarations below where they differ.
    """

    name: ClassVar[str] = ""
    label: ClassVar[str] = ""  # the display name in tables and plots (default: `name`)
    Options: ClassVar[type] = TrainedInterventionSpec  # the options dataclass (spec.InterventionSpec for fitted methods)
    trained: ClassVar[bool] = True  # False: `fit` sets the parameters, no gradient descent
    position_tied: ClassVar[bool] = True  # parameters per prompt position (`tied_to_positions` may decide per options)
    supported_sites: ClassVar[tuple[str, ...]] = SITES
    multi_token: ClassVar[bool] = True  # trains on answers of several tokens (docs/method.md §6)
    # one vector per (site, layer) added at every position (h + β v): a llama.cpp control vector on residPost
    additive_per_layer: ClassVar[bool] = False
    scalar: ClassVar[bool] = True  # parameters are scalars per location (heatmaps, scalars.csv)
    dynamic: ClassVar[bool] = False  # the applied value depends on the activation (DynScalar's α = gᵀh/‖h‖)
    # True: each location's parameter is a vector (its last axis), as for SteerVec's v and
    # DynScalar's g; False: one scalar per location (ActivScalar's α)
    vector_param: ClassVar[bool] = False
    # Adam's default step size (conf/intervention/<name>.yaml repeats it; a test keeps them equal).
    # The paper's 1e-3 / 1e-4 are for one data point and flip nothing on 256 prompts (docs/concepts.md, Defaults).
    default_lr: ClassVar[float] = 1e-2
    # reports: what a location's value is, and how a heatmap colours it (signed: a diverging map)
    value_label: ClassVar[str] = "α"
    signed_values: ClassVar[bool] = True
    color: ClassVar[str | None] = None  # its colour in a sweep's Pareto plots (None: the plot's next)
    # `intervention.init=obsprop` (obsprop.inits): "direction" (the feature direction at every
    # location), "probe" (DynScalar's g), "projection" (each location's projection); None: not offered
    obsprop_form: ClassVar[str | None] = None
    # the subspace-illusion diagnostic (reports.illusion) of a vector intervention: "auto" (always),
    # "on request" (illusion=true), None (never)
    illusion: ClassVar[str | None] = None
    # a score per location of its grid (`localization_scores`, circuits benchmarks); False for
    # a method that is fitted at one location of its own choosing
    localizes: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("name"):
            register(cls)

    # -- what a class states before any model loads -------------------------------------
    @classmethod
    def display_name(cls) -> str:
        return cls.label or cls.name

    @classmethod
    def fusable(cls) -> bool:
        """Whether K objective settings can train together (`training.fused`)."""
        return cls.trained

    @classmethod
    def tied_to_positions(cls, options: InterventionSpec) -> bool:
        """Whether `options` make this method's parameters per prompt position (then every
        prompt needs the trained length)."""
        return cls.position_tied

    @classmethod
    def check_options(cls, options: InterventionSpec) -> None:
        """One ConfigError line for options this method cannot take (before any model loads)."""
        for site in site_list(options.sites):
            if site not in cls.supported_sites:
                raise ConfigError(f"intervention.sites: {cls.name} acts on {', '.join(cls.supported_sites)}, not {site!r}")

    @classmethod
    def check_run(cls, options: InterventionSpec, config) -> None:
        """One ConfigError line for what this method cannot do with the rest of a run's
        config (`spec.TrainConfig`): fused settings, answers of several tokens, a model on a
        GPU with the CPU trainer."""
        if config.fused is not None and not cls.fusable():
            why = "is training-free (no objective to vary)" if not cls.trained else "cannot train settings together"
            raise ConfigError(f"fused trains several objective settings of one method; intervention={cls.name} {why}: "
                              "drop fused, or sweep it with -m")  # fmt: skip
        if config.task.multi_token and not cls.multi_token:
            raise ConfigError(f"task.multi_token=true with intervention={cls.name}: its parameters are fitted to one "
                              "next-token logit difference, which does not score answers of several tokens; use a "
                              "trained method, e.g. intervention=activscalar")  # fmt: skip
        accelerator = config.trainer.get("accelerator", "cpu")
        if cls.trained and config.model.device != "cpu" and accelerator == "cpu":
            raise ConfigError(f"model.device={config.model.device} with trainer.accelerator=cpu would train on the CPU; "
                              "add trainer=gpu (it moves the model to the GPU, so model.device may stay cpu), or drop "
                              "model.device")  # fmt: skip

    def __init__(self, grid: LocationGrid, cfg, W_O: torch.Tensor | None = None, options: InterventionSpec | None = None):
        """
        Args:
            grid: where the method acts.
            cfg: the model config (d_model, d_head, n_heads).
            W_O: [n_layers, n_heads, d_head, d_model], needed for the `o` site.
            options: the method's options (`Options`; default: its defaults).
        """
        super().__init__()
        self.options = options if options is not None else self.Options(method=self.name)
        self.position_tied = type(self).tied_to_positions(self.options)
        if self.position_tied and grid.positions is None:
            raise ValueError(f"{self.name} needs a position-tied grid")
        self.grid = grid
        self.d_model, self.d_head = cfg.d_model, cfg.d_head
        self.cfg_dims = {"d_model": cfg.d_model, "d_head": cfg.d_head, "n_heads": cfg.n_heads}
        # A list of pairs, not a dict: ParameterDict sorts a dict's keys, which would put
        # layer 10 before layer 2 in `flat_params` (and in the normal init's draw order).
        self.params = nn.ParameterDict(
            [
                (param_key(site, layer, tensor), nn.Parameter(torch.zeros(shape)))
                for site in grid.sites
                for layer in grid.layers
                for tensor, shape in self.param_shapes(site, cfg).items()
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
        """The shape of the one tensor per (site, layer) (or define `param_shapes`)."""
        raise NotImplementedError

    def param_shapes(self, site: str, cfg) -> dict[str, tuple[int, ...]]:
        """The named tensors per (site, layer) and their shapes ({"": shape}: one, named
        "site_layer"; {"W": ..., "b": ...}: several, named "site_layer__W", ...)."""
        return {"": self.param_shape(site, cfg)}

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

    def decoding_hooks(self, beta) -> list[Hook]:
        """Forward hooks for a decoding loop (steered generation: no gradients, one β per row for
        every step): `hooks(beta)`, unless a method has a cheaper form for that case."""
        return self.hooks(beta)

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

    def param(self, site: str, layer: int, tensor: str = "") -> torch.Tensor:
        return self.params[param_key(site, layer, tensor)]

    @property
    def n_params(self) -> int:
        return sum(p.numel() for p in self.params.values())

    def flat_params(self) -> torch.Tensor:
        """vec(θ): every parameter in one vector, in grid order (site-major, then layer)."""
        return torch.cat([p.reshape(-1) for p in self.params.values()])

    def minimality_vector(self) -> torch.Tensor:
        """What minimality's L1 and its count (|θ| ≥ 0.01) are taken over: vec(θ), unless a
        method's parameters are not its edit (LoReFT: W − R and b)."""
        return self.flat_params()

    def location_values(self, site: str, layer: int) -> torch.Tensor:
        """One value per location of (site, layer) from the parameters, "higher: matters
        more" by magnitude (reports, localization scores): [P] or [P, H'] for position-tied
        methods, [] or [H'] for the others. α for scalars, ‖v‖ for vectors."""
        p = self.param(site, layer).detach()
        return p if self.scalar else p.norm(dim=-1)

    def localization_scores(self, site: str, layer: int) -> torch.Tensor:
        """How much each location of (site, layer) matters by this method's reading, shaped as
        `location_values`, ≥ 0 (docs/method.md §13): |α| for scalars, ‖v‖ for vectors."""
        return self.location_values(site, layer).abs()

    def received(self, site: str, layer: int) -> torch.Tensor | None:
        """Which locations of (site, layer) received a gradient in training, shaped as
        `location_values` (None: unknown)."""
        if self.received_gradient is None:
            return None
        return self.received_gradient.get(param_key(site, layer))

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

    @torch.no_grad()
    def set_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Set the parameters by name from an export's tensors (`export.build_method`)."""
        for key, value in tensors.items():
            self.params[key].copy_(value)

    def extra_state(self) -> dict:
        """Anything besides the grid, options and parameters that an export must carry."""
        return {}
