"""The command line's checks before any model loads: one ConfigError line per problem.

`preflight(argv, entry)` composes the Hydra config exactly as the entry point will (each
value of a sweep too), turns it into its spec objects (interventions.spec, which checks
every value) and checks what the specs cannot see: the output folders (writable, not
holding a finished run), a GPU asked of a machine without one, an export path that is a
sweep folder, and the data the command reads (`cli.inputs`). Hydra's own errors are read
by their type and attributes (the missing group option, the key that failed), never by
their text.

Which config an entry point composes (`entry_config`): train.py composes conf/train.yaml;
evaluate.py composes, from conf/evaluate/, summarize.yaml when given sweep=,
generalization.yaml when given generalization=, generate.yaml when given generate=, else
evaluate.yaml.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep
from hydra.errors import HydraException, MissingConfigException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from interventions.cli.cluster import check_request, cluster_nodes, require_sbatch, slurm_request
from interventions.cli.inputs import check_inputs, export_meta
from interventions.errors import ConfigError
from interventions.hub import download_hint, hub_problem, is_hub_name
from interventions.rundir import METRICS_FILE, check_writable, is_finished
from interventions.cli.configs import ENTRY_CONFIGS, store
from interventions.methods.registry import configured
from interventions.spec import EvaluateConfig, GenerateConfig, SummarizeConfig, TrainConfig, field_kind, to_spec
from interventions.sweeps.jobs import check_sweep_folder
from interventions.sweeps.space import format_value, sweeper_options
from interventions.toyworld import hf_form_problem, is_native_model, model_config

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
EVALUATE_CONF_DIR = CONF_DIR / "evaluate"
# keys that pick summarize.yaml / generalization.yaml / generate.yaml
EVALUATE_MODES = {"sweep": "summarize", "generalization": "generalization", "generate": "generate"}
MODE_VALUES = {"sweep": "<dir>", "generalization": "<runs>", "generate": "<run>"}
REMOTE_LAUNCHERS = ("slurm", "submitit_slurm")  # their jobs' GPUs are not this machine's
# Hydra's command-line flags that take the next word as their value.
_FLAGS_WITH_VALUE = {"--cfg", "-c", "--config-name", "-cn", "--config-path", "-cp", "--config-dir", "-cd",
                     "--package", "-p", "--info", "-i", "--experimental-rerun", "--shell-completion", "-sc"}  # fmt: skip


@dataclass
class Preflight:
    """What the checks found that the entry point acts on before Hydra starts: finished run
    folders to move aside (`overwrite=true`), and notes to print."""

    supersede: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def hydra_overrides(argv: list[str]) -> dict[str, str]:
    """The command line's hydra.* overrides as {key: value} (the last one wins, as in Hydra)."""
    return {a.lstrip("+~").split("=", 1)[0]: a.split("=", 1)[1] for a in argv
            if "=" in a and a.lstrip("+~").startswith("hydra.")}  # fmt: skip


def argv_value(argv: list[str], key: str) -> str | None:
    """The value of `key=value` on the command line (the last one wins, as in Hydra)."""
    values = [a.split("=", 1)[1] for a in argv if "=" in a and a.lstrip("+~").split("=", 1)[0] == key]
    return values[-1] if values else None


def entry_config(argv: list[str], entry: str) -> tuple[Path, str]:
    """(config folder, config name) that entry point `entry` composes for `argv`."""
    if entry == "train":
        return CONF_DIR, "train"
    modes = [key for key in EVALUATE_MODES if argv_value(argv, key) is not None]
    if len(modes) > 1:
        given = " or ".join(f"{m}={MODE_VALUES[m]}" for m in modes)
        raise ConfigError(f"pass either {given}, not {'both' if len(modes) == 2 else 'all of them'}")
    return EVALUATE_CONF_DIR, EVALUATE_MODES[modes[0]] if modes else "evaluate"


