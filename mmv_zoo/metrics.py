"""Scores of predictions against ground truth on numpy arrays, as the MMV_Im2Im paper reports them.

- regression: Pearson correlation, SSIM and PSNR (`regression_scores`);
- semantic segmentation: F1 (Dice) and IoU per class (`class_scores`, `confusion_matrix`);
- instance segmentation: average precision at an IoU threshold with one-to-one matching as StarDist
  defines it, AP = TP / (TP + FP + FN) (`match_instances`, `instance_scores`).

Arrays are (C, [Z], Y, X) or purely spatial; scores are computed over every element unless said.
Empty cases are defined, never NaN by accident:
- F1, IoU and AP of a class or of instances absent from both prediction and truth are 1 (nothing
  to find and nothing found is a perfect result; StarDist's `matching` returns 0 there); present in
  one only, 0.
- Pearson is NaN when either image is constant (the correlation is undefined); PSNR and SSIM are
  NaN when the truth is constant (no data range), and PSNR is +inf for identical images.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

AP_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
"""IoU thresholds 0.5, 0.55, ..., 0.95 of the mean AP (as in COCO and the EmbedSeg/StarDist papers)."""


def _same_shape(pred: np.ndarray, truth: np.ndarray) -> None:
    if pred.shape != truth.shape:
        raise ValueError(f"shapes differ: prediction {pred.shape}, truth {truth.shape}")


def safe_ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else 1.0


# ---- segmentation (foreground and per class)

def foreground_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """F1 (Dice) and IoU of the foreground (any non-zero value) of two label images."""
    p, t = np.asarray(pred) > 0, np.asarray(truth) > 0
    _same_shape(p, t)
    tp = float(np.logical_and(p, t).sum())
    denom = float(p.sum() + t.sum())
    union = float(np.logical_or(p, t).sum())
    return {"f1": 2 * tp / denom if denom else 1.0, "iou": tp / union if union else 1.0}


def as_labels(x: np.ndarray, what: str) -> np.ndarray:
    """Non-negative whole numbers as int64; ValueError for fractions or negative values."""
    x = np.asarray(x)
    if np.issubdtype(x.dtype, np.bool_):
        return x.astype(np.int64)
    if np.issubdtype(x.dtype, np.floating):
        if not np.isfinite(x).all() or not np.array_equal(x, np.round(x)):
            raise ValueError(f"{what} holds fractional values ({x.dtype}); labels must be whole numbers")
    elif not np.issubdtype(x.dtype, np.integer):
        raise ValueError(f"{what}: {x.dtype} is not a label type")
    if x.size and x.min() < 0:
        raise ValueError(f"{what} holds negative values ({x.min()}); labels must be >= 0")
    return x.astype(np.int64, copy=False)


def confusion_matrix(pred: np.ndarray, truth: np.ndarray, n_classes: int | None = None) -> np.ndarray:
    """(n, n) counts, rows = true class, columns = predicted class (one np.bincount)."""
    p, t = as_labels(pred, "prediction").ravel(), as_labels(truth, "truth").ravel()
    _same_shape(p, t)
    top = max(int(p.max(initial=0)), int(t.max(initial=0))) + 1
    n = max(top, n_classes or 0)
    return np.bincount(t * n + p, minlength=n * n).reshape(n, n)


def scores_from_confusion(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per class: tp, fp, fn, F1 (Dice) = 2TP / (2TP + FP + FN) and IoU = TP / (TP + FP + FN)."""
    tp = np.diag(cm).astype(np.float64)
    fp = cm.sum(0) - tp
    fn = cm.sum(1) - tp
    den_f1, den_iou = 2 * tp + fp + fn, tp + fp + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        f1 = np.where(den_f1 > 0, 2 * tp / den_f1, 1.0)
        iou = np.where(den_iou > 0, tp / den_iou, 1.0)
    return {"tp": tp, "fp": fp, "fn": fn, "f1": f1, "iou": iou}


