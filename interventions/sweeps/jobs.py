"""The jobs of a sweep: skip a finished run, move a changed one aside, record a failure.

    python train.py -m experiment=paper_grid_small hydra.sweep.dir=multirun/pgs   # relaunch: same dir

Every job of a multirun goes through `run_job` (via `interventions.cli.entry.report_errors`):

- Its W&B group is set to the sweep (`sweep_group`) unless `logger.group` is given, so every
  run of a sweep, and its summary run, share one group.
- It writes `sweep_job.json` (its overrides and resolved config) before it starts, and its
  status (finished, failed, interrupted) when it ends.
- A run whose folder already holds a finished `metrics.json` written with the same model,
  task, intervention, objective, trainer settings (but the progress bar) and seed is skipped
  with one printed line. A finished run with a different one is moved to
  `<run>/superseded/<time>/` and the job runs again.
- Any exception is caught: the full traceback goes to `<run>/error.txt`, one line to
  stderr, and the sweep continues (Hydra's basic launcher would otherwise stop). SIGINT or
  SIGTERM (RunInterrupted) marks the job interrupted and stops the sweep.
"""

from __future__ import annotations

import atexit
import logging
import os
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import OmegaConf

from interventions.errors import ConfigError
from interventions.interrupts import interruption, raise_if_signalled
from interventions.io import read_json, write_json
from interventions.rundir import ERROR_FILE, METRICS_FILE, SUPERSEDED, export_problem, record_error, supersede, timestamp

log = logging.getLogger(__name__)
JOB_FILE = "sweep_job.json"


# Hydra writes these into a job's folder before the job starts: they belong to the new run.
HYDRA_JOB_FILES = (".hydra", "train.log", "evaluate.log")


# Config keys that do not change a run's results (not recorded in the job's identity);
# model.fused_gelu changes only float rounding, and runs finished before it existed lack it.
IGNORED_KEYS = ("run_dir", "logger", "trainer.enable_progress_bar", "model.fused_gelu")


# What decides a training run's results: a finished run is skipped when these are unchanged
# (other keys, e.g. diagnostics added later, do not make finished runs stale; nor does
# skip_unread, which like the thread count changes only float rounding).
RESULT_KEYS = ("model", "task", "intervention", "objective", "trainer", "seed", "generation_eval")
# Keys the config gained after runs were written, with the values that reproduce what those
# runs did: a finished run recorded without them is still the run asked for.
ADDED_DEFAULTS = {"task": {"multi_token": False}, "generation_eval": False}


def with_added_defaults(config: dict) -> dict:
    """`config` (an identity) with ADDED_DEFAULTS filled in where it lacks them."""
    out = dict(config)
    for key, default in ADDED_DEFAULTS.items():
        if isinstance(default, dict):
            if isinstance(out.get(key), dict):
                out[key] = {**default, **out[key]}
        else:
            out.setdefault(key, default)
    return out


def _num_key(path: Path):
    return (0, int(path.name), "") if path.name.isdigit() else (1, 0, path.name)


def _is_run_dir(path: Path) -> bool:
    return path.is_dir() and path.name not in (SUPERSEDED, "wandb", "csv") and any(
        (path / name).exists() for name in (".hydra", JOB_FILE, METRICS_FILE, ERROR_FILE)
    )


def _fused_settings_dirs(run_dir: Path) -> list[Path]:
    """The per-setting run folders of a fused job (`<job>/<k>/`), in order; [] for others."""
    if (run_dir / METRICS_FILE).exists():
        return []
    return sorted((p for p in run_dir.iterdir() if p.name.isdigit() and _is_run_dir(p)), key=_num_key)


def run_dirs(sweep_dir: Path) -> list[tuple[str, Path]]:
    """(name, folder) of every run of a sweep; a multirun job that fused several objective
    settings (`fused=...`) contributes one run per setting, named "<job>/<k>"."""
    out = []
    for run_dir in sorted((p for p in sweep_dir.iterdir() if _is_run_dir(p)), key=_num_key):
        settings = _fused_settings_dirs(run_dir)
        out += [(f"{run_dir.name}/{p.name}", p) for p in settings] if settings else [(run_dir.name, run_dir)]
    return out


