"""attrpatch: α from attribution patching, the gradient approximation of activation patching,
∇_h LD · (h − h_corrupted) (`attribution.attribution_patching_scores`)."""

from __future__ import annotations

from interventions.attribution import attribution_patching_scores
from interventions.methods.scored import Scored


class AttrPatch(Scored):
    name = "attrpatch"
    label = "attribution patching"

    def scores(self, model, batch: dict, corrupted: dict | None) -> dict:
        return attribution_patching_scores(model, self.grid, batch, corrupted)
