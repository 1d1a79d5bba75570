"""dla: α from direct logit attribution through the final LayerNorm (`attribution.dla_scores`),
for the sites that write to the residual stream."""

from __future__ import annotations

from interventions.attribution import DLA_SITES, dla_scores
from interventions.methods.scored import Scored


class DLA(Scored):
    name = "dla"
    label = "DLA"
    supported_sites = DLA_SITES
    corrupted = False

    def scores(self, model, batch: dict, corrupted: dict | None) -> dict:
        return dla_scores(model, self.grid, batch)
