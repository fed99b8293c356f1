"""Demo report: figure (input | prediction | ground truth | Otsu) and foreground F1/IoU of the trained
model against an Otsu threshold on the held-back image. Used by `make demo`."""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from mmv_zoo.io.read import read_image  # noqa: E402
from mmv_zoo.metrics import foreground_scores, otsu_foreground  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--image", type=Path, required=True)
    ap.add_argument("--truth", type=Path, required=True)
    ap.add_argument("--prediction", type=Path, required=True)
    ap.add_argument("--bundled", type=Path, default=None,
                    help="Prediction of the model shipped with mmv_zoo (mmv-zoo predict nuclei_semseg_2d ...).")
    ap.add_argument("--figure", type=Path, required=True)
    ap.add_argument("--min-f1", type=float, default=0.0,
                    help="Exit 1 when the trained model's foreground F1 is below this (CI uses 0.95).")
    args = ap.parse_args()

    image = read_image(args.image, 2).data[0]
    truth = read_image(args.truth, 2).data[0] > 0
    pred = read_image(args.prediction, 2).data[0] > 0
    otsu = otsu_foreground(image)
    ours, base = foreground_scores(pred, truth), foreground_scores(otsu, truth)
    bundled = read_image(args.bundled, 2).data[0] > 0 if args.bundled else None
    shipped = foreground_scores(bundled, truth) if bundled is not None else None

    panels = [("input", image, "gray"), (f"mmv_zoo  F1 {ours['f1']:.3f}", pred, "magma"),
              ("ground truth", truth, "magma"), (f"Otsu  F1 {base['f1']:.3f}", otsu, "magma")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 4.3))
    for ax, (title, img, cmap) in zip(axes, panels, strict=True):
        ax.imshow(np.asarray(img, dtype=float), cmap=cmap)
        ax.set_title(title)
        ax.axis("off")
    fig.suptitle(f"nuclei_semseg_2d on held-back {args.image.name}")
    fig.tight_layout()
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure, dpi=90)

    print(f"\nheld-back image: {args.image}")
    print(f"{'method':<22}{'foreground F1':>15}{'IoU':>8}")
    print(f"{'mmv_zoo (trained)':<22}{ours['f1']:>15.4f}{ours['iou']:>8.4f}")
    if shipped is not None:
        print(f"{'mmv_zoo (shipped)':<22}{shipped['f1']:>15.4f}{shipped['iou']:>8.4f}")
    print(f"{'Otsu threshold':<22}{base['f1']:>15.4f}{base['iou']:>8.4f}")
    print(f"figure: {args.figure.resolve()}")
    if ours["f1"] < base["f1"]:
        print("WARNING: the trained model scored below the Otsu baseline")
    if ours["f1"] < args.min_f1:
        raise SystemExit(f"foreground F1 {ours['f1']:.4f} is below the required {args.min_f1}")


if __name__ == "__main__":
    main()
