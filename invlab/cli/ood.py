"""`python ood.py detector=<name> pair=<name> [overrides]`: OOD detection with a prior's denoiser, AUROC.

    python ood.py detector=eigenscore pair=mnist_near                  # the prior the pair names
    python ood.py detector=score_norm pair=mnist_far prior.checkpoint=/path/net.safetensors
    python ood.py -m detector=eigenscore,score_norm,denoising_error pair=mnist_near,mnist_digits
    python ood.py prior=gaussian pair.size=8 detector=score_norm logger=none   # analytic prior, seconds

The pair (conf/pair/) gives three image sets — `fit` (in-distribution training images: the detector's
standardisation), `id` and `ood` (the test sets) — and the name of its prior's checkpoint, used when
`prior=learned` (the default) has no `prior.checkpoint`. The run dir gets `ood.json` (auroc, fpr95, the
per-image scores, sizes, names, seconds, per-feature AUROCs, and the raw per-image features of all
three sets), `histogram.png`, status.json and the logger's files (W&B offline by default). User errors
print one sentence (`error: ...`) and exit 1; in a sweep a failed job is recorded and the others go on.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from invlab.cli.jobs import finish, follow_run_dir, run_job

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")  # repo root = parent of invlab/
log = logging.getLogger("invlab")


def build_all(cfg: DictConfig):
    """prior, detector and the pair's three image sets; the prior first (a missing checkpoint fails fast)."""
    from invlab.errors import ConfigError
    from invlab.utils.config import build

    prior = build(prior_config(cfg))
    detector = build(cfg.detector, seed=int(cfg.seed))
    sets = {}
    for role in ("fit", "id", "ood"):
        node = cfg.pair.get(role)
        if node is None:
            raise ConfigError(f"pair {cfg.pair.get('name', '?')} has no `{role}` image set.")
        sets[role] = build(node)
    return prior, detector, sets


def prior_config(cfg: DictConfig) -> DictConfig:
    """cfg.prior, with the pair's checkpoint filled in when the prior takes one and none was given."""
    node = cfg.prior
    if "checkpoint" in node.keys() and OmegaConf.is_missing(node, "checkpoint"):  # `in` skips ??? keys
        node = OmegaConf.merge(node, {"checkpoint": cfg.pair.prior})
    return node


def prior_label(cfg: DictConfig) -> str:
    node = prior_config(cfg)
    return str(node.checkpoint) if "checkpoint" in node else str(node.get("name", "?"))


def resolve_device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return str(name)


def preflight(prior, sets: dict) -> None:
    """One image of each set through the prior's input check, before any heavy work."""
    import torch

    from invlab.errors import ConfigError

    for role, ds in sets.items():
        if len(ds) == 0:
            raise ConfigError(f"the pair's {role} set is empty (check pair.limit / pair.fit_limit).")
        prior.check_input(torch.as_tensor(ds[0]["x"])[None])


def warn_sigma_range(prior, detector) -> None:
    sigma_range = (getattr(prior, "card", None) or {}).get("sigma_range")
    if sigma_range and max(detector.sigmas) > float(sigma_range[1]) * 1.05:
        log.warning("detector.sigmas reach %g but the prior was trained for σ ≤ %g: its denoiser (and the "
                    "features) are extrapolated there.", max(detector.sigmas), float(sigma_range[1]))


def experiment(cfg: DictConfig) -> dict:
    from invlab.analysis.ood import evaluate
    from invlab.analysis.plot import save_histogram

    t0 = time.perf_counter()
    prior, detector, sets = build_all(cfg)
    preflight(prior, sets)
    warn_sigma_range(prior, detector)
    device = resolve_device(str(cfg.device))
    prior = prior.to(device).eval()
    run_dir = Path(str(cfg.run_dir)).absolute()
    run_dir.mkdir(parents=True, exist_ok=True)
    logger = make_run_logger(cfg)
    try:
        res = evaluate(detector, prior, sets["fit"], sets["id"], sets["ood"], int(cfg.batch_size), device)
        report = {
            "auroc": res.auroc, "fpr95": res.fpr95,
            "detector": str(cfg.detector.name), "pair": str(cfg.pair.name),
            "prior": prior_label(cfg),
            "n_fit": res.n_fit, "n_id": res.n_id, "n_ood": res.n_ood,
            "seconds": round(time.perf_counter() - t0, 3), "seconds_features": res.seconds_per_set,
            "nfe": res.nfe, "device": device, "seed": int(cfg.seed),
            "sigmas": detector.sigmas, "detector_config": detector.describe(),
            "detector_stats": detector.summary(), "auroc_per_feature": res.auroc_per_feature,
            "scores": {"id": res.scores_id, "ood": res.scores_ood},
            # raw per-image features (before standardisation), e.g. to choose a σ window afterwards
            "features": {"names": res.feature_names, **{k: v.tolist() for k, v in res.features.items()}},
        }
        if report["detector_stats"].get("converged_fraction", 1.0) < 0.5:
            log.warning("only %.0f%% of the subspace iterations converged; raise detector.max_iters or "
                        "detector.tol.", 100 * report["detector_stats"]["converged_fraction"])
        (run_dir / "ood.json").write_text(json.dumps(report, indent=1))
        title = f"{report['detector']} on {report['pair']} (prior {Path(report['prior']).stem}): AUROC {res.auroc:.3f}"
        hist = save_histogram(run_dir / "histogram.png", res.scores_id, res.scores_ood, title, int(cfg.bins))
        print(f"{report['detector']} on {report['pair']}: AUROC {res.auroc:.4f}  FPR@95%TPR {res.fpr95:.3f}  "
              f"(n_id={res.n_id}, n_ood={res.n_ood}, {report['seconds']:.1f} s)  -> {run_dir / 'ood.json'}")
        log_to(logger, cfg, report, hist)
    except BaseException:
        close(logger, failed=True)
        raise
    close(logger)
    return report


def make_run_logger(cfg: DictConfig):
    if cfg.get("logger") is None:
        return False
    from invlab.engine.loggers import make_logger

    return make_logger(cfg.logger)


def log_to(logger, cfg: DictConfig, report: dict, hist: Path) -> None:
    if not logger:
        return
    logger.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    metrics = {"auroc": report["auroc"], "fpr95": report["fpr95"], "seconds": report["seconds"],
               "n_id": report["n_id"], "n_ood": report["n_ood"]}
    metrics.update({f"auroc/{k}": v for k, v in report["auroc_per_feature"].items()})
    logger.log_metrics(metrics)
    if hasattr(logger, "log_image"):
        logger.log_image(key="histogram", images=[str(hist)], caption=["OOD scores: in-distribution vs OOD"])
    logger.save()


def close(logger, failed: bool = False) -> None:
    if logger:
        from invlab.engine.loggers import close_logger

        close_logger(logger, failed=failed)


@hydra.main(config_path=CONF_DIR, config_name="ood", version_base="1.3")
def _hydra_entry(cfg: DictConfig) -> None:
    run_job(experiment, cfg)


def main() -> None:
    follow_run_dir()  # run_dir=X: Hydra's .hydra/ and log go to X too
    _hydra_entry()
    finish()


if __name__ == "__main__":
    main()
