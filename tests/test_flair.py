"""FLAIR (issue 15): face clips (shapes, disjoint seeded splits, the kept motion), the video folder, the
temporal network parts (shapes, equivariances, the per-frame ablation really is per frame), the engine's
clip metrics, a tiny random-weight `solver=flair` run through run.py, and bad input in one sentence."""
from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
import torch

from helpers_engine import REPO
from invlab.errors import ShapeError

ENV = dict(os.environ, WANDB_MODE="offline", PYTHONWARNINGS="ignore", OMP_NUM_THREADS="1")


# ---- data ------------------------------------------------------------------------------------------
def test_face_clips_shapes_splits_and_determinism():
    from invlab.data.video import face_clips

    test = face_clips("test")
    assert len(test) == 20 and test[0]["x"].shape == (1, 8, 32, 32) and test.motion.shape == (20, 8, 2, 3)
    x = test.clips
    assert x.dtype == torch.float32 and float(x.min()) >= 0 and float(x.max()) <= 1
    assert torch.equal(face_clips("test").clips, x)                          # seeded
    assert torch.equal(face_clips("test", limit=3).clips, x[:3])             # clip i does not depend on limit
    assert not torch.equal(face_clips("test", seed=1).clips, x)
    faces = {s: set(face_clips(s, limit=None, clips_per_face=1).faces) for s in ("train", "val", "test")}
    assert faces["train"] == set(range(80)) and faces["val"] == set(range(80, 90)) and faces["test"] == set(range(90, 100))
    assert (x[:, :, 1:] - x[:, :, :-1]).abs().mean() > 1e-3                  # the camera moves


def test_known_motion_explains_the_frames():
    from invlab.data.video import face_clips
    from invlab.utils.video import flicker, warp_error

    d = face_clips("val", limit=4)
    truth = warp_error(d.clips, d.motion)
    still = warp_error(d.clips, d.motion[:, :1].expand_as(d.motion))   # the motion ignored: identity warps
    shuffled = warp_error(d.clips[:, :, torch.tensor([0, 4, 1, 5, 2, 6, 3, 7])], d.motion)
    assert bool((truth < 0.5 * still).all()) and bool((truth < 0.5 * shuffled).all()), (truth, still, shuffled)
    assert torch.equal(flicker(d.clips, d.clips), torch.zeros(4))


def test_video_folder_reads_clips_and_names_bad_folders(tmp_path):
    from PIL import Image

    from invlab.data.video import video_folder
    from invlab.errors import ConfigError

    for video in ("a", "b"):
        (tmp_path / video).mkdir()
        for i in range(10 if video == "a" else 8):
            Image.fromarray((torch.rand(40, 48) * 255).to(torch.uint8).numpy()).save(tmp_path / video / f"{i:03d}.png")
    d = video_folder(str(tmp_path), frames=4, size=32)
    assert len(d) == 2 + 2 and d[0]["x"].shape == (1, 4, 32, 32) and d.motion is None   # a: 10 frames -> 2 clips
    assert d.sources[0] == "a/000.png" and d.sources[2] == "b/000.png"
    with pytest.raises(ConfigError, match="not a folder"):
        video_folder(str(tmp_path / "nowhere"))
    with pytest.raises(ConfigError, match="no clip of 16 frames"):
        video_folder(str(tmp_path), frames=16)


# ---- networks --------------------------------------------------------------------------------------
def test_temporal_attention_shapes_and_equivariances():
    from invlab.nets.video_unet import TemporalAttention

    torch.manual_seed(0)
    att = TemporalAttention(16, heads=4, groups=8, positional=False)
    torch.nn.init.normal_(att.proj.weight, std=0.1)   # not the zero init: the attention must show
    h = torch.randn(2 * 5, 16, 6, 6)
    out = att(h, frames=5)
    assert out.shape == h.shape and not torch.allclose(out, h)
    perm = torch.tensor([3, 0, 4, 1, 2])
    frames = lambda t: t.reshape(2, 5, 16, 6, 6)  # noqa: E731
    permuted = att(frames(h)[:, perm].reshape(10, 16, 6, 6), frames=5)
    assert torch.allclose(frames(permuted), frames(out)[:, perm], atol=1e-5)        # frame permutations
    rolled = att(h.roll((2, 1), dims=(-2, -1)), frames=5)
    assert torch.allclose(rolled, out.roll((2, 1), dims=(-2, -1)), atol=1e-5)      # spatial shifts
    att.positional = True   # with the frame-index embedding the order matters
    assert not torch.allclose(frames(att(frames(h)[:, perm].reshape(10, 16, 6, 6), 5)), frames(att(h, 5))[:, perm],
                              atol=1e-4)
    two = att(h, frames=5)   # clips of a batch do not mix
    assert torch.allclose(att(h[:5], frames=5), two[:5], atol=1e-5)


