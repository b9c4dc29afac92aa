"""Count the CT projector's work in one solve: single-angle projections (forward passes) and
back-projections (backward passes), for the same config run.py builds.

    python experiments/oder/count_projections.py solver=oder task=ct data=gray_val data.size=128 ...

Any run.py override is accepted. The counts are per image batch (one call of the solver on the first
`batch_size` images), split into the one-off setup (FBP start, power iteration for the step size;
measured as a 1-iteration solve minus one iteration: 2·count(1) − count(2)) and the iterations. `full ops` divides by n_angles: one full
application of A (or Aᵀ) = n_angles single-angle passes.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from invlab.ops.radon import Radon
from invlab.utils.config import build

CONF = Path(__file__).resolve().parents[2] / "conf"


class Counter:
    """Wraps Radon._project: adds the angles of every forward pass, and of its backward pass when the
    projection is differentiated (a back-projection: the adjoint and every gradient are vjps)."""

    def __init__(self):
        self.forward = self.backward = 0
        self.original = Radon._project

    def __enter__(self):
        counter = self

        def project(op, x, subset=None):
            out = counter.original(op, x, subset)
            counter.forward += out.shape[2]
            if out.requires_grad:
                out.register_hook(lambda g: counter._back(out.shape[2]))
            return out

        Radon._project = project
        return self

    def _back(self, n: int) -> None:
        self.backward += n

    def __exit__(self, *exc):
        Radon._project = self.original


def solve_counts(cfg, iters: int | None) -> tuple[int, int, int]:
    torch.manual_seed(0)
    data = build(cfg.data)
    task, prior = build(cfg.task), build(cfg.prior)
    solver = build(cfg.solver) if iters is None else build(cfg.solver, iters=iters)
    x = torch.stack([data[i]["x"] for i in range(min(int(cfg.batch_size), len(data)))])
    A, y = task.measure(x, list(range(x.shape[0])), seed=int(cfg.seed))
    gen = torch.Generator().manual_seed(int(cfg.seed) * 1_000_003)
    with Counter() as c:
        solver(y, A, prior, generator=gen)
    return c.forward, c.backward, A.angles.shape[1]


def main(overrides: list[str]) -> None:
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    f_all, b_all, n = solve_counts(cfg, None)
    # The setup alone: a solve with 1 iteration minus one iteration's work (solvers refuse iters=0; every
    # iteration projects the same number of angles, full or minibatch).
    (f1, b1, _), (f2, b2, _) = solve_counts(cfg, 1), solve_counts(cfg, 2)
    f_setup, b_setup = 2 * f1 - f2, 2 * b1 - b2
    iters = int(cfg.solver.iters)
    f_it, b_it = f_all - f_setup, b_all - b_setup
    print(f"{' '.join(overrides)}")
    print(f"  setup: {f_setup} projections + {b_setup} back-projections "
          f"= {(f_setup + b_setup) / n:.1f} full ops")
    print(f"  {iters} iterations: {f_it} + {b_it} = {(f_it + b_it) / n:.1f} full ops, "
          f"{(f_it + b_it) / n / iters:.3f} per iteration")
    print(f"  total: {(f_all + b_all) / n:.1f} full ops")


if __name__ == "__main__":
    main(sys.argv[1:])
