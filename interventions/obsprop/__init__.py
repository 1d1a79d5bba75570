"""Observable propagation (Dunefsky, docs/method.md §9): feature vectors of observables.

    from interventions.obsprop import Observable, head_features, analyze
    obs = Observable.parse("she-he", tokenizer)
    Y = head_features(model, obs)                       # [n_layers, n_heads, d_model]
    data = ActivationData.collect(model, input_ids)     # LayerNorm scales, MLP points
    Y = head_features(model, obs, ln_mode="approximate", data=data)

- observables.py: Observable (pairs, weighted tokens, raw vectors), observable_for_task
- features.py:    head / path / MLP features, and the conventions of the LayerNorm modes
- layernorm.py:   LayerNorms: scales on data (ActivationData), the modes (ignore, approximate, exact)
- mlp.py:         the MLP feature at the decision point
- analysis.py:    norms, cosines, couplings, Theorem-2 bounds, SVD comparison (files: reports.obsprop)
- inits.py:       INITS["obsprop"] for ActivScalar, SteerVec, DynScalar
- the command line: `python -m interventions obsprop analyze ...` (JSON + PNG heatmaps)
"""

from interventions.obsprop.analysis import (
    analyze,
    cosine,
    coupling,
    feature_norms,
    rank_heads,
    svd_comparison,
    theorem2_bounds,
)
from interventions.obsprop.features import Component, PathFeature, final_direction, head_features, mlp_features, path_feature
from interventions.obsprop.layernorm import LN_MODES, ActivationData, ln_backward
from interventions.obsprop.mlp import MLPFeature, mlp_feature
from interventions.obsprop.observables import Observable, observable_for_task

__all__ = [
    "ActivationData", "Component", "LN_MODES", "MLPFeature", "Observable", "PathFeature", "analyze",
    "cosine", "coupling", "feature_norms", "final_direction", "head_features", "ln_backward",
    "mlp_feature", "mlp_features", "observable_for_task", "path_feature", "rank_heads",
    "svd_comparison", "theorem2_bounds",
]  # fmt: skip