def class_scores(pred: np.ndarray, truth: np.ndarray, n_classes: int | None = None) -> dict[str, np.ndarray]:
    """Per-class F1 and IoU (index = class id, 0 = background) of two class-label images."""
    return scores_from_confusion(confusion_matrix(pred, truth, n_classes))


# ---- instances

@dataclass
class Matching:
    """One-to-one matching of predicted to true instances at one IoU threshold."""

    threshold: float
    n_true: int
    n_pred: int
    tp: int
    matched_iou: float
    """Mean IoU of the matched pairs (NaN when none)."""
    pairs: np.ndarray
    """(tp, 2) label ids (true, predicted) of the matched pairs."""

    @property
    def fp(self) -> int:
        return self.n_pred - self.tp

    @property
    def fn(self) -> int:
        return self.n_true - self.tp

    @property
    def ap(self) -> float:
        """StarDist's `accuracy`: TP / (TP + FP + FN), the AP at this threshold."""
        return safe_ratio(self.tp, self.tp + self.fp + self.fn)

    @property
    def precision(self) -> float:
        return safe_ratio(self.tp, self.n_pred) if self.n_pred or self.n_true else 1.0

    @property
    def recall(self) -> float:
        return safe_ratio(self.tp, self.n_true) if self.n_true or self.n_pred else 1.0

    @property
    def f1(self) -> float:
        return safe_ratio(2 * self.tp, self.n_true + self.n_pred)