def compose_config(conf_dir: Path, name: str, overrides: list[str], hydra: bool = False) -> DictConfig:
    """The config Hydra composes from `conf_dir`/`name` with `overrides` (the hydra node too
    if `hydra`)."""
    store(overrides)
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            return compose(name, overrides=overrides, return_hydra_config=hydra)
    finally:
        GlobalHydra.instance().clear()


def check_words(argv: list[str]) -> None:
    """Every argument is a flag or an override `key=value` (Hydra's own error for a bare
    word, `missing EQUAL at '<EOF>'`, does not say which word or what to write)."""
    skip = False
    for i, arg in enumerate(argv):
        if skip or arg.startswith("-"):
            skip = arg in _FLAGS_WITH_VALUE
            continue
        if "=" not in arg and not arg.startswith("~"):  # ~key deletes a key
            following = argv[i + 1] if i + 1 < len(argv) else None
            if following is not None and "=" not in following and not following.startswith("-"):
                raise ConfigError(f"{arg!r} is not an override (no '='); write {arg}={following}")
            raise ConfigError(f"{arg!r} is not an override (no '='); write {arg}=<value> (e.g. task=ioi)")


def parse_error(override: str, error: HydraException) -> ConfigError:
    """One line for an override Hydra's grammar refuses, with the quoting that fixes it where
    its value holds characters the grammar reserves (braces, '=', spaces, ...)."""
    key, _, value = override.partition("=")
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if value and not value.startswith(("'", '"', "[")) and any(ch in value for ch in "{}=()[],:$ '\""):
        quoted = value.replace('"', '\\"')
        return ConfigError(f"cannot parse {override!r} ({reason}): quote a value with these characters, "
                           f"e.g. '{key}=\"{quoted}\"'")  # fmt: skip
    return ConfigError(f"cannot parse {override!r}: {reason}")


def expand_sweeps(overrides: list[str]) -> list[list[str]]:
    """Override lists to compose: the first value of every sweep, then each other value alone."""
    parser = OverridesParser.create()
    for override in overrides:  # one at a time: the error names the one that fails
        try:
            parser.parse_overrides([override])
        except HydraException as error:
            raise parse_error(override, error) from None
    parsed = parser.parse_overrides(overrides)
    fixed, sweeps = [], []
    for text, o in zip(overrides, parsed):
        if o.is_sweep_override() and isinstance(o.value(), ChoiceSweep):
            prefix = text.split("=", 1)[0]
            sweeps.append([f"{prefix}={v}" for v in o.value().list])
        elif not o.is_sweep_override():
            fixed.append(text)  # range()/glob() sweeps are checked per run by the entry point
    runs = [fixed + [s[0] for s in sweeps]]
    for i, values in enumerate(sweeps):
        runs += [fixed + [s[0] if j != i else v for j, s in enumerate(sweeps)] for v in values[1:]]
    return runs


def _field_kind(error: OmegaConfBaseException) -> str:
    """What a key that failed type validation must be, read off its schema field (an element
    of a typed list, betas=[a,1]: the list's type names the element's)."""
    return field_kind(error.object_type, error.key, getattr(error, "ref_type", None))


def translate(error: HydraException, conf_dir: Path, name: str, overrides: list[str]) -> ConfigError:
    """One line from a Hydra composition error, by its type and attributes (`overrides`: the
    composition's, to list the keys the failing one's group has)."""
    if isinstance(error, MissingConfigException) and error.missing_cfg_file and "/" in error.missing_cfg_file:
        group, option = error.missing_cfg_file.rsplit("/", 1)
        return ConfigError(f"{group}={option!r} does not exist; allowed: {', '.join(sorted(error.options or []))}")
    cause = error.__cause__
    key = getattr(cause, "full_key", None)
    if key and type(cause).__name__ == "ValidationError":
        return ConfigError(f"{key}={getattr(cause, 'value', '?')!r} must be {_field_kind(cause)}")
    if key:
        parent, _, leaf = key.rpartition(".")
        base = compose_config(conf_dir, name, [o for o in overrides if o.lstrip("+~").split("=", 1)[0] != key])
        node = OmegaConf.select(base, parent) if parent else base
        keys = ", ".join(node.keys()) if isinstance(node, DictConfig) else "(none)"
        return ConfigError(f"unknown key {key}; allowed keys of {parent or 'the config'}: {keys}")
    return ConfigError(str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__)


