"""Sweeps on clusters (issue 23): the SLURM preset's request checked against sinfo before
anything is submitted, the sweep summary's names, the W&B group."""

from __future__ import annotations

import pytest

from interventions.cli.cluster import check_request, cluster_nodes, slurm_request
from interventions.cli.preflight import preflight
from interventions.errors import ConfigError
from interventions.sweeps.jobs import sweep_group
from interventions.sweeps.summary import summary_counts


def test_sinfo_is_read_into_nodes(fake_sinfo):
    nodes = cluster_nodes()
    assert nodes == [{"cpus": 2, "mem_mb": 1000, "gpus": 0, "partitions": {"debug"}},
                     {"cpus": 8, "mem_mb": 64000, "gpus": 2, "partitions": {"gpu"}}]  # fmt: skip


def test_a_request_no_node_can_satisfy_is_one_line():
    nodes = [{"cpus": 2, "mem_mb": 1000, "gpus": 0, "partitions": {"debug"}}]
    check_request({"cpus_per_task": 2, "tasks_per_node": 1, "mem_gb": None, "gpus_per_node": 0}, nodes)
    for request, words in (({"cpus_per_task": 4}, "4 CPUs"), ({"cpus_per_task": 1, "mem_gb": 16}, "16 GB"),
                           ({"gpus_per_node": 1}, "1 GPUs"), ({"partition": "big"}, "no such partition")):  # fmt: skip
        with pytest.raises(ConfigError, match=words) as error:
            check_request(request, nodes)
        assert "\n" not in str(error.value)


def test_more_nodes_than_the_partition_has_is_one_line(fake_sinfo, tmp_path):
    """Issue 28: hydra.launcher.nodes=2 on a one-node partition pended forever (PartitionNodeLimit)."""
    nodes = [{"cpus": 2, "mem_mb": 1000, "gpus": 0, "partitions": {"debug"}}]
    check_request({"nodes": 1, "cpus_per_task": 1}, nodes)
    with pytest.raises(ConfigError, match="asks for 2 nodes, but sinfo lists 1 node that can hold") as error:
        check_request({"nodes": 2, "cpus_per_task": 1}, nodes)
    assert "\n" not in str(error.value)
    argv = ["-m", "hydra/launcher=slurm", "objective.lambda_f=0,1", f"hydra.sweep.dir={tmp_path / 'sweep'}",
            "hydra.launcher.partition=debug"]  # fmt: skip
    with pytest.raises(ConfigError, match="2 nodes, but sinfo lists 1 node of partition debug"):
        preflight([*argv, "hydra.launcher.nodes=2"], "train")
    assert not (tmp_path / "sweep").exists()


def test_the_slurm_preset_fits_a_small_node_and_overrides_apply():
    assert slurm_request("slurm", {}) == {"nodes": 1, "cpus_per_task": 1, "tasks_per_node": 1, "mem_gb": None,
                                          "gpus_per_node": 0, "partition": None}  # fmt: skip
    request = slurm_request("slurm", {"hydra.launcher.cpus_per_task": "4", "hydra.launcher.partition": "gpu"})
    assert request["cpus_per_task"] == 4 and request["partition"] == "gpu"


def test_preflight_refuses_before_submitting(fake_sinfo, tmp_path):
    argv = ["-m", "hydra/launcher=slurm", "objective.lambda_f=0,1", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    preflight(argv, "train")  # the preset's one CPU fits
    with pytest.raises(ConfigError, match="4 CPUs, which no node of partition debug has"):
        preflight([*argv, "hydra.launcher.cpus_per_task=4", "hydra.launcher.partition=debug"], "train")
    preflight([*argv, "hydra.launcher.cpus_per_task=4", "hydra.launcher.gpus_per_node=2",
               "hydra.launcher.partition=gpu"], "train")  # fmt: skip


def test_summary_counts_are_named_plainly_and_the_group_is_stable():
    counts = {"finished": 2, "failed": 1, "interrupted": 0, "incomplete": 0, "runs": 3}
    assert summary_counts(counts) == {"runs_finished": 2, "runs_failed": 1, "runs_interrupted": 0,
                                      "runs_incomplete": 0, "runs_total": 3}  # fmt: skip
    assert sweep_group("/scratch/me/multirun/2026-12-05/10-00-00") == "2026-12-05/10-00-00"
    assert sweep_group("multirun/2026-12-05/10-00-00") == sweep_group("/home/other/multirun/2026-12-05/10-00-00")


def test_a_slurm_sweep_where_slurm_cannot_run_is_one_line(tmp_path, monkeypatch):
    """Without sbatch, or with a sinfo that answers with an error, submitit's traceback came
    after the sweep had started; now one line before it (docs/clusters.md runs the command)."""
    argv = ["-m", "hydra/launcher=slurm", "objective.lambda_f=0,1", f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))  # nothing of SLURM's
    with pytest.raises(ConfigError, match="submits jobs with SLURM's sbatch, which is not on PATH") as error:
        preflight(argv, "train")
    assert "\n" not in str(error.value)
    for name, body in (("sbatch", "exit 1"), ("sinfo", "echo 'sinfo: error: fetch_config: DNS SRV lookup failed' >&2; exit 1")):
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    with pytest.raises(ConfigError, match="SLURM does not answer here .sinfo: sinfo: error: fetch_config"):
        preflight(argv, "train")
    assert not (tmp_path / "sweep").exists()
