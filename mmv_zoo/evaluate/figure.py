"""The evaluation figure: one row per image (the first few), columns input | prediction | truth |
errors; 3D images show their middle Z plane. Drawn with matplotlib's Agg canvas (no pyplot, no
global backend change) and written under a temporary name, then renamed."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..io.write import temporary_path

GOLDEN = np.array([0.6180339887, 0.3819660113, 0.7548776662])


def _plane(x: np.ndarray) -> np.ndarray:
    """(C, [Z], Y, X) -> channel 0's (Y, X) plane (the middle one in 3D)."""
    x = np.asarray(x)[0]
    return x[x.shape[0] // 2] if x.ndim == 3 else x


def label_colors(lab: np.ndarray) -> np.ndarray:
    """Distinct-looking RGB colours per label id (deterministic), black background."""
    rgb = (lab[..., None].astype(np.float64) * GOLDEN) % 1.0 * 0.7 + 0.3
    rgb[lab == 0] = 0
    return rgb


def _error_rgb(red: np.ndarray, blue: np.ndarray, gray: np.ndarray, yellow: np.ndarray | None = None) -> np.ndarray:
    rgb = np.zeros((*red.shape, 3))
    rgb[gray] = 0.55
    rgb[red] = (0.95, 0.15, 0.1)
    rgb[blue] = (0.15, 0.35, 1.0)
    rgb[red & blue] = (0.8, 0.2, 0.9)  # a false object over a missed one
    if yellow is not None:
        rgb[yellow] = (1.0, 0.85, 0.1)
    return rgb


def panel(task: str, spec: Any, name: str, image: np.ndarray, pred: np.ndarray, truth: np.ndarray,
          matched: np.ndarray | None, scores: dict[str, float]) -> tuple[Any, ...]:
    """(name, input, prediction, truth, errors, caption, error caption) for one row, as 2D planes."""
    inp = _plane(image).astype(np.float64)
    if task == "regression":
        from ..transforms.normalize import normalize

        t = normalize(truth, spec.target_norm) if spec.target_norm is not None else truth
        p, t = _plane(pred).astype(np.float64), _plane(t).astype(np.float64)
        caption = f"Pearson {scores['pearson']:.3f}  SSIM {scores['ssim']:.3f}  PSNR {scores['psnr']:.1f}"
        return name, inp, p, t, np.abs(p - t), caption, "|prediction - truth|"
    p, t = _plane(pred).astype(np.int64), _plane(truth).astype(np.int64)
    if task == "segmentation":
        if spec.labels == "foreground":
            t = (t > 0).astype(np.int64)
        err = _error_rgb(red=(p > 0) & (t == 0), blue=(t > 0) & (p == 0), gray=(p > 0) & (p == t),
                         yellow=(p > 0) & (t > 0) & (p != t))
        first = next(iter(scores))
        return (name, inp, p, t, err, f"{first} {scores[first]:.3f}",
                "red: false, blue: missed, yellow: wrong class")
    pairs = matched if matched is not None else np.zeros((0, 2), np.int64)
    fp = (p > 0) & ~np.isin(p, pairs[:, 1])
    fn = (t > 0) & ~np.isin(t, pairs[:, 0])
    err = _error_rgb(red=fp, blue=fn, gray=(p > 0) & ~fp)
    return (name, inp, label_colors(p), label_colors(t), err, f"AP50 {scores['ap50']:.3f}  "
            f"AP50:95 {scores['ap50_95']:.3f}", "IoU 0.5: red false, blue missed, purple both")


def write_figure(path: Path, task: str, panels: list[tuple[Any, ...]], title: str) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = max(1, len(panels))
    fig = Figure(figsize=(12, 3.2 * rows + 0.4))
    FigureCanvasAgg(fig)
    axes = fig.subplots(rows, 4, squeeze=False)
    label_cmap = "magma" if task == "segmentation" else "gray"
    for r, (name, inp, p, t, err, caption, err_caption) in enumerate(panels):
        lo, hi = np.percentile(inp, (1, 99.8)) if inp.size else (0, 1)
        axes[r, 0].imshow(inp, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1)
        axes[r, 0].set_title(f"{name}: input", fontsize=9)
        if task == "regression":
            vmin, vmax = float(min(p.min(), t.min())), float(max(p.max(), t.max()))
            axes[r, 1].imshow(p, cmap="gray", vmin=vmin, vmax=vmax)
            axes[r, 2].imshow(t, cmap="gray", vmin=vmin, vmax=vmax)
            axes[r, 3].imshow(err, cmap="inferno")
        else:
            top = max(1, int(max(np.max(p), np.max(t)))) if p.ndim == 2 else None
            axes[r, 1].imshow(p, cmap=label_cmap, vmin=0, vmax=top, interpolation="nearest")
            axes[r, 2].imshow(t, cmap=label_cmap, vmin=0, vmax=top, interpolation="nearest")
            axes[r, 3].imshow(err, interpolation="nearest")
        axes[r, 1].set_title(f"prediction  {caption}", fontsize=9)
        axes[r, 2].set_title("truth", fontsize=9)
        axes[r, 3].set_title(err_caption, fontsize=8)
        for ax in axes[r]:
            ax.axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    tmp = temporary_path(path)
    try:
        fig.savefig(tmp, format="png", dpi=80)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