def check_sweep_folder(sweep_dir: Path) -> None:
    """ConfigError (one line) unless `sweep_dir` is the folder of a sweep: a folder holding run
    folders, not itself one run (an export: evaluate it with intervention=)."""
    if not sweep_dir.is_dir():
        raise ConfigError(f"sweep={str(sweep_dir)!r} is not a directory; pass a multirun folder (hydra.sweep.dir)")
    own = [name for name in (METRICS_FILE, "intervention.json") if (sweep_dir / name).exists()]
    if own:
        raise ConfigError(f"sweep={sweep_dir} is one run (it holds {own[0]}), not a sweep; evaluate it with "
                          f"python evaluate.py intervention={sweep_dir}")  # fmt: skip
    if not run_dirs(sweep_dir):
        raise ConfigError(f"sweep={sweep_dir} holds no runs of a sweep (numbered folders with .hydra/, {JOB_FILE} or "
                          f"{METRICS_FILE}); pass the folder a multirun wrote (its hydra.sweep.dir)")  # fmt: skip


def is_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def sweep_group(sweep_dir: str | Path) -> str:
    """The W&B group of a sweep: the last two parts of its folder (multirun/<date>/<time> ->
    "<date>/<time>", /scratch/me/sweeps/paper-grid -> "sweeps/paper-grid"), the same on every
    machine and whichever folder the command ran from."""
    text = "/".join(Path(sweep_dir).parts[-2:])
    return text if len(text) <= 128 else text[-128:]  # W&B's limit on group names


