"""Intervention methods behind one interface (`Method`): ActivScalar, SteerVec, DynScalar,
and the training-free attribution baselines (activpatch, attrpatch, dla)."""

from __future__ import annotations

from interventions.methods.activscalar import ActivScalar
from interventions.methods.base import INITS, Method, register_init
from interventions.methods.baselines import DLA, ActivPatch, AttrPatch
from interventions.methods.dynscalar import DynScalar
from interventions.methods.steervec import SteerVec

METHODS: dict[str, type[Method]] = {
    cls.name: cls for cls in (ActivScalar, SteerVec, DynScalar, ActivPatch, AttrPatch, DLA)
}

__all__ = ["METHODS", "Method", "ActivScalar", "SteerVec", "DynScalar", "INITS", "register_init"]
import interventions.obsprop.inits  # noqa: E402,F401  (registers INITS["obsprop"]; after METHODS: no cycle)
from interventions.obsprop.steer import ObsPropSteer  # noqa: E402  (same reason)

METHODS[ObsPropSteer.name] = ObsPropSteer
