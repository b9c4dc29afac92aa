"""Training learned priors (Lightning). Nothing heavy is imported here.

- denoiser.py  `DenoiserModule`: random σ per sample, MSE/L1 on the clean image, seeded validation.
- msm.py       `MSMModule`: a diffusion prior trained from masked measurements only (MSM, loss on observed pixels).
- common.py    shared helpers: seeded validation noise, PSNR evaluation, EMA, patch adapter, LR schedules.
"""
