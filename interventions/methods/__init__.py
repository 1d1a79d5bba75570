"""Intervention methods behind one interface (`Method`): ActivScalar, SteerVec, DynScalar."""

from __future__ import annotations

from interventions.methods.activscalar import ActivScalar
from interventions.methods.base import INITS, Method, register_init
from interventions.methods.dynscalar import DynScalar
from interventions.methods.steervec import SteerVec

METHODS: dict[str, type[Method]] = {
    cls.name: cls for cls in (ActivScalar, SteerVec, DynScalar)
}

__all__ = ["METHODS", "Method", "ActivScalar", "SteerVec", "DynScalar", "INITS", "register_init"]