def _nets(temporal: bool):
    from invlab.nets.video_unet import VideoUNet

    torch.manual_seed(0)
    net = VideoUNet(frames=4, temporal=temporal, channels=8, channel_mult=(1, 2), temporal_levels=(1,), heads=2,
                    groups=4)
    for m in net.modules():  # give the zero-initialised output layers weights
        if isinstance(m, torch.nn.Conv2d) and not m.weight.abs().sum():
            torch.nn.init.normal_(m.weight, std=0.05)
    return net.eval()


def test_video_unet_shapes_and_the_per_frame_ablation_is_per_frame():
    x, c = torch.randn(2, 1, 4, 16, 16), torch.randn(2, 2, 4, 16, 16)
    video, frame = _nets(True), _nets(False)
    with torch.no_grad():
        out_v, out_f = video(x, torch.tensor([10.0, 500.0]), c), frame(x, torch.tensor([10.0, 500.0]), c)
        assert out_v.shape == x.shape and out_f.shape == x.shape
        one = frame(x[:, :, 2:3], torch.tensor([10.0, 500.0]), c[:, :, 2:3])
        assert torch.allclose(one, out_f[:, :, 2:3], atol=1e-5)                       # frames independent
        changed = x.clone()
        changed[:, :, 3] += 1.0
        assert torch.allclose(frame(changed, torch.tensor([10.0, 500.0]), c)[:, :, 0], out_f[:, :, 0], atol=1e-5)
        assert not torch.allclose(video(changed, torch.tensor([10.0, 500.0]), c)[:, :, 0], out_v[:, :, 0], atol=1e-4)
    assert sum(p.numel() for p in video.parameters()) > sum(p.numel() for p in frame.parameters())
    with pytest.raises(ShapeError, match="condition"):
        video(x, 10.0, c[:, :1])


def test_recurrent_refinement_runs_forward_in_time():
    from invlab.nets.video_unet import RecurrentRefine

    torch.manual_seed(0)
    ref = RecurrentRefine(8)
    torch.nn.init.normal_(ref.proj.weight, std=0.1)
    h = torch.randn(4, 8, 5, 5)           # one clip of 4 frames
    g = h.clone()
    g[3] += 1.0                            # change the last frame only
    a, b = ref(h, 4), ref(g, 4)
    assert torch.allclose(a[:3], b[:3]) and not torch.allclose(a[3], b[3])


# ---- engine rows and the sampler ---------------------------------------------------------------------
def test_engine_video_rows_and_strip():
    from invlab.data.video import face_clips
    from invlab.engine.video import video_rows, video_strip

    d = face_clips("test", limit=2)
    x = d.clips
    rows = video_rows(x, x.clone(), (x + 0.05).clamp(0, 1), d.motion)
    assert rows[0]["psnr"] > 100 and rows[0]["ssim"] == pytest.approx(1.0) and rows[0]["flicker"] == 0.0
    assert rows[0]["warp_err"] == pytest.approx(rows[0]["warp_err_truth"]) and 20 < rows[0]["psnr_input"] < 30
    assert video_strip(x[0], None, x[0]).ndim == 3


def _tiny_checkpoint(tmp_path, temporal=True):
    from invlab.priors.checkpoint import save_checkpoint
    from invlab.priors.schedule import DDPMSchedule

    arch = {"_target_": "invlab.nets.video_unet.VideoUNet", "in_channels": 1, "cond_channels": 2, "frames": 8,
            "temporal": temporal, "temporal_levels": [1], "channels": 8, "channel_mult": [1, 2], "heads": 2,
            "groups": 4}
    from invlab.priors.checkpoint import build_net

    card = {"recipe": "test", "kind": "conditional_video_diffusion", "schedule": DDPMSchedule().to_dict(),
            "channels": 1, "image_size": [32, 32], "value_range": [0.0, 1.0]}
    return save_checkpoint(tmp_path / f"tiny_{temporal}.safetensors", build_net(arch), arch, card)


