"""Short videos (issue 15, FLAIR). Each item is {"x": float32 (C, T, H, W) in [0, 1], "index": int}; the
layout is (C, T, H, W) so that a batch is (B, C, T, H, W) (docs/DESIGN.md, "Videos").

- `face_clips`: clips made from scikit-image's LFW faces with smooth synthetic camera motion. Each face
  (25×25) is upsampled to a 64×64 source; frame t samples it through the affine map θ_t (normalised
  coordinates, F.affine_grid): a field of view of `fov` of the source, shifted along a straight line
  (start ±max_shift/2, per-frame velocity ±max_velocity), rotated (start ±max_angle°, ±max_spin°/frame) and
  zoomed (start 0.95-1.05, ±1 %/frame). The faces of the splits are disjoint (train 0-79, val 80-89,
  test 90-99) and every clip is seeded by (seed, split, face, clip), so a split is the same on every machine.
  The θ_t are kept (`motion`, (N, T, 2, 3)): invlab.utils.video.warp_error warps frame t onto t+1 with them.
- `video_folder`: a user's frames: image files in a folder (one video), or subfolders (one video each),
  sorted by name, cut into clips of `frames` consecutive frames (a shorter remainder is dropped).
"""
from __future__ import annotations

import logging
import math
import os

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from invlab.data import sources
from invlab.data.datasets import IMAGE_SUFFIXES
from invlab.errors import ConfigError
from invlab.utils.config import whole_number

log = logging.getLogger("invlab")
FACE_SPLITS = {"train": (0, 80, 0), "val": (80, 90, 1), "test": (90, 100, 2)}   # faces [a, b), stream


class VideoDataset(Dataset):
    """Clips held in memory (N, C, T, H, W); `motion` (N, T, 2, 3) where the camera motion is known."""

    def __init__(self, clips: torch.Tensor, motion: torch.Tensor | None = None, sources: list[str] | None = None,
                 faces: list[int] | None = None):
        self.clips = clips.float().contiguous()
        self.motion = motion
        self.sources = sources
        self.faces = faces

    @property
    def channels(self) -> int:
        return int(self.clips.shape[1])

    def __len__(self) -> int:
        return int(self.clips.shape[0])

    def __getitem__(self, i: int) -> dict:
        return {"x": self.clips[i], "index": int(i)}


def clip_motion(rng: np.random.Generator, frames: int, fov: float, max_shift: float, max_velocity: float,
                max_angle: float, max_spin: float) -> np.ndarray:
    """(T, 2, 3) affine maps (output → source, normalised coordinates) of one smooth camera path."""
    t = np.arange(frames, dtype=np.float64)
    start, vel = rng.uniform(-max_shift / 2, max_shift / 2, 2), rng.uniform(-max_velocity, max_velocity, 2)
    angle = np.deg2rad(rng.uniform(-max_angle, max_angle) + rng.uniform(-max_spin, max_spin) * t)
    zoom = np.exp(rng.uniform(np.log(0.95), np.log(1.05)) + rng.uniform(-0.01, 0.01) * t)
    shift = start[None] + vel[None] * (t - (frames - 1) / 2)[:, None]
    scale = fov / zoom
    theta = np.zeros((frames, 2, 3))
    theta[:, 0, 0], theta[:, 0, 1] = scale * np.cos(angle), -scale * np.sin(angle)
    theta[:, 1, 0], theta[:, 1, 1] = scale * np.sin(angle), scale * np.cos(angle)
    theta[:, :, 2] = shift
    return theta


def render(source: torch.Tensor, theta: torch.Tensor, size: int) -> torch.Tensor:
    """Frames (T, C, size, size) of a (C, h, w) source through the maps θ (T, 2, 3)."""
    grid = F.affine_grid(theta.float(), (theta.shape[0], source.shape[0], size, size), align_corners=False)
    src = source[None].expand(theta.shape[0], *source.shape)
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="border", align_corners=False).clamp(0, 1)


