"""A histogram of in-distribution vs OOD scores as a PNG, drawn with numpy and Pillow (no matplotlib).

Both histograms share the bins and are normalised to densities (so sets of different sizes compare);
ID bars are blue, OOD bars orange, their overlap a blend. Under the plot: the score range, and a legend
strip with each set's size; the title carries the AUROC.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

ID_COLOR = np.array([31, 119, 180], dtype=np.float32)
OOD_COLOR = np.array([255, 127, 14], dtype=np.float32)


def histogram_image(id_scores, ood_scores, title: str = "", bins: int = 40, width: int = 640,
                    height: int = 360) -> np.ndarray:
    """(height, width, 3) uint8 image of the two score histograms."""
    from PIL import Image, ImageDraw, ImageFont

    a = np.asarray(id_scores, dtype=np.float64).ravel()
    b = np.asarray(ood_scores, dtype=np.float64).ravel()
    both = np.concatenate([a[np.isfinite(a)], b[np.isfinite(b)]])
    lo, hi = (float(both.min()), float(both.max())) if both.size else (0.0, 1.0)
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, int(bins) + 1)
    dens = [np.histogram(s[np.isfinite(s)], edges)[0] / max(1, np.isfinite(s).sum()) for s in (a, b)]
    top = max(float(max(d.max() for d in dens)), 1e-12)

    left, right, head, foot = 50, 16, 28, 58
    pw, ph = width - left - right, height - head - foot
    canvas = np.full((height, width, 3), 255.0, dtype=np.float32)
    plot = canvas[head:head + ph, left:left + pw]
    cols = np.linspace(0, pw, int(bins) + 1).round().astype(int)
    for dens_k, color in zip(dens, (ID_COLOR, OOD_COLOR)):
        for j, v in enumerate(dens_k):
            h = int(round(v / top * (ph - 4)))
            if h > 0:
                region = plot[ph - h:, cols[j]:max(cols[j] + 1, cols[j + 1] - 1)]
                region[:] = 0.45 * region + 0.55 * color   # translucent: the overlap shows as a blend
    img = Image.fromarray(canvas.clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    axis = (60, 60, 60)
    draw.line([(left, head), (left, head + ph), (left + pw, head + ph)], fill=axis)
    draw.text((left, 8), title, fill=(0, 0, 0), font=font)
    draw.text((4, head), f"{top:.2f}", fill=axis, font=font)
    draw.text((4, head + ph - 10), "0", fill=axis, font=font)
    draw.text((left, head + ph + 4), f"{lo:.4g}", fill=axis, font=font)
    hi_text = f"{hi:.4g}"
    draw.text((left + pw - 7 * len(hi_text), head + ph + 4), hi_text, fill=axis, font=font)
    draw.text((left + pw // 2 - 40, head + ph + 4), "OOD score", fill=axis, font=font)
    y = height - 22
    for k, (label, n, color) in enumerate((("in-distribution", a.size, ID_COLOR), ("OOD", b.size, OOD_COLOR))):
        x0 = left + k * 220
        draw.rectangle([x0, y, x0 + 14, y + 12], fill=tuple(int(c) for c in color))
        draw.text((x0 + 20, y), f"{label} (n={n})", fill=(0, 0, 0), font=font)
    return np.asarray(img)


def save_histogram(path: str | Path, id_scores, ood_scores, title: str = "", bins: int = 40) -> Path:
    from PIL import Image

    path = Path(path)
    Image.fromarray(histogram_image(id_scores, ood_scores, title, bins)).save(path, format="PNG")
    return path
