"""Analysis of priors: out-of-distribution detection and distribution-shift estimates.

- `eigenscore`  EigenScore: top eigenvalues of the posterior covariance σ²·∂D/∂x (`jacobian`: the
                Jacobian-free subspace iteration and central-difference JVPs)
- `baselines`   score norm, denoising error, posterior trace (Hutchinson), Jacobian Frobenius norm
- `detector`    the shared contract: per-σ features → standardised on ID training data → summed
- `auroc`       AUROC / FPR@95%TPR (torchmetrics); `ood`: the fit/id/ood evaluation; `plot`: histogram
- `sets`        image-set selection for OOD pairs (conf/pair/); `shift`: the score-based KL(p‖q),
                from clean images or from measurements only (command line: `python shift.py`, invlab/cli/shift.py)
Entry point: `python ood.py detector=<name> pair=<name>` (invlab/cli/ood.py).
"""