def test_flair_sampler_ends_on_the_measurements_for_sr_and_frames(tmp_path):
    from invlab.data.video import face_clips
    from invlab.ops.task import Task
    from invlab.ops.video import VideoFrameMask, VideoSuperResolution
    from invlab.priors.video import ConditionalVideoPrior
    from invlab.solvers.flair import FLAIR

    prior = ConditionalVideoPrior(str(_tiny_checkpoint(tmp_path)))
    x = face_clips("test", limit=2).clips
    for op in (VideoSuperResolution, VideoFrameMask):
        A, y = Task(op, sigma_y=0.0).measure(x, [0, 1])
        res = FLAIR(steps=4, dc_var=None, clip=False)(y, A, prior, generator=torch.Generator().manual_seed(0))
        assert res.x.shape == x.shape and res.nfe == 4
        assert torch.allclose(A(res.x), y, atol=1e-5)   # the last step is the exact projection everywhere
    warm = FLAIR(steps=10, start=0.3)(y, A, prior, generator=torch.Generator().manual_seed(0))
    assert warm.nfe == 3 and warm.x.shape == x.shape   # only the steps at t <= 0.3·T
    with pytest.raises(ShapeError, match="8 frames"):
        prior.check_input(torch.rand(1, 1, 6, 32, 32))
    with pytest.raises(ShapeError, match="1-channel"):
        prior.check_input(torch.rand(1, 3, 8, 32, 32))


def _run(*overrides, ok=True):
    r = subprocess.run([sys.executable, str(REPO / "run.py"), *overrides], cwd=REPO, env=ENV, capture_output=True,
                       text=True, timeout=600)
    assert (r.returncode == 0) == ok, r.stderr[-3000:]
    return r


def test_flair_runs_from_the_cli_and_bad_input_is_one_sentence(tmp_path):
    ckpt = _tiny_checkpoint(tmp_path)
    common = [f"prior.checkpoint={ckpt}", "data.limit=2", "solver.steps=2", "solver.start=1.0", "logger=none",
              "trainer.enable_progress_bar=false"]
    _run("solver=flair", f"run_dir={tmp_path / 'run'}", *common)
    with open(tmp_path / "run" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and rows[0]["nfe"] == "2"
    assert {"flicker", "warp_err", "warp_err_truth", "flicker_input", "psnr_input"} <= set(rows[0])
    assert (tmp_path / "run" / "grid.png").is_file()
    bad = _run("solver=flair", f"run_dir={tmp_path / 'bad'}", "data.frames=6", *common, ok=False)
    assert "error: " in bad.stderr and "8 frames" in bad.stderr and "data.frames=8" in bad.stderr
    bad = _run("solver=flair", f"run_dir={tmp_path / 'img'}", "data=lfw", "task=sr4", *common, ok=False)
    assert "error: " in bad.stderr and "clips (B, C, T, H, W)" in bad.stderr


@pytest.mark.slow
def test_train_flair_recipes_export_cards(tmp_path):
    from invlab.priors.checkpoint import read_metadata

    for recipe in ("flair_faces", "flair_frame"):
        export = tmp_path / f"{recipe}.safetensors"
        r = subprocess.run([sys.executable, str(REPO / "train.py"), f"experiment=train/{recipe}", "trainer.max_steps=2",
                            "trainer.max_time=null", "data.limit=12", "val_data.limit=4", "net.channels=8",
                            "loader.batch_size=4", "trainer.val_check_interval=2", "logger=none",
                            "trainer.enable_progress_bar=false", "trainer.enable_model_summary=false",
                            f"export={export}", f"hydra.run.dir={tmp_path / recipe}"],
                           cwd=REPO, env=ENV, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        meta = read_metadata(export)
        assert meta["card"]["kind"] == "conditional_video_diffusion" and meta["card"]["steps"] == 2
        assert meta["arch"]["temporal"] is (recipe == "flair_faces")
        assert set(meta["card"]["metrics"]) == {f"psnr_x0_t300_{t}" for t in ("video_sr4", "video_deblur", "video_interp")}