def check_gpu_available(spec) -> None:
    """A config asking for a GPU on a machine where torch sees none: one line, before any
    model loads (Lightning and torch would fail later with a traceback)."""
    trainer = getattr(spec, "trainer", {})
    asks = [f"trainer.accelerator={trainer['accelerator']}"] if trainer.get("accelerator") in ("gpu", "cuda") else []
    device = str(getattr(getattr(spec, "model", None), "device", "") or "")
    if device.startswith("cuda"):
        asks.append(f"model.device={device}")
    if not asks:
        return
    import torch  # only here: a config that asks for a GPU pays for torch before its one line

    if not torch.cuda.is_available():
        raise ConfigError(
            f"{asks[0]} asks for a GPU, but torch sees none (torch {torch.__version__}, CUDA build: "
            f"{torch.version.cuda or 'no'}); run on the CPU (the default trainer and model.device), or install a "
            "CUDA build of torch"
        )


def check_export_path(path: str) -> None:
    """An export path that is a sweep folder gets pointed to sweep= (or one of its runs)."""
    folder = Path(path)
    if not folder.is_dir() or (folder / "intervention.json").exists():
        return
    if (folder / "pareto.json").exists() or (folder / "0" / "sweep_job.json").exists():
        raise ConfigError(
            f"{path} is a sweep folder, not one run; pass sweep={path} to rebuild its summary, or "
            f"intervention={folder / '0'} (a run inside it) to evaluate one run"
        )


def check_hf_backend(spec: GenerateConfig) -> None:
    """backend=hf with a TransformerLens-native model (model.name, else the export's, read off
    its intervention.json) that has no Hugging Face form (`toyworld.hf_form`: the toy
    world's model has one): one line before Hydra claims an output folder."""
    if spec.backend != "hf":
        return
    name = spec.model.name
    if name is None:
        try:
            name = export_meta(spec.generate)["model"]["name"]
        except (KeyError, TypeError):
            return  # loading the export says what is wrong with it
    config = model_config(name) if is_native_model(name) else None
    problem = hf_form_problem(config) if config is not None else None  # no config: loading the model says why
    if problem is not None:
        raise ConfigError(f"backend=hf: the TransformerLens-native model {name!r} has no Hugging Face form ({problem}); "
                          "use backend=bridge")  # fmt: skip


def check_steering_task(spec: EvaluateConfig) -> None:
    """evaluate.py steering_eval=true: the task evaluated (task.name, else the export's) must
    have other tasks' held-out prompts to measure off-target harm on (train.py's config
    checks its own task: `spec.TrainConfig`)."""
    if not spec.steering_eval:
        return
    name = spec.task.name or ((export_meta(spec.intervention) or {}).get("task") or {}).get("name")
    if name is not None:  # None: loading the export says what is wrong with it
        spec.steering.off_target_tasks(name)


def check_hub_model(spec) -> None:
    """A model named by a hub id that is neither in the local cache nor reachable: one line now,
    instead of transformers' retries (`interventions.hub`)."""
    name = getattr(getattr(spec, "model", None), "name", None)
    if name is None and isinstance(spec, (EvaluateConfig, GenerateConfig)):
        meta = export_meta(spec.intervention if isinstance(spec, EvaluateConfig) else spec.generate) or {}
        name = (meta.get("model") or {}).get("name")
    if not isinstance(name, str) or is_native_model(name) or not is_hub_name(name):
        return
    problem = hub_problem(name)
    if problem is not None:
        raise ConfigError(f"model.name={name}: {problem}; {download_hint(name)}")


