"""Hydra × Lightning `strategy=ddp`: make every rank work in the same run directory.

Lightning's `_SubprocessScriptLauncher` starts ranks 1..N-1 by re-running the script with the same
argv plus `hydra.run.dir=<HydraConfig.get().run.dir>` (see lightning/fabric/strategies/launchers/
subprocess_script.py, `_hydra_subprocess_cmd`). Two things go wrong with that as is:

- `run.dir` is an unresolved pattern (`...${now:%H-%M-%S}`) that a child started a second later may
  resolve to another directory: we pin it to this job's resolved output directory;
- in a multirun, argv holds `-m` and the whole sweep, so each child would run the sweep again: we
  replace argv by this job's own overrides (plus the Hydra overrides other than the mode, e.g. a
  search path), so the child runs exactly this job, in this job's directory;
- the launcher leaves env vars and an initialized process group in the launching process, which
  the next job of a sweep would mistake for its own: we remove them after the job.
"""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from typing import Iterator


def uses_script_relaunch(trainer) -> bool:
    """Whether `trainer.test` will start the other ranks by re-running this script."""
    launcher = getattr(trainer.strategy, "launcher", None)
    env = getattr(trainer.strategy, "cluster_environment", None)
    return (type(launcher).__name__ == "_SubprocessScriptLauncher" and env is not None
            and not env.creates_processes_externally)


# Set by the launcher in the launching process; left behind they make the next job of a sweep believe
# its ranks were started externally (LOCAL_RANK) and talk to the previous job's dead process group.
LAUNCHER_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


@contextmanager
def relaunch_context(trainer) -> Iterator[None]:
    """Pin Hydra's run dir (and, in a multirun, argv) while Lightning re-runs the script per rank;
    afterwards tear down what the launch left in this process, so a sweep's next job starts clean."""
    relaunch = uses_script_relaunch(trainer)
    check_shared_run_dir(trainer)
    if relaunch and os.environ.get("SUBMITIT_LOCAL_JOB_ID"):
        # submitit's process runs the pickled job, not run.py: Lightning would re-run submitit's own module
        from invlab.errors import ConfigError

        raise ConfigError("a job of hydra/launcher=local_jobs cannot start its own DDP ranks (trainer.devices > 1); "
                          "run a multi-device reconstruction with the basic launcher, or on SLURM with "
                          "hydra/launcher=slurm hydra.launcher.tasks_per_node=<trainer.devices>.")
    argv = list(sys.argv)
    env = {k: os.environ.get(k) for k in LAUNCHER_ENV}
    try:
        if relaunch:
            _pin_hydra_job()
        yield
    finally:
        sys.argv = argv
        if relaunch:
            import torch.distributed as dist

            if dist.is_available() and dist.is_initialized():
                dist.destroy_process_group()
            for k, v in env.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def check_shared_run_dir(trainer) -> None:
    """Ranks started by the cluster (srun, torchrun: one `python run.py` per process, on several nodes) each
    compose their own config; a run dir holding `${now:...}` would then name a different folder on each and
    the ranks would not see each other's samples. Such a run must name its run dir (`run_dir=`)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf

    env = getattr(trainer.strategy, "cluster_environment", None)
    if (env is None or not env.creates_processes_externally or trainer.world_size < 2
            or not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.RUN):
        return
    pattern = str(OmegaConf.to_container(HydraConfig.get().run, resolve=False).get("dir", ""))
    if "${now:" in pattern:
        from invlab.errors import ConfigError

        raise ConfigError(f"this run's {trainer.world_size} processes were started by the cluster and each would "
                          f"resolve the dated run dir {pattern} itself; pass the same run_dir=<shared folder> to "
                          f"every node.")


def _pin_hydra_job() -> None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import read_write

    if not HydraConfig.initialized():
        return
    hc = HydraConfig.get()
    with read_write(hc):
        hc.run.dir = hc.runtime.output_dir
    if hc.mode == RunMode.MULTIRUN:
        hydra_overrides = [o for o in hc.overrides.hydra if not o.startswith("hydra.mode=")]
        sys.argv = [sys.argv[0], *hydra_overrides, *hc.overrides.task]
