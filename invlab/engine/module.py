"""Reconstruction as a LightningModule: `trainer.test(module)` solves the dataset batch by batch.

Per batch: `A, y = task.measure(x, indices, seed)`, `solver(y, A, prior)`, per-sample PSNR/SSIM of the
clamped reconstruction and of the baseline `A.baseline(y)`, then each sample's files are written at
once (see store.py). Per-sample cost: `nfe` is the batch's NFE (the samples of a batch share every
network call, so it is also each sample's NFE); `seconds` and `net_seconds` are the batch's times
divided by the batch size. A sample whose reconstruction is not finite gets `status=diverged`, NaN
metrics, and the run goes on; a finite one far from its measurement or saturated gets `status=suspect`
(its metrics kept; `residual_ratio` and `saturation` columns, see consistency.py). An exception raised by
the solver still fails the run: that is a bug or a configuration error, not a property of one sample. On
SIGTERM the solve stops at the next iteration (`stopping.check_stop` is a solver callback) and the batch
is dropped, its samples left for a rerun. The solver's generator is seeded from the seed and
the batch's first index, so stochastic solvers repeat exactly for the same batching. Extra columns: a
solver's per-sample values (`Result.per_sample`, e.g. DMPlug's `iter_stop`) and, with `track_best=true`,
each sample's best PSNR over the iterates the solver traced and its iteration (`psnr_best`, `iter_best`),
and, where the operator has `align` (Fourier phase retrieval), `psnr_aligned`/`ssim_aligned`: the metrics
up to the operator's trivial ambiguities.

Logged to the Lightning logger at the end: `test/<metric>`, torchmetrics means synced over ranks, of
the samples solved by this invocation (a resumed run logs only what it solved; the runner then logs
`summary/<metric>` over all samples in the run dir).

Sharding is done here, not by Lightning's DistributedSampler (which pads by repeating samples): in
`setup` rank 0 lists the finished samples and broadcasts them, each rank takes every world_size-th
unfinished index, and a rank left with nothing gets one padding item that is skipped, so every rank
runs the epoch-end hooks whose metric sync is a collective.
"""
from __future__ import annotations

import math
import warnings

import lightning as L
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchmetrics import MeanMetric

from invlab.engine.consistency import check_rows, is_suspect
from invlab.engine.metrics import image_scores, psnr   # the PSNR/SSIM convention (documented there)
from invlab.engine.spectra import is_spectrum, spectrum_rows, spectrum_strip
from invlab.engine.stopping import check_stop
from invlab.engine.video import is_video, video_rows, video_strip
from invlab.engine.store import SampleStore
from invlab.utils import images

METRIC_KEYS = ("psnr", "ssim", "psnr_input", "ssim_input")
ALIGNED_KEYS = ("psnr_aligned", "ssim_aligned")   # operators with trivial ambiguities (`A.align`)


class _Shard(Dataset):
    """The dataset items one rank solves; `pad` items only keep an idle rank in step with the others."""

    def __init__(self, dataset, indices: list[int], pad: bool):
        self.dataset, self.indices, self.pad = dataset, indices, pad

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> dict:
        item = self.dataset[self.indices[k]]
        return {"x": item["x"], "index": int(item["index"]), "pad": self.pad}


def measurement_image(baseline: Tensor | None, y: Tensor, like: Tensor):
    """What the grid shows as "measurement": the baseline when image-shaped, else y when image-shaped."""
    for cand in (baseline, y):
        if cand is not None and cand.dim() == 3 and cand.shape[0] == like.shape[0]:
            tile = images.to_uint8(cand)
            return images.resize(tile, like.shape[1], like.shape[2])
    return images.blank(like.shape[1], like.shape[2])


def parameter_error(estimate: Tensor, truth, batch: int) -> list[float]:
    """Per-sample relative error ‖θ̂ − θ‖/‖θ‖ of an estimated operator parameter against the operator's
    own (e.g. a blind solver's kernel vs the task's); NaN where the operator has no such tensor or the
    shapes differ."""
    if not isinstance(truth, Tensor) or estimate.shape[1:] != truth.shape[1:]:
        return [math.nan] * batch
    est = estimate.expand(batch, *estimate.shape[1:]).flatten(1).double()
    true = truth.to(estimate.device).expand(batch, *truth.shape[1:]).flatten(1).double()
    return ((est - true).norm(dim=1) / true.norm(dim=1).clamp_min(1e-30)).tolist()


class BestPSNR:
    """Solver callback for `track_best=true`: each sample's best PSNR over the iterates the solver traces
    (clamped to [0, 1], against the truth only the engine holds) and the iteration where it occurred; the
    oracle early stop that papers such as DMPlug report. Iterates not shaped like the truth are ignored."""

    def __init__(self, x: Tensor):
        self.x = x
        self.best = torch.full((x.shape[0],), -math.inf, dtype=torch.float64, device=x.device)
        self.iter = torch.full((x.shape[0],), -1, dtype=torch.long, device=x.device)

    @torch.no_grad()
    def __call__(self, k: int, xk: Tensor, info: dict) -> None:
        if not isinstance(xk, Tensor) or xk.is_complex() or xk.shape != self.x.shape:
            return
        value = psnr(xk.detach().clamp(0, 1), self.x).double()
        better = value > self.best  # NaN never wins
        self.best = torch.where(better, value, self.best)
        self.iter = torch.where(better, torch.full_like(self.iter, k), self.iter)

    def rows(self) -> list[dict]:
        found = self.iter >= 0
        return [{"psnr_best": float(b) if f else math.nan, "iter_best": int(i) if f else math.nan}
                for b, i, f in zip(self.best.tolist(), self.iter.tolist(), found.tolist())]