def check_outputs(argv: list[str], entry: str, overwrite: bool) -> Preflight:
    """The folders a run or sweep will write: each must be writable (one line, not Hydra's
    traceback from its log file handler), and a single run's explicit folder must not hold
    a finished run unless `overwrite` (then it is moved aside before Hydra writes into it)."""
    multirun = "-m" in argv or "--multirun" in argv
    plan = Preflight()
    hydra_key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    default_root = "multirun" if multirun else ("outputs/eval" if entry == "evaluate" else "outputs")
    targets = [(hydra_key, argv_value(argv, hydra_key)), ("run_dir", argv_value(argv, "run_dir"))]
    explicit = [(key, Path(value)) for key, value in targets if value and "${" not in value]
    for key, path in explicit or [(hydra_key, Path(default_root))]:
        check_writable(path, key)
    if multirun:
        return plan  # jobs skip or move aside their own finished runs (interventions.sweeps.jobs)
    for key, path in explicit:
        if is_finished(path) and not overwrite:
            raise ConfigError(
                f"{key}={path} holds a finished run ({METRICS_FILE}); choose another folder, or add overwrite=true "
                f"to move its files into {path / 'superseded'}/<time>/ and run again"
            )
        if is_finished(path) and path not in plan.supersede:
            plan.supersede.append(path)
    return plan


def check_logger_mode(argv: list[str]) -> list[str]:
    """A note when logger.mode on the command line overrides $WANDB_MODE (the config's
    default follows $WANDB_MODE, so without logger.mode there is no conflict)."""
    given, env = argv_value(argv, "logger.mode"), os.environ.get("WANDB_MODE")
    if given and env and given != env:
        return [f"note: logger.mode={given} overrides WANDB_MODE={env} from the environment"]
    return []


def _checked_spec(conf_dir: Path, name: str, overrides: list[str]):
    """The spec objects of one composition (ConfigError on any problem)."""
    try:
        cfg = compose_config(conf_dir, name, overrides)
    except HydraException as error:
        raise translate(error, conf_dir, name, overrides) from None
    schema = ENTRY_CONFIGS[name]
    unknown = [key for key in cfg if key not in schema.__dataclass_fields__]
    if unknown:  # Hydra lets `+key=value` add a key to a structured config
        raise ConfigError(f"unknown key {unknown[0]!r}; allowed top-level keys: {', '.join(schema.__dataclass_fields__)}")
    if name == "evaluate" and OmegaConf.is_missing(cfg, "intervention"):
        to_spec(OmegaConf.merge(cfg, {"intervention": "."}), run_dir=".")  # the other keys' values first
        raise ConfigError("which export? pass intervention=<run folder or its intervention.json> "
                          "(or sweep=<multirun folder>, or generalization=<runs>)")  # fmt: skip
    spec = to_spec(cfg, run_dir=".")
    # the intervention is checked by its method's class: this imports the method (and torch), after the cheap checks
    return configured(spec) if isinstance(spec, TrainConfig) else spec


ADAPTIVE_SWEEPER = "hydra_plugins.interventions_sweepers.AdaptiveSweeper"  # hydra/sweeper=pareto


def _sweeper_node(conf_dir: Path, name: str, argv: list[str], run: list[str]) -> dict | None:
    """The hydra.sweeper node a multirun of `argv` composes (None where Hydra's own config does
    not compose for another reason: Hydra reports that as before)."""
    hydra_args = [a for a in argv if not a.startswith("-") and "=" in a and a.lstrip("+~").startswith("hydra")
                  and not a.lstrip("+~").startswith("hydra.searchpath=")]  # fmt: skip
    try:
        return OmegaConf.to_container(compose_config(conf_dir, name, run + hydra_args, hydra=True).hydra.sweeper)
    except HydraException as error:
        key = getattr(error.__cause__, "full_key", None) or ""
        if key.count(".") >= 3 and key.startswith("hydra.sweeper."):  # a new key in one of its maps (space, ...)
            parent = key.rsplit(".", 1)[0]
            raise ConfigError(f"{key}: {parent} has no such key to replace; add one with a leading +, e.g. "
                              f"'+{key}=...'") from None  # fmt: skip
        if key.startswith("hydra.sweeper."):
            rest = [a for a in hydra_args if not key.startswith(a.lstrip("+~").split("=", 1)[0])]
            node = compose_config(conf_dir, name, run + rest, hydra=True).hydra.sweeper
            raise ConfigError(f"unknown key {key}; allowed keys of hydra.sweeper: {', '.join(node.keys())}") from None
        return None


