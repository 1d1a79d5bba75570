"""Training-free baselines that use per-location scores as ActivScalar's α (paper §6.1).

They apply exactly like ActivScalar, h·(1 + βα); only where α comes from differs: a
normalised score per location (attribution patching, activation patching, direct logit
attribution: `interventions.attribution`) times one global scale tuned on the train split
(`attribution.fit_scores`). They export, load and evaluate like any run.
"""

from __future__ import annotations

from interventions.attribution import fit_scores
from interventions.methods.activscalar import ActivScalar
from interventions.spec import InterventionSpec


class Scored(ActivScalar):
    """ActivScalar whose α is fitted from a score per location (`scores`, per subclass)."""

    Options = InterventionSpec
    trained = False
    multi_token = False
    color = None
    obsprop_form = None
    corrupted = True  # the scores compare each prompt with a corrupted one

    def scores(self, model, batch: dict, corrupted: dict | None) -> dict:
        """{(site, layer): [P] or [P, H']} the scores on the train batch (and its corrupted prompts)."""
        raise NotImplementedError

    def fit(self, model, datamodule, task) -> tuple["Scored", dict]:
        return self, {"kind": self.name, **fit_scores(self, model, datamodule, task)}