def face_clips(split: str = "test", frames: int = 8, size: int = 32, clips_per_face: int | None = None,
               fov: float = 0.75, max_shift: float = 0.12, max_velocity: float = 0.015, max_angle: float = 3.0,
               max_spin: float = 1.0, seed: int = 0, limit: int | None = None) -> VideoDataset:
    """`data=face_clips`: clips (1, frames, size, size) of the LFW faces of `split` (see the module doc);
    `clips_per_face` defaults to 16 for train and 2 for val/test."""
    if split not in FACE_SPLITS:
        raise ConfigError(f"data.split must be train, val or test, got {split!r}.")
    frames = whole_number(frames, "data.frames", minimum=2)
    size = whole_number(size, "data.size", minimum=8)
    seed = whole_number(seed, "data.seed", minimum=0)
    limit = whole_number(limit, "data.limit", minimum=1, allow_none=True)
    per_face = whole_number(clips_per_face if clips_per_face is not None else (16 if split == "train" else 2),
                            "data.clips_per_face", minimum=1)
    reach = fov * 1.05 * math.sqrt(2) + max_shift / 2 + max_velocity * frames / 2
    if not 0 < fov <= 1 or reach > 1.25:
        raise ConfigError(f"data.fov={fov} with max_shift={max_shift}, max_velocity={max_velocity} reaches "
                          f"{reach:.2f} of the source (the border smears beyond 1); lower them.")
    a, b, stream = FACE_SPLITS[split]
    faces = sources.lfw("faces")[a:b]
    clips, motion, which = [], [], []
    n_total = (b - a) * per_face
    n = min(n_total, limit) if limit else n_total
    for k in range(n):  # clip k: face a + k // per_face, its (k % per_face)-th path
        face, j = k // per_face, k % per_face
        src = torch.from_numpy(faces[face]).float()[None, None]
        src = F.interpolate(src, size=(64, 64), mode="bicubic", align_corners=False)[0].clamp(0, 1)
        rng = np.random.default_rng([seed, stream, a + face, j])
        theta = torch.from_numpy(clip_motion(rng, frames, fov, max_shift, max_velocity, max_angle, max_spin))
        clips.append(render(src, theta, size).transpose(0, 1))  # (C, T, H, W)
        motion.append(theta.float())
        which.append(a + face)
    return VideoDataset(torch.stack(clips), torch.stack(motion), faces=which)


def _frame_files(folder: str) -> list[str]:
    return sorted(f for f in os.listdir(folder) if f.lower().endswith(IMAGE_SUFFIXES))


def video_folder(path: str, frames: int = 8, size: int | None = 32, grayscale: bool = True,
                 limit: int | None = None) -> VideoDataset:
    """`data=video_folder data.path=...`: the frames in `path` (or in each of its subfolders: one video each),
    centre-cropped square, resized to `size`, cut into clips of `frames` consecutive frames."""
    root = os.path.expanduser(str(path)) if path else ""
    if not root or not os.path.isdir(root):
        raise ConfigError(f"data.path={path!r} is not a folder of video frames; set data.path=/path/to/frames.")
    frames = whole_number(frames, "data.frames", minimum=2)
    size = whole_number(size, "data.size", minimum=8, allow_none=True)
    limit = whole_number(limit, "data.limit", minimum=1, allow_none=True)
    subdirs = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and
                     _frame_files(os.path.join(root, d)))
    videos = [(d, os.path.join(root, d)) for d in subdirs] if subdirs else [("", root)]
    clips, names = [], []
    for name, folder in videos:
        files = _frame_files(folder)
        if len(files) < frames:
            log.warning("video_folder: %s has %d frames, fewer than data.frames=%d: skipped", folder, len(files), frames)
            continue
        if len(files) % frames:
            log.warning("video_folder: %s has %d frames; the last %d do not fill a clip of %d and are dropped",
                        folder, len(files), len(files) % frames, frames)
        imgs = []
        for f in files[:len(files) - len(files) % frames]:
            arr = sources.center_square(sources.read_image(os.path.join(folder, f), grayscale))
            imgs.append(sources.resize(arr, size) if size else arr)
        if len({im.shape for im in imgs}) > 1:
            raise ConfigError(f"the frames in {folder!r} have different sizes; set data.size.")
        arr = np.stack(imgs).astype(np.float32)
        arr = arr[:, None] if arr.ndim == 3 else arr.transpose(0, 3, 1, 2)   # (N, C, H, W)
        for start in range(0, arr.shape[0], frames):
            clips.append(torch.from_numpy(arr[start:start + frames]).transpose(0, 1))  # (C, T, H, W)
            names.append(f"{name + '/' if name else ''}{files[start]}")
    if not clips:
        raise ConfigError(f"no clip of {frames} frames ({', '.join(IMAGE_SUFFIXES)}) in data.path={path!r}.")
    if len({c.shape for c in clips}) > 1:
        raise ConfigError(f"the videos in {path!r} have different frame sizes or channels; set data.size.")
    clips, names = clips[:limit] if limit else clips, names[:limit] if limit else names
    return VideoDataset(torch.stack(clips), None, sources=names)
