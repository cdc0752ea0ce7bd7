"""Multi-node training on SLURM through Lightning's own machinery.

``python -m lightning_tts slurm --nodes 2 --gpus-per-node 4 [--out DIR] [--config ...] [overrides]``
prints an sbatch script whose ``srun`` line repeats the config files and overrides (plus the
``trainer.*`` settings below), or with ``--out`` writes ``DIR/config.yaml`` (the resolved run configuration with ``trainer.num_nodes``,
``trainer.devices`` and ``trainer.strategy=ddp`` set) and ``DIR/<job-name>.sbatch``, which runs one
``srun`` task per device. Lightning's ``SLURMEnvironment`` reads the ranks from SLURM's variables;
no launcher of ours is involved.

Requeue: the script asks SLURM for ``SIGUSR1`` ``--grace`` seconds before the time limit. At the end
of the step in progress every rank saves its part of ``hpc_ckpt_<N>.ckpt`` in the run directory, rank 0
calls ``scontrol requeue $SLURM_JOB_ID`` and the tasks stop (``callbacks.signals.SignalCheckpoint``). A
requeued job keeps its job id, so ``fit`` picks the same run directory (``slurm_<job id>``) and
Lightning resumes from the newest ``hpc_ckpt``.
"""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from omegaconf import DictConfig, OmegaConf

from lightning_tts.atomic import require_parent, write_text
from lightning_tts.errors import ConfigError
from lightning_tts.schema import save_config


@dataclass
class SlurmJob:
    """Resources of one job.

    Attributes:
        nodes: nodes.
        gpus_per_node: GPUs per node (0: CPU processes).
        tasks_per_node: processes per node (default: one per GPU, or 1 on CPU).
        cpus_per_task: CPU cores per process (data workers + the process itself).
        time: wall-clock limit, SLURM syntax (``1-00:00:00``, ``24:00:00``).
        job_name: job name (also the script's file name).
        partition: partition, if the cluster needs one.
        account: account, if the cluster needs one.
        grace: seconds before the limit at which SIGUSR1 arrives (checkpoint + requeue).
    """

    nodes: int = 1
    gpus_per_node: int = 1
    tasks_per_node: Optional[int] = None
    cpus_per_task: int = 8
    time: str = "24:00:00"
    job_name: str = "lightning_tts"
    partition: Optional[str] = None
    account: Optional[str] = None
    grace: int = 90

    def validate(self) -> None:
        """Raises ConfigError naming the first bad value."""
        for name in ("nodes", "cpus_per_task", "grace"):
            if getattr(self, name) < 1:
                raise ConfigError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.gpus_per_node < 0:
            raise ConfigError(f"--gpus-per-node must be >= 0, got {self.gpus_per_node}")
        if self.tasks_per_node is not None and self.tasks_per_node < 1:
            raise ConfigError(f"--tasks-per-node must be >= 1, got {self.tasks_per_node}")
        if self.gpus_per_node and self.tasks_per_node not in (None, self.gpus_per_node):
            raise ConfigError(f"--tasks-per-node ({self.tasks_per_node}) must equal --gpus-per-node "
                              f"({self.gpus_per_node}): Lightning runs one process per GPU")
        if not re.fullmatch(r"(\d+-)?\d{1,2}(:\d{2}){0,2}", self.time):
            raise ConfigError(f"--time must be SLURM time (e.g. 24:00:00 or 1-12:00:00), got {self.time!r}")
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", self.job_name):
            raise ConfigError(f"--job-name may hold letters, digits and _.- only, got {self.job_name!r}")

    @property
    def processes_per_node(self) -> int:
        return self.gpus_per_node or self.tasks_per_node or 1


def cluster_config(cfg: DictConfig, job: SlurmJob) -> DictConfig:
    """``cfg`` with the trainer set for ``job``: DDP over nodes x processes, GPUs or CPUs."""
    out = OmegaConf.merge(cfg, {"trainer": {"num_nodes": job.nodes, "devices": job.processes_per_node,
                                            "accelerator": "gpu" if job.gpus_per_node else "cpu", "strategy": "ddp"}})
    assert isinstance(out, DictConfig)
    return out


def sbatch_script(job: SlurmJob, fit_args: list[str], workdir: Path, log_dir: Path) -> str:
    """The sbatch script of ``job`` running ``fit`` with ``fit_args`` (config files, overrides) from ``workdir``."""
    lines = ["#!/bin/bash", f"#SBATCH --job-name={job.job_name}", f"#SBATCH --nodes={job.nodes}",
             f"#SBATCH --ntasks-per-node={job.processes_per_node}", f"#SBATCH --cpus-per-task={job.cpus_per_task}"]
    if job.gpus_per_node:
        lines.append(f"#SBATCH --gres=gpu:{job.gpus_per_node}")
    lines += [f"#SBATCH --time={job.time}", f"#SBATCH --signal=SIGUSR1@{job.grace}", "#SBATCH --requeue",
              "#SBATCH --open-mode=append", f"#SBATCH --output={log_dir}/%x-%j.out"]
    lines += [f"#SBATCH --partition={job.partition}"] if job.partition else []
    lines += [f"#SBATCH --account={job.account}"] if job.account else []
    lines += [
        "",
        "# Written by `python -m lightning_tts slurm`. One srun task per device; Lightning's SLURMEnvironment",
        "# reads the ranks. On SIGUSR1 (the --signal above) the tasks save hpc_ckpt_<N>.ckpt in the run",
        "# directory and requeues this job; the requeued job (same SLURM_JOB_ID, same run directory) resumes.",
        "set -euo pipefail",
        f"cd {shlex.quote(str(workdir))}",
        "srun python -m lightning_tts fit " + " ".join(shlex.quote(a) for a in fit_args) + " --no-progress",
        "",
    ]
    return "\n".join(lines)


def trainer_overrides(job: SlurmJob) -> list[str]:
    """The ``trainer.*`` overrides that make Lightning's world match the sbatch resources."""
    return [f"trainer.{k}={v}" for k, v in OmegaConf.to_container(cluster_config(OmegaConf.create({}), job))["trainer"].items()]


def write_job(cfg: DictConfig, job: SlurmJob, out: str | Path, workdir: Path) -> tuple[Path, Path]:
    """Write ``out/config.yaml`` (resolved, trainer set for ``job``) and ``out/<job_name>.sbatch``
    (``out`` is created; its parent must exist)."""
    out = require_parent(out, "create")
    job.validate()
    out.mkdir(exist_ok=True)
    config = out / "config.yaml"
    save_config(cluster_config(cfg, job), config)
    script = out / f"{job.job_name}.sbatch"
    write_text(script, sbatch_script(job, ["--config", str(config.resolve())], workdir.resolve(), out.resolve()))
    script.chmod(0o755)
    return config, script