class SolverProgress:
    """Solver callback: a tqdm bar of the iterations a solver traces within one batch (a DMPlug or DPS batch
    runs minutes with no other sign of life); the count only, as solvers do not declare their length. Off
    when `enabled` is false or stderr is not a terminal (tqdm's disable=None)."""

    def __init__(self, desc: str, enabled: bool):
        self.desc, self.enabled, self.bar, self.iterations = desc, enabled, None, 0

    def __enter__(self) -> "SolverProgress":
        if self.enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(desc=self.desc, unit="it", leave=False, disable=None, position=1)
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()

    def __call__(self, k: int, xk: Tensor, info: dict) -> None:
        self.iterations += 1
        if self.bar is not None:
            self.bar.update(1)


def chain(*callbacks):
    """One solver callback calling each given one (None entries skipped); None when there are none."""
    live = [c for c in callbacks if c is not None]
    if not live:
        return None
    return lambda k, xk, info: [c(k, xk, info) for c in live]


class Reconstruction(L.LightningModule):
    def __init__(self, dataset, task, prior, solver, run_dir, *, seed: int = 0, batch_size: int = 4,
                 save_tensors: bool = False, track_best: bool = False):
        super().__init__()
        self.dataset, self.task, self.solver = dataset, task, solver
        if isinstance(prior, nn.Module):
            prior.requires_grad_(False)  # inference only: no graph through the weights
        self.prior = prior
        self.store = SampleStore(run_dir)
        self.seed, self.batch_size, self.save_tensors = seed, batch_size, save_tensors
        self.track_best = track_best  # per-sample best PSNR over the iterates (BestPSNR): an oracle
        # MeanMetric over per-sample values = PSNR/SSIM with per-image reduction; sum states sync
        # across ranks even where a rank had nothing to add. Diverged samples are left out.
        self.means = nn.ModuleDict({k: MeanMetric() for k in (*METRIC_KEYS, *ALIGNED_KEYS)})
        self.todo: list[int] = []
        self.shard: list[int] = []
        self.shard_is_pad = False

    # ---- data: filter finished samples, then shard -------------------------------------------
    def setup(self, stage: str) -> None:
        done = self.store.done() if self.trainer.is_global_zero else None
        done = self.trainer.strategy.broadcast(done, src=0)
        self.todo = [i for i in range(len(self.dataset)) if i not in done]
        shard = self.todo[self.trainer.global_rank::self.trainer.world_size]
        self.shard_is_pad = not shard and bool(self.todo)
        self.shard = self.todo[:1] if self.shard_is_pad else shard

    def test_dataloader(self) -> DataLoader:
        return DataLoader(_Shard(self.dataset, self.shard, self.shard_is_pad), batch_size=self.batch_size,
                          shuffle=False, num_workers=0)

    # ---- one batch ---------------------------------------------------------------------------
    def test_step(self, batch: dict, batch_idx: int) -> None:
        check_stop()  # SIGTERM between batches: stop before starting the next one
        keep = ~batch["pad"]
        if not bool(keep.any()):
            return
        x, indices = batch["x"][keep], [int(i) for i in batch["index"][keep]]
        A, y = self.task.measure(x, indices, seed=self.seed)
        if isinstance(A, nn.Module):
            A = A.to(x.device)
        gen = torch.Generator(device=x.device).manual_seed(self.seed * 1_000_003 + indices[0])
        best = BestPSNR(x) if self.track_best else None
        bar = SolverProgress(f"{getattr(self.solver, 'name', type(self.solver).__name__)} on {len(indices)} "
                             f"sample(s) from #{indices[0]}", enabled=self._show_progress())
        with torch.enable_grad(), bar:  # solvers that differentiate (DPS, autograd adjoints) work as in a script
            res = self.solver(y, A, self.prior, generator=gen, callback=chain(best, bar, check_stop))
        xhat = res.x.detach()
        baseline = self._baseline(A, y, x)
        spectra = is_spectrum(x)  # (B, C, L): snr, peak errors, a plotted strip (engine/spectra.py)
        video = is_video(x)       # (B, C, T, H, W): per-clip PSNR/SSIM, flicker, warp error (engine/video.py)
        if spectra:
            rows = spectrum_rows(x, xhat, baseline, self.means)
        elif video:
            motion = getattr(self.dataset, "motion", None)  # known camera motion (face_clips) for warp_err
            rows = video_rows(x, xhat, baseline, None if motion is None else motion[indices].to(x.device),
                              self.means)
        else:
            rows = self._metrics(x, xhat, baseline)
        for row, check in zip(rows, check_rows(A, y, xhat, torch.isfinite(xhat).flatten(1).all(1))):
            row.update(check)  # residual_ratio, saturation: far from the data or saturated -> suspect
            if row["status"] == "ok" and is_suspect(check):
                row["status"] = "suspect"
        self._aligned_metrics(A, x, xhat, rows)
        for j, extra in enumerate(best.rows() if best is not None else []):
            rows[j].update(extra)
        for name, vals in res.per_sample.items():  # per-sample values a solver reports (DMPlug: iter_stop)
            for j, v in enumerate(vals.reshape(-1).tolist()):
                rows[j][name] = v
        for name, est in res.estimates.items():  # operator parameters a blind solver estimated (BC-PnP)
            for j, err in enumerate(parameter_error(est, getattr(A, name, None), x.shape[0])):
                rows[j][f"{name}_error"] = err
        b = len(indices)
        files = getattr(self.dataset, "sources", None)  # a folder's file per index: checked on resume
        for j, index in enumerate(indices):
            row = {"index": index, **rows[j], "nfe": int(res.nfe), "seconds": res.seconds / b,
                   "net_seconds": res.net_seconds / b, "batch_size": b}
            if files is not None:
                row["source"] = files[index]
            strip = spectrum_strip(x[j], y[j], xhat[j]) if spectra else \
                video_strip(x[j], None if baseline is None else baseline[j], xhat[j]) if video else \
                images.grid([[images.to_uint8(x[j])],
                             [measurement_image(None if baseline is None else baseline[j], y[j], x[j])],
                             [images.to_uint8(xhat[j])]])
            tensors = None
            if self.save_tensors:
                tensors = {"x": xhat[j].cpu(), "y": y[j].cpu(),
                           "baseline": None if baseline is None else baseline[j].cpu()}
            self.store.write(index, row, strip, tensors)

    def _show_progress(self) -> bool:
        """An iteration bar for the solve on rank 0 when the trainer shows progress bars at all."""
        trainer = self._trainer
        return trainer is not None and trainer.is_global_zero and trainer.progress_bar_callback is not None

    def _baseline(self, A, y: Tensor, x: Tensor) -> Tensor | None:
        """A⁺y (or whatever the operator reports); None where it has none or it is not image-shaped."""
        try:
            b = A.baseline(y)
        except NotImplementedError:
            return None
        if not isinstance(b, Tensor) or b.is_complex() or b.shape != x.shape:
            return None
        return b.detach()

    def _metrics(self, x: Tensor, xhat: Tensor, baseline: Tensor | None) -> list[dict]:
        """Per-sample rows; the synced means take only samples with status ok (as summary.json does)."""
        n = x.shape[0]
        out = {k: [math.nan] * n for k in METRIC_KEYS}
        finite = torch.isfinite(xhat).flatten(1).all(1)
        for prefix, est in (("", xhat), ("_input", baseline)):
            if est is None:
                continue
            ok = torch.isfinite(est).flatten(1).all(1)
            if not bool(ok.any()):
                continue
            psnr, ssim = image_scores(est[ok], x[ok])
            where = ok.nonzero().flatten().tolist()
            for name, vals in (("psnr", psnr), ("ssim", ssim)):
                for j, v in zip(where, vals.tolist()):
                    out[name + prefix][j] = v
                counted = finite[ok]
                if bool(counted.any()):
                    self.means[name + prefix].update(vals[counted])
        status = ["ok" if bool(f) else "diverged" for f in finite]
        return [{**{k: out[k][j] for k in METRIC_KEYS}, "status": status[j]} for j in range(n)]

    def _aligned_metrics(self, A, x: Tensor, xhat: Tensor, rows: list[dict]) -> None:
        """`psnr_aligned`, `ssim_aligned` where the operator cannot tell some images apart (Fourier phase
        retrieval: shifts and the 180° rotation): the metrics of `A.align(x̂, x)`, the closest member of
        x̂'s ambiguity orbit. The plain `psnr` stays the headline number."""
        align = getattr(A, "align", None)
        ok = torch.isfinite(xhat).flatten(1).all(1)
        if not callable(align) or not bool(ok.any()):
            return
        psnr, ssim = image_scores(align(xhat[ok].clamp(0, 1), x[ok]), x[ok])
        for j, p, s in zip(ok.nonzero().flatten().tolist(), psnr.tolist(), ssim.tolist()):
            rows[j].update(psnr_aligned=p, ssim_aligned=s)
        self.means["psnr_aligned"].update(psnr)
        self.means["ssim_aligned"].update(ssim)

    # ---- epoch end: synced means to the logger -----------------------------------------------
    def on_test_epoch_end(self) -> None:
        values = {}
        for key, metric in self.means.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "compute before update" on a rank with nothing to add
                value = metric.compute()  # a collective: every rank gets here (see setup)
            if torch.isfinite(value):
                values[f"test/{key}"] = float(value)
        if values:
            self.log_dict(values, rank_zero_only=True)

    def on_test_end(self) -> None:
        self.trainer.strategy.barrier("invlab-samples-written")
