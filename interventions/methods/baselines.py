"""Training-free baselines that use attribution scores as ActivScalar's α (paper §6.1).

They apply exactly like ActivScalar, h·(1 + βα); only where α comes from differs: a
normalised attribution score per location times one global scale tuned on the train
split (`interventions.attribution`). They export, load and evaluate like any run.
"""

from __future__ import annotations

from interventions.attribution import fit_attribution
from interventions.methods.activscalar import ActivScalar


class AttributionBaseline(ActivScalar):
    """ActivScalar whose α is fitted from attribution scores of kind `name`."""

    trained = False

    def fit(self, model, datamodule, task) -> tuple["AttributionBaseline", dict]:
        return self, fit_attribution(self.name, model, self, datamodule, task)


class ActivPatch(AttributionBaseline):
    """α from activation patching (corrupted prompt → clean run, one location at a time)."""

    name = "activpatch"


class AttrPatch(AttributionBaseline):
    """α from attribution patching (the gradient approximation of activation patching)."""

    name = "attrpatch"


class DLA(AttributionBaseline):
    """α from direct logit attribution through the final LayerNorm."""

    name = "dla"
