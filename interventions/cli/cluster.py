"""A SLURM request checked against the cluster before a sweep submits anything.

A job asking for more than any node has stays pending forever (`PartitionConfig`), while the
driver prints nothing but submitit's polling. Where `sinfo` answers, a request no node can
satisfy is refused in one line, naming the request and the largest node.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from omegaconf import OmegaConf

from interventions.errors import ConfigError

LAUNCHER_DIR = Path(__file__).resolve().parents[2] / "conf" / "hydra" / "launcher"
REQUEST_KEYS = ("nodes", "cpus_per_task", "tasks_per_node", "mem_gb", "gpus_per_node", "partition")


def slurm_request(launcher: str, overrides: dict[str, str]) -> dict:
    """The resources each job asks for: the preset's values (conf/hydra/launcher/<name>.yaml;
    hydra-submitit's defaults for its own submitit_slurm), then hydra.launcher.* overrides."""
    preset = LAUNCHER_DIR / f"{launcher}.yaml"
    values = OmegaConf.to_container(OmegaConf.load(preset)) if preset.is_file() else {}
    request = {key: values.get(key) for key in REQUEST_KEYS}
    for key in REQUEST_KEYS:
        if f"hydra.launcher.{key}" in overrides:
            value = overrides[f"hydra.launcher.{key}"]
            request[key] = None if value in ("null", "None") else (value if key == "partition" else int(value))
    return request


ELSEWHERE = "run the sweep on a machine of a running SLURM cluster, or use hydra/launcher=parallel on this one"


def require_sbatch(launcher: str) -> None:
    """A SLURM launcher submits with `sbatch`: without it, submitit's traceback would come
    after Hydra has started the sweep."""
    if shutil.which("sbatch") is None:
        raise ConfigError(f"hydra/launcher={launcher} submits jobs with SLURM's sbatch, which is not on PATH here; {ELSEWHERE}")


def cluster_nodes(run=subprocess.run) -> list[dict] | None:
    """Each node of the cluster as {cpus, mem_mb, gpus, partitions}, from `sinfo`; None when
    sinfo is not installed or does not answer within 10 s. A sinfo that answers with an error
    (no controller, no configuration) is a ConfigError: sbatch would fail the same way."""
    if shutil.which("sinfo") is None:
        return None
    try:
        out = run(["sinfo", "-h", "-N", "-o", "%N|%c|%m|%G|%P"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        said = next((line.strip() for line in reversed(out.stderr.splitlines()) if line.strip()), f"exit {out.returncode}")
        raise ConfigError(f"SLURM does not answer here (sinfo: {said}); {ELSEWHERE}")
    nodes: dict[str, dict] = {}
    for line in out.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) != 5 or not parts[1].isdigit():
            continue
        name, cpus, mem, gres, partition = parts
        gpus = sum(int(g.split(":")[-1].split("(")[0]) for g in gres.split(",") if g.startswith("gpu") and
                   g.split(":")[-1].split("(")[0].isdigit())  # fmt: skip
        node = nodes.setdefault(name, {"cpus": int(cpus), "mem_mb": int(mem) if mem.isdigit() else 0, "gpus": gpus,
                                       "partitions": set()})  # fmt: skip
        node["partitions"].add(partition.rstrip("*"))
    return list(nodes.values())


def check_request(request: dict, nodes: list[dict]) -> None:
    """ConfigError (one line) when no node can give one job what it asks for."""
    cpus = (request.get("cpus_per_task") or 1) * (request.get("tasks_per_node") or 1)
    mem_mb = (request.get("mem_gb") or 0) * 1024
    gpus = request.get("gpus_per_node") or 0
    partition = request.get("partition")
    candidates = [n for n in nodes if partition is None or partition in n["partitions"]]
    if not candidates:
        known = sorted({p for n in nodes for p in n["partitions"]})
        raise ConfigError(f"hydra.launcher.partition={partition!r}: sinfo lists no such partition; "
                          f"it has {', '.join(known) or 'none'}")  # fmt: skip
    fitting = [n for n in candidates if n["cpus"] >= cpus and n["mem_mb"] >= mem_mb and n["gpus"] >= gpus]
    nodes = request.get("nodes") or 1
    where = f" of partition {partition}" if partition else ""
    if fitting and len(fitting) >= nodes:
        return
    if fitting:
        raise ConfigError(f"each job asks for {nodes} nodes, but sinfo lists {len(fitting)} node"
                          f"{'s' if len(fitting) != 1 else ''}{where} that can hold one job's tasks, so the jobs would wait "
                          "forever; lower hydra.launcher.nodes")  # fmt: skip
    big = max(candidates, key=lambda n: (n["cpus"], n["mem_mb"], n["gpus"]))
    asked = f"{cpus} CPUs" + (f", {request['mem_gb']} GB" if mem_mb else "") + (f", {gpus} GPUs" if gpus else "")
    raise ConfigError(
        f"each job asks for {asked}, which no node{where} has (the "
        f"largest: {big['cpus']} CPUs, {big['mem_mb']} MB, {big['gpus']} GPUs), so the jobs would wait forever; "
        "lower hydra.launcher.cpus_per_task / mem_gb / gpus_per_node"
    )
