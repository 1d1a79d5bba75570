"""Intervention methods behind one interface (`Method`), each one class in a module of this
package named after it, registered by name (`methods.registry`): ActivScalar, SteerVec
(tied to positions), steervec_shared (one vector per layer at every position), DynScalar,
LoReFT; and the training-free ones, which fit themselves: the attribution baselines
(activpatch, attrpatch, dla), obsprop_steer, and the contrastive vectors DiffMean and PCA.
Other packages add methods through the `interventions.methods` entry point group.

Importing this package loads no method (nor torch): `METHODS[name]`, `method_class(name)`
and the class names below import a method's module when first asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from interventions.methods.registry import all_methods, intervention_spec, known_names, method_class, options_from

# The classes by the names they were exported under before the registry, and where they live.
_CLASSES = {
    "Method": "base", "INITS": "base", "ActivScalar": "activscalar", "SteerVec": "steervec",
    "SharedSteerVec": "steervec_shared", "DynScalar": "dynscalar", "ObsPropSteer": "obsprop_steer",
    "LoReFT": "loreft", "DiffMean": "diffmean", "PCA": "pca",
}  # fmt: skip


class _Methods(Mapping):
    """Every method's class by name, looked up in the registry (a method is imported on first use)."""

    def __getitem__(self, name: str):
        return method_class(name)

    def __iter__(self):
        return iter(known_names())

    def __len__(self) -> int:
        return len(known_names())


METHODS = _Methods()


def __getattr__(name: str):
    if name in _CLASSES:
        return getattr(importlib.import_module(f"{__name__}.{_CLASSES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["METHODS", "all_methods", "intervention_spec", "known_names", "method_class", "options_from", *_CLASSES]
