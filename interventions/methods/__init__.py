"""Intervention methods behind one interface (`Method`): ActivScalar, SteerVec (tied to
positions, or shared by all positions: SharedSteerVec), DynScalar,
and the training-free baselines that fit themselves (activpatch, attrpatch, dla,
obsprop_steer).

INITS holds the initialisations by name: normal and zeros (methods.base) and obsprop
(obsprop.inits, which knows nothing of this package: the import points one way).
"""

from __future__ import annotations

from interventions.methods.activscalar import ActivScalar
from interventions.methods.base import INITS, Method
from interventions.methods.baselines import DLA, ActivPatch, AttrPatch
from interventions.methods.dynscalar import DynScalar
from interventions.methods.obsprop_steer import ObsPropSteer
from interventions.methods.steervec import SharedSteerVec, SteerVec
from interventions.obsprop.inits import obsprop_init

INITS["obsprop"] = obsprop_init
METHODS: dict[str, type[Method]] = {
    cls.name: cls for cls in (ActivScalar, SteerVec, SharedSteerVec, DynScalar, ActivPatch, AttrPatch, DLA, ObsPropSteer)
}

__all__ = ["METHODS", "Method", "ActivScalar", "SteerVec", "SharedSteerVec", "DynScalar", "ObsPropSteer", "INITS"]