def _ids_and_index(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(object ids > 0, index per pixel into them or -1 for background, object sizes)."""
    flat = labels.ravel()
    top = int(flat.max(initial=0))
    if top <= 4 * flat.size + 1024:  # a lookup table: no sort
        sizes = np.bincount(flat, minlength=top + 1)
        ids = np.flatnonzero(sizes[1:]) + 1
        table = np.full(top + 1, -1, np.int64)
        table[ids] = np.arange(len(ids))
        return ids, table[flat], sizes[ids]
    ids, inverse, sizes = np.unique(flat, return_inverse=True, return_counts=True)
    if ids[0] == 0:
        return ids[1:], inverse.ravel() - 1, sizes[1:]
    return ids, inverse.ravel(), sizes


def instance_overlaps(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                    np.ndarray, np.ndarray]:
    """(true ids, predicted ids, true index, predicted index, IoU) of every overlapping pair, from
    the label-pair contingency table of the overlapping pixels (sparse: never n_true x n_pred)."""
    p, t = as_labels(pred, "prediction"), as_labels(truth, "truth")
    _same_shape(p, t)
    t_ids, t_idx, t_size = _ids_and_index(t)
    p_ids, p_idx, p_size = _ids_and_index(p)
    both = (t_idx >= 0) & (p_idx >= 0)
    codes = t_idx[both] * max(len(p_ids), 1) + p_idx[both]
    pair_codes, inter = np.unique(codes, return_counts=True)
    ti, pi = np.divmod(pair_codes, max(len(p_ids), 1))
    iou = inter / (t_size[ti] + p_size[pi] - inter)
    return t_ids, p_ids, ti, pi, iou


def _match(ti: np.ndarray, pi: np.ndarray, iou: np.ndarray, thr: float) -> np.ndarray:
    """Indices into the candidate pairs of an optimal one-to-one matching among pairs with IoU >= thr:
    the most matches, ties broken by the largest total IoU (StarDist's cost)."""
    cand = np.flatnonzero(iou >= thr)
    if len(cand) == 0:
        return cand
    ct, cp = ti[cand], pi[cand]
    if len(np.unique(ct)) == len(ct) and len(np.unique(cp)) == len(cp):
        return cand  # no object has two candidates (always so above IoU 0.5): the matching is all of them
    from scipy.optimize import linear_sum_assignment

    rows, r_inv = np.unique(ct, return_inverse=True)
    cols, c_inv = np.unique(cp, return_inverse=True)
    cost = np.zeros((len(rows), len(cols)))
    cost[r_inv, c_inv] = -1.0 - iou[cand] / (2 * len(cand))  # a match outweighs any sum of IoU tie-breaks
    r, c = linear_sum_assignment(cost)
    chosen = cost[r, c] < 0
    lookup = {(a, b): k for k, a, b in zip(cand, r_inv, c_inv, strict=True)}
    return np.array(sorted(lookup[(a, b)] for a, b in zip(r[chosen], c[chosen], strict=True)), np.int64)


def match_instances(pred: np.ndarray, truth: np.ndarray,
                    thresholds: tuple[float, ...] | list[float] = (0.5,)) -> list[Matching]:
    """One-to-one matchings of predicted to true instance labels (0 = background), one per IoU
    threshold; the IoUs are computed once. A pair may match only at IoU >= threshold."""
    t_ids, p_ids, ti, pi, iou = instance_overlaps(pred, truth)
    out = []
    for thr in thresholds:
        k = _match(ti, pi, iou, float(thr))
        pairs = np.stack([t_ids[ti[k]], p_ids[pi[k]]], axis=1) if len(k) else np.zeros((0, 2), np.int64)
        out.append(Matching(float(thr), len(t_ids), len(p_ids), len(k),
                            float(iou[k].mean()) if len(k) else float("nan"), pairs))
    return out


def average_precision(pred: np.ndarray, truth: np.ndarray, threshold: float = 0.5) -> float:
    """AP at one IoU threshold: TP / (TP + FP + FN) after one-to-one matching."""
    return match_instances(pred, truth, (threshold,))[0].ap


def instance_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """AP50, the mean AP over IoU 0.5:0.05:0.95, the foreground F1 and the counts at IoU 0.5."""
    matches = match_instances(pred, truth, AP_THRESHOLDS)
    m50 = matches[0]
    return {"ap50": m50.ap, "ap50_95": float(np.mean([m.ap for m in matches])),
            "f1_foreground": foreground_scores(pred, truth)["f1"], "n_true": m50.n_true, "n_pred": m50.n_pred,
            "tp50": m50.tp, "fp50": m50.fp, "fn50": m50.fn}


# ---- regression

def pearson(pred: np.ndarray, truth: np.ndarray) -> float:
    """Pearson correlation over all elements; NaN when either image is constant."""
    p, t = np.asarray(pred, np.float64).ravel(), np.asarray(truth, np.float64).ravel()
    _same_shape(p, t)
    p, t = p - p.mean(), t - t.mean()
    den = np.sqrt((p * p).sum() * (t * t).sum())
    return float((p * t).sum() / den) if den > 0 else float("nan")


def data_range(truth: np.ndarray) -> float:
    """The data range SSIM and PSNR use: max - min of the truth (the prediction's range is not used,
    so a prediction cannot improve its score by stretching its own range)."""
    t = np.asarray(truth)
    return float(t.max() - t.min()) if t.size else 0.0


def psnr(pred: np.ndarray, truth: np.ndarray, range_: float | None = None) -> float:
    """10 log10(range^2 / MSE) in dB, range = `data_range(truth)` unless given; +inf when identical."""
    p, t = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    _same_shape(p, t)
    r = data_range(t) if range_ is None else range_
    if r <= 0:
        return float("nan")
    mse = float(np.mean((p - t) ** 2))
    return float("inf") if mse == 0 else float(10 * np.log10(r * r / mse))


def ssim(pred: np.ndarray, truth: np.ndarray, range_: float | None = None, channel_axis: int | None = None) -> float:
    """Structural similarity (skimage.metrics.structural_similarity: 7-pixel uniform window, shrunk to
    the largest odd size that fits a small axis) over 2D or 3D spatial axes; with `channel_axis`, the
    mean over channels. data_range = `data_range(truth)` unless given; NaN when the truth is
    constant or an axis is shorter than 3."""
    from skimage.metrics import structural_similarity

    p, t = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    _same_shape(p, t)
    r = data_range(t) if range_ is None else range_
    spatial = [n for i, n in enumerate(t.shape) if channel_axis is None or i != channel_axis % t.ndim]
    win = min(7, min(spatial))
    win -= 1 - win % 2
    if r <= 0 or win < 3:
        return float("nan")
    return float(structural_similarity(t, p, data_range=r, win_size=win, channel_axis=channel_axis))


def affine_fit(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """`pred` mapped per channel by the least-squares gain and offset onto `truth` ((C, ...) arrays): for
    outputs in other units than their reference (a self-supervised denoiser's normalized values)."""
    p, t = np.asarray(pred, np.float64), np.asarray(truth, np.float64)
    _same_shape(p, t)
    out = np.empty_like(p)
    for c in range(p.shape[0]):
        x, y = p[c].ravel(), t[c].ravel()
        var = x.var()
        gain = ((x - x.mean()) * (y - y.mean())).mean() / var if var > 0 else 0.0
        out[c] = gain * (p[c] - x.mean()) + y.mean()
    return out


def regression_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Pearson, SSIM and PSNR of (C, [Z], Y, X) arrays (SSIM per channel, averaged)."""
    p, t = np.asarray(pred), np.asarray(truth)
    _same_shape(p, t)
    return {"pearson": pearson(p, t), "ssim": ssim(p, t, channel_axis=0 if t.ndim > 2 else None),
            "psnr": psnr(p, t)}


def otsu_foreground(image: np.ndarray) -> np.ndarray:
    """The classical baseline: foreground above Otsu's threshold."""
    from skimage.filters import threshold_otsu

    return np.asarray(image) > threshold_otsu(np.asarray(image))


TOP_FRACTION = 0.05
"""The most uncertain pixels `uncertainty_scores` looks at: 5 % of the image."""


def uncertainty_scores(uncertainty: np.ndarray, error: np.ndarray) -> dict[str, float]:
    """How well a per-pixel uncertainty map ranks a prediction's errors (both arrays of one shape).

    `error` is boolean (wrong pixels: segmentation) or an absolute error (regression).
    - `uncertainty_top5_ratio`: the mean error of the 5 % most uncertain pixels over the mean error of
      all pixels: 1 for an uninformative map, 20 when every one of them is wrong and 5 % of all are;
      NaN when the prediction has no error at all.
    - `uncertainty_auc` (boolean errors): the probability that a wrong pixel is more uncertain than a
      right one (ROC AUC; 0.5 uninformative, ties count half); NaN without both kinds of pixel.
    - `uncertainty_spearman` (continuous errors): rank correlation of uncertainty and absolute error.
    """
    from scipy.stats import rankdata

    u = np.asarray(uncertainty, np.float64).ravel()
    e = np.asarray(error).ravel()
    if u.shape != e.shape:
        raise ValueError(f"uncertainty of {u.size} values for {e.size} errors")
    k = max(1, int(round(TOP_FRACTION * u.size)))
    cut = np.partition(u, u.size - k)[u.size - k]  # the k-th largest uncertainty
    above, tied = u > cut, u == cut
    e_float = e.astype(np.float64)
    top_error = (e_float[above].sum() + (k - int(above.sum())) * e_float[tied].mean()) / k  # ties share pro rata
    overall = float(e_float.mean())
    ratio = float(top_error) / overall if overall > 0 else float("nan")
    if e.dtype == bool:
        n_wrong = int(e.sum())
        n_right = e.size - n_wrong
        if n_wrong == 0 or n_right == 0:
            return {"uncertainty_top5_ratio": ratio, "uncertainty_auc": float("nan")}
        ranks = rankdata(u)
        auc = (float(ranks[e].sum()) - n_wrong * (n_wrong + 1) / 2) / (n_wrong * n_right)
        return {"uncertainty_top5_ratio": ratio, "uncertainty_auc": auc}
    if np.ptp(u) == 0 or np.ptp(e) == 0:
        return {"uncertainty_top5_ratio": ratio, "uncertainty_spearman": float("nan")}
    return {"uncertainty_top5_ratio": ratio,
            "uncertainty_spearman": float(np.corrcoef(rankdata(u), rankdata(e))[0, 1])}
