"""From a composed config to the files of a run: what `train.py` and `evaluate.py` do, one
module per flow.

    config (Hydra) -> spec (interventions.spec) and the method's options (methods.registry)
    -> model and task splits -> training -> metrics -> files: intervention.safetensors,
       intervention.json, scalars.csv, heatmap.png, beta_curve.png, a W&B run (offline by
       default) or CSV logs, and metrics.json, written last and atomically: its presence
       marks a finished run.

- `runs.train`: one run (`train_run`), and the files of a trained run (`write_run`);
- `runs.fused`: K objective settings trained together (`fused_run`);
- `runs.evaluate`: an export evaluated, a sweep's summary rebuilt, the generalization
  table (`evaluate_run` picks by the config evaluate.py composed);
- `runs.generate`: steered completions of an export (`generation_run`).
"""

from interventions.runs.evaluate import evaluate_run
from interventions.runs.train import train_run

__all__ = ["evaluate_run", "train_run"]
