"""THE table of TransformerLens hook names, the intervention sites, and the location grid.

Every hook name the package uses is built here (`hook`, `site_hook`, `additive_hook`,
`norm_module`) and read back here (`parse_hook`); no other module spells one out.

Sites (docs/method.md §2), per layer l:
    attnOut    blocks.{l}.hook_attn_out     [batch, pos, d_model]
    mlpOut     blocks.{l}.hook_mlp_out      [batch, pos, d_model]
    residPost  blocks.{l}.hook_resid_post   [batch, pos, d_model]
    z          blocks.{l}.attn.hook_z       [batch, pos, n_heads, d_head]
    v          blocks.{l}.attn.hook_v       [batch, pos, n_heads, d_head]
    o          per-head output o_h = z_h W_O^h   [batch, pos, n_heads, d_model]

TransformerBridge does not offer `attn.hook_result` for every architecture (not for the
native one), so `o` is realised on `hook_z`: o_h is linear in z_h, so scaling o_h by a
scalar is exactly scaling z_h by it, and reading o_h is `einsum(z, W_O)`. An additive
vector on o_h adds to the attention output, so it is applied at `hook_attn_out`
(`additive_hook`).

A location is (site, layer, position[, head]). The grid is sites x layers x positions
(x heads for head sites) and knows the prompt tokens at its positions, for labels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from interventions.errors import ConfigError

RESIDUAL_SITES = ("attnOut", "mlpOut", "residPost")
HEAD_SITES = ("z", "o", "v")
SITES = RESIDUAL_SITES + HEAD_SITES
DEFAULT_SITES = ("attnOut", "mlpOut")

# Every hook point the package reads or writes: a short name -> the TransformerLens name.
HOOKS = {
    "resid_pre": "blocks.{layer}.hook_resid_pre",
    "ln1_in": "blocks.{layer}.ln1.hook_in",
    "z": "blocks.{layer}.attn.hook_z",
    "v": "blocks.{layer}.attn.hook_v",
    "pattern": "blocks.{layer}.attn.hook_pattern",
    "attn_out": "blocks.{layer}.hook_attn_out",
    "resid_mid": "blocks.{layer}.hook_resid_mid",
    "ln2_in": "blocks.{layer}.ln2.hook_in",
    "ln2_out": "blocks.{layer}.ln2.hook_out",
    "mlp_in": "blocks.{layer}.hook_mlp_in",
    "mlp_inner_out": "blocks.{layer}.mlp.hook_out",
    "mlp_out": "blocks.{layer}.hook_mlp_out",
    "resid_post": "blocks.{layer}.hook_resid_post",
    "ln_final_in": "ln_final.hook_in",
    "ln_final_scale": "ln_final.hook_scale",
    "ln_final_normalized": "ln_final.hook_normalized",
    "unembed_in": "unembed.hook_in",
}
# The hook points of a sequential block from its attention output on: nothing written there
# reaches the block's attention (forward.attention_shareable).
AFTER_ATTENTION = ("attn_out", "resid_mid", "ln2_in", "ln2_out", "mlp_in", "mlp_inner_out", "mlp_out", "resid_post")
# Where a site is read and scaled, and where an additive vector at the site goes.
_SITE_HOOK = {"attnOut": "attn_out", "mlpOut": "mlp_out", "residPost": "resid_post", "z": "z", "o": "z", "v": "v"}
_ADDITIVE_HOOK = {**_SITE_HOOK, "o": "attn_out"}
_PARSE = {template.replace("{layer}", r"(\d+)").replace(".", r"\."): short for short, template in HOOKS.items()}


def hook(short: str, layer: int | None = None) -> str:
    """The TransformerLens name of hook point `short` (a key of HOOKS) in block `layer`."""
    return HOOKS[short].format(layer=layer)


def parse_hook(name: str) -> tuple[str, int | None] | None:
    """(short name, layer) of a TransformerLens hook name in the table; None for any other."""
    for pattern, short in _PARSE.items():
        match = re.fullmatch(pattern, name)
        if match:
            return short, int(match.group(1)) if match.groups() else None
    return None


def hook_name(site: str, layer: int) -> str:
    """The TransformerLens hook where `site` of `layer` is read and scaled."""
    return hook(_SITE_HOOK[site], layer)


def additive_hook(site: str, layer: int) -> str:
    """The TransformerLens hook where an additive vector at `site` of `layer` is added (`o`:
    the attention output, where the heads' outputs add up)."""
    return hook(_ADDITIVE_HOOK[site], layer)


def norm_module(kind: str, layer: int | None = None) -> str:
    """The module path of a normalisation layer: kind "ln1" / "ln2" of block `layer`, or
    "ln_final"."""
    return "ln_final" if kind == "ln_final" else f"blocks.{layer}.{kind}"


def parse_norm_module(name: str) -> tuple[str, int | None] | None:
    """(kind, layer) of a `norm_module` path; None for any other."""
    if name == "ln_final":
        return "ln_final", None
    match = re.fullmatch(r"blocks\.(\d+)\.(ln1|ln2)", name)
    return (match.group(2), int(match.group(1))) if match else None


def site_width(site: str, cfg) -> int:
    """D of one activation vector at `site` (per head for head sites)."""
    if site in RESIDUAL_SITES or site == "o":
        return cfg.d_model
    return cfg.d_head


@dataclass(frozen=True)
class LocationGrid:
    """Where an intervention acts.

    Attributes:
        sites: site names, a subset of SITES.
        layers: layer indices.
        positions: token positions (non-negative), or None for a method not tied to
            positions (DynScalar acts on every position of any prompt).
        tokens: the prompt tokens at `positions` when the grid was built (labels).
        n_heads: heads per layer (for head sites).
        seq_len: the prompt length the positions refer to (None if not position-tied).
    """

    sites: tuple[str, ...]
    layers: tuple[int, ...]
    positions: tuple[int, ...] | None
    n_heads: int
    tokens: tuple[str, ...] | None = None
    seq_len: int | None = None
    heads: tuple[int, ...] | None = field(default=None)

    @property
    def head_indices(self) -> tuple[int, ...]:
        return self.heads if self.heads is not None else tuple(range(self.n_heads))

    def units(self, site: str) -> int:
        """Number of heads a site's parameters have per position (1 for residual sites)."""
        return len(self.head_indices) if site in HEAD_SITES else 1

    @property
    def n_locations(self) -> int:
        """|K| = layers x positions x sites (x heads for head sites)."""
        per_pos = len(self.positions) if self.positions is not None else 1
        return sum(len(self.layers) * per_pos * self.units(s) for s in self.sites)

    def position_label(self, i: int) -> str:
        pos = self.positions[i]
        tok = self.tokens[i] if self.tokens is not None else "?"
        return f"{pos}:{tok}"

    def to_dict(self) -> dict:
        return {
            "sites": list(self.sites),
            "layers": list(self.layers),
            "positions": None if self.positions is None else list(self.positions),
            "tokens": None if self.tokens is None else list(self.tokens),
            "n_heads": self.n_heads,
            "heads": None if self.heads is None else list(self.heads),
            "seq_len": self.seq_len,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "LocationGrid":
        tup = lambda x: None if x is None else tuple(x)  # noqa: E731
        return cls(
            sites=tuple(d["sites"]),
            layers=tuple(d["layers"]),
            positions=tup(d["positions"]),
            n_heads=d["n_heads"],
            tokens=tup(d.get("tokens")),
            seq_len=d.get("seq_len"),
            heads=tup(d.get("heads")),
        )


def _as_list(value, what: str):
    if value is None or value == "all":
        return None
    if isinstance(value, int):
        return [value]
    if isinstance(value, str):
        try:
            return [int(v) for v in value.split(",") if v.strip()]
        except ValueError:
            raise ConfigError(f"{what}={value!r}: expected 'all', an integer or a list of integers") from None
    return [int(v) for v in value]


def _indices(value, n: int, key: str, missing) -> list[int]:
    """"all", an int or a list of indices into range(n) (negative counts from the end), sorted
    and made non-negative; `missing(i)` says why index i is refused."""
    chosen = _as_list(value, key)
    chosen = list(range(n)) if chosen is None else chosen
    for i in chosen:
        if not -n <= i < n:
            raise ConfigError(f"{key}: {missing(i)}")
    return sorted({i % n for i in chosen})


def build_grid(
    cfg,
    sites=DEFAULT_SITES,
    layers="all",
    positions="all",
    heads="all",
    seq_len: int | None = None,
    tokens: list[str] | None = None,
) -> LocationGrid:
    """Validate sites/layers/positions against a model config and build the grid.

    Args:
        cfg: the model's config (n_layers, n_heads).
        sites: names from SITES (a list or a comma-separated string).
        layers: "all", an int or a list (negative counts from the end).
        positions: "all", an int or a list (negative counts from the end), or None for a
            method that is not tied to positions.
        heads: "all" or head indices, for head sites.
        seq_len: prompt length (required when positions are not None).
        tokens: the prompt's tokens (length seq_len), kept as labels.
    """
    if isinstance(sites, str):
        sites = [s.strip() for s in sites.split(",") if s.strip()]
    sites = list(sites)
    unknown = [s for s in sites if s not in SITES]
    if unknown or not sites:
        raise ConfigError(
            f"intervention.sites: unknown site {unknown[0] if unknown else '(none given)'!r}; "
            f"allowed: {', '.join(SITES)}"
        )
    n_kv = getattr(cfg, "n_key_value_heads", None)
    if "v" in sites and n_kv and n_kv != cfg.n_heads:
        raise ConfigError(
            f"intervention.sites: site v on a model with grouped-query attention ({n_kv} key-value heads for "
            f"{cfg.n_heads} query heads): its values are per key-value head, which the v site's per-head grid does "
            "not model; use z (per query head) instead"
        )
    n_layers = cfg.n_layers
    layer_list = _indices(
        layers, n_layers, "intervention.layers",
        lambda i: f"the model has no layer {i} (it has layers 0..{n_layers - 1})",
    )  # fmt: skip
    head_list = _as_list(heads, "intervention.heads")
    if head_list is not None:
        bad = [h for h in head_list if not 0 <= h < cfg.n_heads]
        if bad:
            raise ConfigError(f"intervention.heads: the model has no head {bad[0]} (it has 0..{cfg.n_heads - 1})")
    pos_tuple = None
    token_labels = None
    if positions is not None:
        if seq_len is None:
            raise ValueError("seq_len is required for position-tied grids")
        pos_tuple = tuple(_indices(
            positions, seq_len, "intervention.positions",
            lambda i: f"position {i} is outside the prompts' {seq_len} tokens",
        ))  # fmt: skip
        if tokens is not None:
            token_labels = tuple(tokens[p] for p in pos_tuple)
    return LocationGrid(
        sites=tuple(sites),
        layers=tuple(layer_list),
        positions=pos_tuple,
        n_heads=cfg.n_heads,
        tokens=token_labels,
        seq_len=seq_len if positions is not None else None,
        heads=None if head_list is None else tuple(sorted(set(head_list))),
    )
