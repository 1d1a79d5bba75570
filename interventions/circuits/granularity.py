"""The granularities a circuit's truth and a method's scores are compared at (docs/method.md
§10), and how a method's per-location scores become one score per node of a granularity.

    site      (site, layer) over attnOut and mlpOut       nodes "attnOut_0", "mlpOut_2", ...
    head      (head, layer) over z (each head's output)   nodes "L0H1", ...  (o for a method without z)
    position  (layer, position) over attnOut and mlpOut  nodes "L0P4", ... (position-tied methods)

Where the method's grid is finer than the granularity (positions, heads, sites), a node's
score is the largest score of the finer locations it contains.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from interventions.errors import ConfigError
from interventions.methods.registry import intervention_spec, method_class


@dataclass(frozen=True)
class Granularity:
    name: str
    sites: tuple[str, ...]  # the sites a method's grid must have
    needs_positions: bool  # nodes are positions: only position-tied methods have them
    # other sites with the same nodes, for a method without `sites` (DLA reads each head's
    # output o, not its z)
    alternatives: tuple[tuple[str, ...], ...] = ()

    def sites_for(self, name: str) -> tuple[str, ...]:
        """The sites method `name` is trained on for this granularity."""
        supported = method_class(name).supported_sites
        for sites in (self.sites, *self.alternatives):
            if all(s in supported for s in sites):
                return sites
        return self.sites

    def nodes(self, n_layers: int, n_heads: int, seq_len: int) -> list[str]:
        """Every node of a model of that shape, in a fixed order."""
        if self.name == "site":
            return [site_node(s, l) for l in range(n_layers) for s in self.sites]
        if self.name == "head":
            return [head_node(l, h) for l in range(n_layers) for h in range(n_heads)]
        return [position_node(l, p) for l in range(n_layers) for p in range(seq_len)]


GRANULARITIES = {
    "site": Granularity("site", ("attnOut", "mlpOut"), False),
    "head": Granularity("head", ("z",), False, alternatives=(("o",),)),
    "position": Granularity("position", ("attnOut", "mlpOut"), True),
}


def site_node(site: str, layer: int) -> str:
    return f"{site}_{layer}"


def head_node(layer: int, head: int) -> str:
    return f"L{layer}H{head}"


def position_node(layer: int, position: int) -> str:
    return f"L{layer}P{position}"


def granularity(name: str) -> Granularity:
    if name not in GRANULARITIES:
        raise ConfigError(f"unknown granularity {name!r}; choose from {', '.join(GRANULARITIES)}")
    return GRANULARITIES[name]


def method_problem(name: str, level: Granularity) -> str | None:
    """Why method `name` on `level`'s sites gives no score per node of `level` (None: it does)."""
    cls = method_class(name)
    if not cls.localizes:
        return f"{name} has no score per location (it is fitted at one location it chooses)"
    sites = level.sites_for(name)
    missing = [s for s in sites if s not in cls.supported_sites]
    if missing:
        return f"{name} has no site {', '.join(missing)} (its sites: {', '.join(cls.supported_sites)})"
    if level.needs_positions and not cls.tied_to_positions(intervention_spec(name, sites=list(sites))):
        return f"{cls.name} is not tied to positions, so it has no score per (layer, position)"
    return None


def _per_node(method, level: Granularity, values_of) -> dict[str, float]:
    """{node: the largest of `values_of(site, layer)` (shaped as `location_values`) over the
    finer locations the node holds}."""
    grid, out = method.grid, {}
    for site in level.sites_for(method.name):
        for layer in grid.layers:
            values = values_of(site, layer).detach().float().cpu()
            if level.name == "site":
                key = site_node(site, layer)
                out[key] = max(out.get(key, -torch.inf), float(values.max()))
            elif level.name == "head":
                per_head = values.reshape(-1, values.shape[-1]).amax(0)
                for j, head in enumerate(grid.head_indices):
                    out[head_node(layer, head)] = float(per_head[j])
            else:
                for i, position in enumerate(grid.positions):
                    key = position_node(layer, position)
                    out[key] = max(out.get(key, -torch.inf), float(values[i].max()))
    return out


def node_scores(method, level: Granularity) -> dict[str, float]:
    """{node: score} from a trained or fitted method whose grid covers `level`'s sites: each
    location's `localization_scores`, the largest over the finer locations a node holds."""
    return _per_node(method, level, method.localization_scores)


def unreached_nodes(method, level: Granularity) -> list[str] | None:
    """The nodes none of whose locations received a gradient in training (their score is
    their initialisation), or None where the method does not record it (training-free)."""
    if getattr(method, "received_gradient", None) is None:
        return None
    reached = _per_node(method, level, lambda site, layer: method.received(site, layer).float())
    return sorted(node for node, flag in reached.items() if flag == 0.0)


def random_scores(nodes: list[str], seed: int) -> dict[str, float]:
    """The random baseline: i.i.d. uniform scores."""
    generator = torch.Generator().manual_seed(seed)
    return dict(zip(nodes, torch.rand(len(nodes), generator=generator, dtype=torch.float64).tolist()))
