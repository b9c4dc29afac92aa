"""`python run.py [overrides]`: one reconstruction experiment (data × task × prior × solver).

    python run.py solver=pnp_admm task=deblur data.limit=4
    python run.py -m solver=a,b task=c,d            # a sweep: one run dir per job
    python run.py trainer.accelerator=cpu trainer.devices=2 trainer.strategy=ddp   # shard over ranks
    python run.py run_dir=outputs/mine               # rerun into a dir: finished samples are skipped

User errors (invlab.errors.InvlabError, a missing checkpoint, a `???` value) print one sentence
(`error: ...`) and exit 1; the check that data, prior and operator fit runs on one sample before any
heavy import. In a sweep a failed job is recorded (`status.json`, `error.txt` in its run dir) and
the sweep goes on; the command exits 1 at the end when any job failed.
"""
from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig

from invlab.cli.jobs import finish, follow_run_dir, run_job

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")  # repo root = parent of invlab/
log = logging.getLogger("invlab")


def build_all(cfg: DictConfig):
    """dataset, task, prior, solver; a failure names the group it happened in."""
    from invlab.cli.errors import user_message
    from invlab.errors import ConfigError, InvlabError
    from invlab.utils.config import build

    built = {}
    for group in ("solver", "task", "prior", "data"):  # cheapest first: config mistakes fail fastest
        node = cfg.get(group)
        try:
            built[group] = None if node is None else build(node)
        except Exception as exc:
            msg = user_message(exc)
            if msg is None or isinstance(exc, InvlabError):
                raise
            raise ConfigError(f"could not build {group}={node.get('name', '?')}: {msg}") from exc
    return built["data"], built["task"], built["prior"], built["solver"]


def preflight(dataset, task, prior, solver, seed: int) -> None:
    """Check on one sample that data, prior and operator fit, before any heavy import or solve."""
    import torch

    from invlab.errors import ConfigError, ShapeError

    if len(dataset) == 0:
        raise ConfigError("the dataset is empty (check data.limit and the data path).")
    item = dataset[0]
    x = item["x"]
    if not isinstance(x, torch.Tensor) or x.dim() not in (2, 3, 4):  # (C, H, W) images, (C, L) spectra,
        raise ShapeError(f"the dataset must give (C, H, W) image, (C, L) spectrum or (C, T, H, W) clip "  # clips
                         f"tensors but gave {getattr(x, 'shape', type(x))}.")
    xb = x[None]
    if prior is not None and hasattr(solver, "check_prior"):  # a solver whose prior sees something else (APnP: Dx)
        solver.check_prior(prior, xb)
    elif prior is not None and hasattr(prior, "check_input"):
        prior.check_input(xb)
    if prior is not None:  # the image size and value range it was trained for (priors/fit.py)
        from invlab.priors.fit import check_image_fit

        check_image_fit(prior, xb)
    A, _ = task.measure(xb, [int(item["index"])], seed=seed)
    for need in getattr(solver, "needs", ()):
        if need == "adjoint" and not getattr(A, "is_linear", True):
            raise ConfigError(f"solver {getattr(solver, 'name', type(solver).__name__)} needs a linear "
                              f"operator, but task {getattr(task, 'name', '?')} is nonlinear.")


def check_settings(cfg: DictConfig) -> None:
    """The run's own integer settings are whole numbers in range (else int('abc') deep inside a run)."""
    from invlab.utils.config import whole_number

    whole_number(cfg.get("seed", 0), "seed", minimum=0)
    whole_number(cfg.get("batch_size", 1), "batch_size", minimum=1)
    whole_number(cfg.get("grid_max", 8), "grid_max", minimum=0)


def experiment(cfg: DictConfig) -> dict | None:
    check_settings(cfg)
    dataset, task, prior, solver = build_all(cfg)
    preflight(dataset, task, prior, solver, int(cfg.get("seed", 0)))
    from invlab.engine.runner import fingerprint, reconstruct, trainer_kwargs  # lightning: in reconstruct
    from invlab.engine.store import SampleStore

    run_dir = Path(str(cfg.run_dir)).absolute()
    trainer_kwargs(cfg, run_dir)  # device / strategy mistakes fail here, before the heavy imports
    store = SampleStore(run_dir)
    store.check_fingerprint(fingerprint(cfg), write=False)  # a refused run dir is left untouched
    store.check_sources(getattr(dataset, "sources", None))
    store.check_writable()

    return reconstruct(cfg, dataset, task, prior, solver)


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def _hydra_entry(cfg: DictConfig):
    from invlab.cli.sweeps import searched

    return run_job(searched(experiment), cfg)  # the summary; with `objective=` (hparams_search) its mean


def main() -> None:
    from invlab.cli.choices import plus_experiment

    plus_experiment()  # +experiment=X is experiment=X (the defaults list has the slot already)
    follow_run_dir()  # run_dir=X: Hydra's .hydra/ and log go to X too
    _hydra_entry()
    finish()


if __name__ == "__main__":
    main()
