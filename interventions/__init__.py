"""interventions: learned interventions (ActivScalar, SteerVec, DynScalar) on frozen
TransformerLens models.

    from interventions import load_model, load_task, train_intervention, load_intervention, RunSpec

Names are imported lazily, so `import interventions` stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "load_model": "interventions.models",
    "model_fingerprint": "interventions.models",
    "load_task": "interventions.tasks",
    "DataPoint": "interventions.tasks",
    "Task": "interventions.tasks",
    "train_intervention": "interventions.training",
    "TrainedIntervention": "interventions.training",
    "train_fused": "interventions.training",
    "RunSpec": "interventions.spec",
    "ObjectiveSpec": "interventions.spec",
    "InterventionSpec": "interventions.spec",
    "TrainedInterventionSpec": "interventions.spec",
    "intervention_spec": "interventions.methods.registry",
    "evaluate_export": "interventions.evaluation",
    "load_intervention": "interventions.export",
    "save_intervention": "interventions.export",
    "Intervention": "interventions.export",
    "Objective": "interventions.objective",
    "METHODS": "interventions.methods",
    "build_grid": "interventions.sites",
    "InterventionsError": "interventions.errors",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'interventions' has no attribute {name!r}")
