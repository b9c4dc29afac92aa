"""Unconditional samples of a diffusion prior as a PNG grid (and optionally a tensor).

    python scripts/sample.py prior=ddpm_mnist n=64                  # DDIM, 50 steps, seed 0
    python scripts/sample.py prior=ddpm_mnist sampler=ddpm seed=3   # DDPM ancestral over all T steps
    python scripts/sample.py prior=ddpm_mnist steps=20 skip=quad eta=0.5 out=/tmp/s.png
    python scripts/sample.py prior=msm_mnist sampler=msm eta=1.0 loops=3   # MSM's stochastic sampler

Arguments are Hydra overrides of conf/sample.yaml (any prior option and its keys, e.g.
prior.checkpoint=/path). User errors print one sentence and exit 1.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def sample(cfg) -> Path:
    import torch

    from invlab.errors import ConfigError
    from invlab.utils.config import build
    from invlab.utils.images import grid, save_png, to_uint8

    if cfg.sampler not in ("ddim", "ddpm", "msm"):
        raise ConfigError(f"sampler must be ddim, ddpm or msm, got {cfg.sampler!r}.")
    device = "cuda" if cfg.device == "auto" and torch.cuda.is_available() else \
        ("cpu" if cfg.device == "auto" else str(cfg.device))
    node = cfg.prior
    if "device" in node:
        node.device = device
    prior = build(node)
    if not hasattr(prior, "sample") or not hasattr(prior, "schedule"):
        raise ConfigError(f"prior={node.get('name')} is not a diffusion prior; choose one such as prior=ddpm_mnist.")
    prior.to(device)
    steps, eta = (prior.schedule.num_steps, 1.0) if cfg.sampler == "ddpm" else (int(cfg.steps), float(cfg.eta))
    gen = torch.Generator().manual_seed(int(cfg.seed))
    t0 = time.perf_counter()
    if cfg.sampler == "msm":  # MSM's stochastic sampler (invlab/solvers/msm.py): DDIM over averaged partial estimates
        from invlab.solvers.msm import msm_generate, msm_mask_law

        if not (prior.card or {}).get("msm"):
            raise ConfigError(f"sampler=msm needs an MSM-trained prior (card flag msm), e.g. prior=msm_mnist; "
                              f"{prior.describe()} was trained on full images.")
        blocks, drop = msm_mask_law(prior, None, None)
        shape = (int(cfg.n), prior.channels, *(prior.image_size or (28, 28)))
        ref = next(prior.net.parameters(), torch.empty(0))
        x = msm_generate(prior.eps, prior.schedule, shape, steps=steps, eta=eta, kind="ddim", loops=int(cfg.loops),
                         grid=blocks, drop_ratio=drop, skip=str(cfg.skip), generator=gen, device=ref.device)
    else:
        x = prior.sample(int(cfg.n), steps=steps, eta=eta, skip=str(cfg.skip), generator=gen)
    seconds = time.perf_counter() - t0
    out = Path(str(cfg.out)).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tiles, ncol = [to_uint8(img) for img in x.float().cpu()], int(cfg.ncol)
    save_png(grid([tiles[i:i + ncol] for i in range(0, len(tiles), ncol)], min_cell=56), out)
    if cfg.save_tensor:
        torch.save(x.float().cpu(), out.with_suffix(".pt"))
    print(f"wrote {out}: {int(cfg.n)} samples of {prior.describe()}, {cfg.sampler} {steps} steps "
          f"(eta={eta}, skip={cfg.skip}), seed {cfg.seed}, {seconds:.1f} s")
    return out


def main(argv: list[str] | None = None) -> int:
    from hydra import compose, initialize_config_dir

    from invlab.cli.errors import user_message

    sys.path.insert(0, str(REPO))
    try:
        with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
            cfg = compose("sample", overrides=list(sys.argv[1:] if argv is None else argv))
        sample(cfg)
    except Exception as exc:
        msg = user_message(exc)
        if msg is None:
            raise
        print(f"error: {msg}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
