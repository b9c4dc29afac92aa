"""Does the data fit the image size and value range a prior was trained for? (the channel count is checked
by `Prior.check_input`). `check_image_fit(prior, x)` runs on one sample before a run (cli/run.py preflight).

- A diffusion prior (it has a `schedule`) knows one image size: its card's `image_size` (or a zoo preset's).
  Its network (attention, the statistics of whole images) was trained at that size only: a side more than
  DIFFUSION_RATIO (2×) away is refused (a 28×28 digit model on 256×256 photos gives noise at a huge cost),
  a smaller difference is a warning (UNets are convolutional; some use a 256² model on 512² images).
  Matching sizes pass, whatever they are (a published 256² model on 256² data).
- A denoiser is fully convolutional: it runs at any size and was usually trained on crops, so a size
  difference is at most a warning, given when the sides differ by more than DENOISER_RATIO from the
  images of its card (e.g. a 28×28 digit denoiser on 256×256 photos).
- The card's `value_range` (every invlab card: [0, 1]) must hold the data (a small tolerance for
  interpolation overshoot).
"""
from __future__ import annotations

import logging

from torch import Tensor

from invlab.errors import ShapeError

log = logging.getLogger("invlab")
DIFFUSION_RATIO = 2.0
DENOISER_RATIO = 8.0
RANGE_TOLERANCE = 1e-3


def trained_size(prior) -> tuple[int, int] | None:
    """(H, W) the prior was trained on, from its `image_size` attribute or its card; None if unknown."""
    size = getattr(prior, "image_size", None)
    if size is None:
        size = (getattr(prior, "card", None) or {}).get("image_size")
    if size is None:
        return None
    size = (int(size), int(size)) if isinstance(size, (int, float)) else tuple(int(s) for s in size)
    return size if len(size) == 2 else None


def _name(prior) -> str:
    describe = getattr(prior, "describe", None)
    return describe() if callable(describe) else type(prior).__name__


def check_image_fit(prior, x: Tensor) -> None:
    """Raise ShapeError (diffusion priors: another image size; any prior: data outside its value range) or
    log a warning (denoisers far from their training size); see the module doc. x: (B, C, H, W)."""
    hw = tuple(int(s) for s in x.shape[-2:])
    size = trained_size(prior)
    if size is not None and hw != size:
        shown = f"{size[0]}×{size[1]}"
        ratio = max(hw[0] / size[0], size[0] / hw[0], hw[1] / size[1], size[1] / hw[1])
        if getattr(prior, "schedule", None) is not None:
            if ratio > DIFFUSION_RATIO:
                raise ShapeError(f"the diffusion prior {_name(prior)} was trained on {shown} images but the data "
                                 f"is {hw[0]}×{hw[1]}; resize the data (e.g. data.size={size[0]}) or choose a prior "
                                 f"trained at {hw[0]}×{hw[1]}.")
            log.warning("the diffusion prior %s was trained on %s images and the data is %d×%d: expect worse "
                        "samples than at its own size", _name(prior), shown, hw[0], hw[1])
        elif ratio > DENOISER_RATIO:
            log.warning("the denoiser %s was trained on %s images and the data is %d×%d (%.0f× apart): it runs "
                        "at any size, but what it learned may not carry over", _name(prior), shown, hw[0], hw[1],
                        ratio)
    value_range = (getattr(prior, "card", None) or {}).get("value_range")
    if value_range is not None and len(value_range) == 2:
        lo, hi = float(value_range[0]), float(value_range[1])
        xmin, xmax = float(x.min()), float(x.max())
        if xmin < lo - RANGE_TOLERANCE or xmax > hi + RANGE_TOLERANCE:
            raise ShapeError(f"the data spans [{xmin:.3g}, {xmax:.3g}] but the prior {_name(prior)} was trained on "
                             f"values in [{lo:g}, {hi:g}]; rescale the data.")
