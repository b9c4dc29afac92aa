"""Choose the TV weight on the *validation* spectra: λ = weight·σ, the weight with the best mean SNR.

    OMP_NUM_THREADS=1 .venv/bin/python experiments/tvcondnet/choose_lambda.py [--n 200]

Two rules are tuned: σ = the true noise level (the TV baseline, prior=tv1d, given σ_y by the solver) and
σ = σ̂(y) estimated from the spectrum (TVCondNet's condition, module.tv_weight). Prints one line per weight
and writes lambda.json beside this file (or into `--out`).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from invlab.data.spectra import nmr_synth
from invlab.priors.tv1d import noise_sigma, prox_tv1d
from invlab.utils.spectra import snr_db

WEIGHTS = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent, help="folder for lambda.json")
    args = ap.parse_args()
    val = nmr_synth(split="val", n=args.n)
    x, y, sigma = val.spectra.double(), val.noisy.double(), val.sigma.double()
    sig_hat = noise_sigma(y)
    print(f"validation: {len(val)} spectra; sigma_hat/sigma = {float((sig_hat / sigma).mean()):.3f} "
          f"(mean), input SNR {float(snr_db(y, x).mean()):.2f} dB")
    best = {}
    for rule, s in (("true_sigma", sigma), ("sigma_hat", sig_hat)):
        scores = []
        for w in WEIGHTS:
            snr = float(snr_db(prox_tv1d(y, w * s), x).mean())
            scores.append(snr)
            print(f"{rule:10s} weight={w:<5g} mean SNR {snr:.3f} dB")
        best[rule] = {"weight": WEIGHTS[int(np.argmax(scores))], "val_snr": round(max(scores), 3)}
    print(json.dumps(best))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "lambda.json").write_text(json.dumps({**best, "n_val": len(val)}, indent=1) + "\n")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
