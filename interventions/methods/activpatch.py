"""activpatch: α from activation patching, one location at a time: LD(clean) − LD(clean with
that location's activation from the corrupted prompt) (`attribution.activation_patching_scores`)."""

from __future__ import annotations

from interventions.attribution import activation_patching_scores
from interventions.methods.scored import Scored


class ActivPatch(Scored):
    name = "activpatch"
    label = "activation patching"

    def scores(self, model, batch: dict, corrupted: dict | None) -> dict:
        return activation_patching_scores(model, self.grid, batch, corrupted)