def job_identity(cfg) -> dict:
    """The resolved config that decides a run's results (without run_dir and logger)."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    for key in IGNORED_KEYS:
        *parents, leaf = key.split(".")
        node = resolved
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return resolved


def same_results(old: dict | None, new: dict) -> bool:
    """Whether a finished run with config `old` is the run `new` asks for.

    Training configs (with intervention and objective) compare RESULT_KEYS only; any other
    config compares in full (without IGNORED_KEYS).
    """
    if not isinstance(old, dict):
        return False
    if all(k in new for k in ("intervention", "objective")):
        old, new = with_added_defaults(old), with_added_defaults(new)
        return all(old.get(k) == new.get(k) for k in RESULT_KEYS)
    return old == new


def finished_as(run_dir: Path, identity: dict | None) -> bool:
    """Whether `run_dir` holds a finished run of config `identity` whose export reads back
    (reads only)."""
    if identity is None or not (run_dir / METRICS_FILE).exists():
        return False
    previous = read_json(run_dir / JOB_FILE)
    return previous is not None and same_results(previous.get("config"), identity) and export_problem(run_dir) is None


def already_finished(run_dir: Path, identity: dict | None, label: str) -> bool:
    """True if `run_dir` holds a finished run of config `identity` (print that it is skipped);
    a finished run of another config, or one whose export is damaged, is moved aside
    (`supersede`) and False returned."""
    if not (run_dir / METRICS_FILE).exists():
        return False
    if finished_as(run_dir, identity):
        log.info(f"skipping {label}: already finished in {run_dir}")
        return True
    damaged = export_problem(run_dir)
    dest = supersede(run_dir, keep=HYDRA_JOB_FILES)
    why = f"a finished run whose export is damaged ({damaged})" if damaged else "a finished run with another config"
    log.info(f"{label}: {run_dir} held {why}; moved it to {dest}")
    return False


def _identity_or_none(cfg) -> dict | None:
    try:
        return job_identity(cfg)
    except Exception:  # an interpolation that does not resolve: rank 0 records the failure
        return None


def job_context() -> dict:
    """The current Hydra job: its sweep dir, number, overrides and output dir. The number is
    its folder's where that is a number: a relaunch launches only the unfinished runs, each in
    its own numbered folder, whatever its place in the launched batch (`sweeps.grid`)."""
    hc = HydraConfig.get()
    folder = Path(str(hc.runtime.output_dir)).name
    return {"sweep_dir": hc.sweep.dir, "num": int(folder) if folder.isdigit() else hc.job.num,
            "overrides": list(hc.overrides.task), "output_dir": hc.runtime.output_dir}  # fmt: skip


def run_job(fn, cfg, context: dict | None = None):
    """Run one job of a multirun: skip it if finished, record it if it fails (see module doc).

    `context` (tests): {"sweep_dir", "num", "overrides", "output_dir"}; default: Hydra's.
    """
    ctx = context or job_context()
    sweep_dir = Path(ctx["sweep_dir"])
    overrides = list(ctx["overrides"])
    label = f"run {ctx['num']} ({' '.join(overrides) or 'defaults'})"
    run_dir = Path(cfg.run_dir) if "run_dir" in cfg else Path(ctx["output_dir"])
    if process_rank() > 0:  # DDP under SLURM: every task runs the job; rank 0 alone keeps its books
        _check_ddp(cfg)
        if finished_as(run_dir, _identity_or_none(cfg)):  # rank 0 skips it too: training alone would wait on it forever
            log.info(f"skipping {label} on rank {process_rank()}: already finished in {run_dir}")
            return None
        return fn(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    if "logger" in cfg and cfg.logger.get("group") is None:
        OmegaConf.update(cfg, "logger.group", sweep_group(sweep_dir))
    try:
        identity = job_identity(cfg)
    except Exception as error:  # an interpolation that does not resolve: a failing run
        identity = None
        unresolved = error
    else:
        unresolved = None

    if already_finished(run_dir, identity, label):
        metrics = read_json(run_dir / METRICS_FILE) or {}
        return (metrics.get("test") or {}).get("effectiveness")
    (run_dir / ERROR_FILE).unlink(missing_ok=True)
    job = {
        "job_num": ctx["num"], "overrides": overrides, "sweep_dir": str(sweep_dir),
        "group": cfg.logger.group if "logger" in cfg else None, "started": timestamp(),
        "status": "running", "config": identity,
    }  # fmt: skip
    write_json(run_dir / JOB_FILE, job)
    try:
        raise_if_signalled()  # a signal lost in an earlier job (interrupts' docstring): this one does not start
        if unresolved is not None:
            raise unresolved
        _check_ddp(cfg)
        result = fn(cfg)
    except BaseException as error:
        interrupted = interruption(error)  # also a signal whose exception another replaced
        if interrupted is not None:  # the sweep stops; a relaunch runs this job again
            write_json(run_dir / JOB_FILE, {**job, "status": "interrupted", "error": f"interrupted by {interrupted}",
                                            "ended": timestamp()})  # fmt: skip
            interrupted.sweep_dir = sweep_dir
            raise interrupted
        if not isinstance(error, Exception):
            raise
        # one failing run must not stop the sweep
        line = record_error(run_dir, label, error)
        write_json(run_dir / JOB_FILE, {**job, "status": "failed", "error": line, "ended": timestamp()})
        log.error(f"error: {label} failed: {line} (traceback in {run_dir / ERROR_FILE}); the sweep goes on")
        exit_failed_at_end()
        return None
    write_json(run_dir / JOB_FILE, {**job, "status": "finished", "ended": timestamp()})
    return result


def exit_failed_at_end() -> None:
    """In a submitit job (its own process, one SLURM job per run): end the process with
    status 1 once submitit has written the job's result, so that the scheduler (sacct, a
    dependent job) sees the failed run as failed, while the driver still reads the result
    and writes the sweep's summary. Elsewhere (the runs of a local sweep share the driver's
    process) nothing: the driver's summary sets the exit status."""
    if os.environ.get("SUBMITIT_EXECUTOR") not in ("slurm", "local"):
        return

    def leave() -> None:
        logging.shutdown()
        os._exit(1)

    atexit.register(leave)


def process_rank() -> int:
    """This process's global rank in a distributed job (0 outside one): torchrun's RANK, or
    SLURM's task index when SLURM started the tasks."""
    for name in ("RANK", "SLURM_PROCID"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def _check_ddp(cfg) -> None:
    """Lightning's DDP starts its processes by re-running the command line: in a local
    multirun each of them would run the whole sweep again. Under SLURM (submitit) or
    torchrun the processes already exist and DDP is fine."""
    strategy = str((cfg.get("trainer") or {}).get("strategy", ""))
    relaunches = strategy == "ddp" or strategy.startswith("ddp_find_unused")
    # A submitit SLURM job (SLURM started its tasks) or torchrun; not merely "inside an
    # allocation" (SLURM_JOB_ID is set in salloc too, where DDP would re-run the whole sweep).
    launched = os.environ.get("SUBMITIT_EXECUTOR") == "slurm" or "TORCHELASTIC_RUN_ID" in os.environ
    if relaunches and not launched:
        raise ConfigError(
            f"trainer.strategy={strategy} cannot run inside a local multirun (DDP re-runs the command "
            "for each process); sweep with hydra/launcher=slurm (one SLURM task per GPU), or use "
            "trainer=gpu for the sweep and trainer=ddp for single runs"
        )
