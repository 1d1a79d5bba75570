"""Training-free baselines that use attribution scores as ActivScalar's α (paper §6.1).

They apply exactly like ActivScalar, h·(1 + βα); only where α comes from differs: a
normalised attribution score per location times one global scale tuned on the train
split (`interventions.attribution`). They export, load and evaluate like any run.
"""

from __future__ import annotations

from interventions.methods.activscalar import ActivScalar


class ActivPatch(ActivScalar):
    """α from activation patching (corrupted prompt → clean run, one location at a time)."""

    name = "activpatch"
    trained = False


class AttrPatch(ActivScalar):
    """α from attribution patching (the gradient approximation of activation patching)."""

    name = "attrpatch"
    trained = False


class DLA(ActivScalar):
    """α from direct logit attribution through the final LayerNorm."""

    name = "dla"
    trained = False