def check_adaptive_sweep(conf_dir: Path, name: str, argv: list[str], run: list[str]) -> None:
    """hydra/sweeper=pareto (`sweeps.adaptive`): its options checked (`sweeps.space`), then a
    run at each end of each dimension of its space (and at each choice) composed and checked
    like any run, so that an unknown key or a value the config refuses is one line naming the
    dimension, before anything runs. `run`: the command line's first run (`expand_sweeps`)."""
    if name != "train" or not ("-m" in argv or "--multirun" in argv):
        return
    sweeper = _sweeper_node(conf_dir, name, argv, run)
    if sweeper is None or sweeper.get("_target_") != ADAPTIVE_SWEEPER:
        return
    options = sweeper_options(**{k: v for k, v in sweeper.items() if k not in ("_target_", "params")})
    fixed = {a.lstrip("+~").split("=", 1)[0] for a in run}  # the command line takes these out of the space
    for dimension in options.space:
        for value in dimension.corners() if dimension.key not in fixed else []:
            try:
                _checked_spec(conf_dir, name, [*run, f"{dimension.key}={format_value(value)}"])
            except ConfigError as error:
                raise ConfigError(f"hydra.sweeper.space.{dimension.key}={dimension.text()}: {error}") from None
    if options.fused:
        try:
            _checked_spec(conf_dir, name, [*run, "fused=[{}]"])
        except ConfigError as error:
            raise ConfigError(f"hydra.sweeper.fused=true: {error}") from None


def preflight(argv: list[str], entry: str) -> Preflight:
    """Compose and check the config entry point `entry` ("train" or "evaluate") will see;
    raise ConfigError, or return what to do before Hydra starts."""
    check_words(argv)
    conf_dir, name = entry_config(argv, entry)
    # hydra.* overrides configure Hydra, not the run; but hydra.searchpath adds config folders (a method's YAML)
    overrides = [a for a in argv if not a.startswith("-") and "=" in a
                 and (not a.lstrip("+~").startswith("hydra") or a.lstrip("+~").startswith("hydra.searchpath="))]  # fmt: skip
    remote = argv_value(argv, "hydra/launcher") in REMOTE_LAUNCHERS
    runs = expand_sweeps(overrides)
    specs = [_checked_spec(conf_dir, name, run) for run in runs]
    check_adaptive_sweep(conf_dir, name, argv, runs[0])
    read: dict = {}  # files and tokenizers, read once for all of a sweep's runs
    for spec in specs:
        if not remote:
            check_gpu_available(spec)
        if isinstance(spec, EvaluateConfig):
            check_export_path(spec.intervention)
            check_steering_task(spec)
        if isinstance(spec, GenerateConfig):
            check_export_path(spec.generate)
            check_hf_backend(spec)
        if isinstance(spec, SummarizeConfig):
            check_sweep_folder(Path(spec.sweep))
        check_hub_model(spec)
        check_inputs(spec, read)
    if remote:
        require_sbatch(argv_value(argv, "hydra/launcher"))
        nodes = cluster_nodes()
        if nodes:  # sinfo answered: a request no node can satisfy would pend forever
            check_request(slurm_request(argv_value(argv, "hydra/launcher"), hydra_overrides(argv)), nodes)
    overwrite = any(getattr(spec, "overwrite", False) for spec in specs)
    plan = check_outputs(argv, entry, overwrite)
    plan.notes += check_logger_mode(argv)
    return plan
