"""What Hydra composes from, besides the YAML files of conf/: the entry points' schemas
(`spec`), the model and logger presets, the command line's job logging, and a config of its
own for each method an installed package registers (`interventions.methods` entry points;
`intervention=<name>` then works as for a built-in method, whose YAML is in
conf/intervention/).

Torch-free: the command line registers these before checking a config, in a fraction of a
second. A method from an entry point is imported only when a command line names it.
"""

from __future__ import annotations

from dataclasses import asdict

from hydra.core.config_store import ConfigStore

from interventions.entry_points import method_entry_points
from interventions.spec import (
    LOGGERS, EvaluateConfig, GenerateConfig, GeneralizationConfig, LoggerSpec, ModelSpec, SummarizeConfig, TrainConfig,
)  # fmt: skip

ENTRY_CONFIGS = {"train": TrainConfig, "evaluate": EvaluateConfig, "summarize": SummarizeConfig,
                 "generalization": GeneralizationConfig, "generate": GenerateConfig}  # fmt: skip
MODELS = {"toy": ModelSpec(name="toy"), "gpt2": ModelSpec(name="gpt2"),
          "pythia-160m": ModelSpec(name="EleutherAI/pythia-160m"), "from_export": ModelSpec(name=None)}  # fmt: skip
# The command line's logging (interventions.console): log lines on stdout, warnings and errors
# on stderr, and all of them in the run's <job name>.log (train.log, evaluate.log).
JOB_LOGGING = {
    "version": 1,
    "formatters": {"console": {"format": "%(message)s"},
                   "file": {"format": "[%(asctime)s][%(name)s][%(levelname)s] %(message)s"}},
    "filters": {"below_warning": {"()": "interventions.console.BelowWarning"}},
    "handlers": {
        "stdout": {"class": "logging.StreamHandler", "formatter": "console", "filters": ["below_warning"],
                   "stream": "ext://sys.stdout"},
        "stderr": {"class": "logging.StreamHandler", "formatter": "console", "level": "WARNING",
                   "stream": "ext://sys.stderr"},
        "file": {"class": "logging.FileHandler", "formatter": "file",
                 "filename": "${hydra.runtime.output_dir}/${hydra.job.name}.log"},
    },
    "root": {"level": "INFO", "handlers": ["stdout", "stderr", "file"]},
    "disable_existing_loggers": False,
}  # fmt: skip


def installed_methods() -> list[str]:
    """The names of the methods installed packages register (metadata only)."""
    return sorted(method_entry_points())


def store_method(name: str) -> None:
    """A config for installed method `name`: its options' defaults, as a built-in method's YAML
    lists them (imports the method, and torch with it)."""
    from interventions.methods.registry import method_class  # here: torch, only for a method a command line names

    cls = method_class(name)
    ConfigStore.instance().store(group="intervention", name=name, node=asdict(cls.Options(method=name)),
                                 provider="interventions")  # fmt: skip


def store(argv: list[str] | None = None) -> None:
    """Register the schemas and the presets both config folders (conf/, conf/evaluate/) use,
    and the config of each installed method that `argv` names (`intervention=<name>`)."""
    cs = ConfigStore.instance()
    for name, node in ENTRY_CONFIGS.items():
        cs.store(name=f"{name}_schema", node=node)
    for name, node in MODELS.items():
        cs.store(group="model", name=name, node=node)
    for kind in LOGGERS:
        cs.store(group="logger", name=kind, node=LoggerSpec(kind=kind))
    cs.store(group="hydra/job_logging", name="interventions", node=JOB_LOGGING, provider="interventions")
    named = {value for arg in argv or [] if arg.lstrip("+~").startswith("intervention=")
             for value in arg.split("=", 1)[1].split(",")}  # fmt: skip
    for name in installed_methods():
        if name in named:
            store_method(name)
