"""Training: the LightningModule (module), `train_intervention` (train), K objective settings
at once (fused) and the console's progress (progress)."""

from interventions.training.fused import train_fused
from interventions.training.train import TrainedIntervention, train_intervention

__all__ = ["TrainedIntervention", "train_fused", "train_intervention"]
