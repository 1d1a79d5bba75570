"""An export evaluated on a split of a task: the model it applies to, the data, the metrics.

    >>> iv = load_intervention("outputs/latest")
    >>> model = exported_model(iv, ModelSpec(name=None))         # the model it was trained on
    >>> metrics = evaluate_export(iv, model, export_task(iv), "test", seed=0)
"""

from __future__ import annotations

from interventions.export import Intervention
from interventions.models import load_model
from interventions.objective import Objective
from interventions.spec import EvaluateTaskSpec, ModelSpec, TaskSpec, exported_task_spec
from interventions.tasks import load_splits
from interventions.tasks.datamodule import TaskDataModule
from interventions.training.module import InterventionModule


def export_task(iv: Intervention, overrides: EvaluateTaskSpec | None = None, split: str = "test",
                n: int | None = None) -> TaskSpec:  # fmt: skip
    """The task `iv` was trained on, with evaluate.py's task keys (`spec.exported_task_spec`)."""
    return exported_task_spec(iv.meta.get("task"), overrides, split, n)


def exported_model(iv: Intervention, spec: ModelSpec, check: bool = True, cache: dict | None = None):
    """The frozen model `iv` is applied to: `spec.name`, else the export's own model in the
    precision it was trained in unless `spec.dtype` says another (loaded once per name into
    `cache` if given); refuses a model whose weights differ from the export's unless `check`
    is false. The export is moved to the model's device."""
    name = spec.name or iv.meta["model"]["name"]
    options = spec.load_options()
    if spec.name is None and spec.dtype == "float32":  # the export's own model, in the precision it was trained in
        options["dtype"] = iv.meta["model"].get("dtype", "float32")
    cache = {} if cache is None else cache
    if name not in cache:
        cache[name] = load_model(name, **options)[0]
    model = cache[name]
    if check:
        iv.check_model(model)
    iv.to(model)
    return model


def evaluation_module(iv: Intervention, model, task: TaskSpec, split: str, seed: int) -> tuple[InterventionModule, TaskDataModule]:
    """A loaded export wrapped for evaluation on one split of a task, with its tokenized data.

    Position-tied exports refuse prompts of another length (one LengthError line).
    """
    tasks = load_splits(task, model, seed, fixed_length=iv.method.position_tied, splits=(split,))
    dm = TaskDataModule(model, None, None, None, batch_size=task.batch_size, padding_side=task.padding_side,
                        fixed_length=iv.method.position_tied)  # fmt: skip
    dm.tasks[split] = tasks[split]
    dm.setup()
    iv.method.check_length(dm.datasets[split].tensors["input_ids"].shape[1])
    return InterventionModule(model, iv.method, Objective(**iv.meta["objective"])), dm


def evaluate_export(iv: Intervention, model, task: TaskSpec, split: str, seed: int) -> dict:
    """Metrics (docs/method.md §5) of a loaded export on one split of a task."""
    module, dm = evaluation_module(iv, model, task, split, seed)
    return module.evaluate(dm.loader(split))
