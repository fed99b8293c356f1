"""Plots of a run: the loss curves and the validation metric per epoch (`loss_curve.png`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_metrics(metrics_csv: Path, png: Path, metric_name: str = "val_metric") -> Path | None:
    """Loss curves (train and validation; a GAN's generator and discriminator losses) and the
    validation metric per epoch."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series: dict[str, list[tuple[float, float]]] = {}
    with metrics_csv.open() as f:
        for row in csv.DictReader(f):
            for key in ("train_loss", "train_loss_g", "train_loss_d", "val_loss", "val_metric"):
                if row.get(key):
                    series.setdefault(key, []).append((float(row["epoch"]), float(row[key])))
    if not series:
        return None
    if "train_loss_d" in series:  # a GAN: generator, discriminator and validation on panels of their own
        fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
        for ax, key, title in zip(axes[:2], ("train_loss_g", "train_loss_d"), ("generator", "discriminator"),
                                  strict=True):
            if key in series:
                ax.plot(*zip(*series[key], strict=True), marker=".", color="tab:blue" if key[-1] == "g" else "tab:red")
            ax.set_title(f"{title} ({key})", fontsize=10)
            ax.set_xlabel("epoch")
        _loss_and_metric(axes[2], series, ("val_loss",), metric_name)
    else:
        fig, ax = plt.subplots(figsize=(6, 4))
        _loss_and_metric(ax, series, ("train_loss", "val_loss"), metric_name)
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png


def _loss_and_metric(ax: Any, series: dict[str, list[tuple[float, float]]], keys: tuple[str, ...],
                     metric_name: str) -> None:
    """Loss curves on `ax`, the validation metric on a twin axis, one legend."""
    lines = []
    for key in keys:
        if key in series:
            lines += ax.plot(*zip(*series[key], strict=True), label=key, marker=".")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if "val_metric" in series:
        ax2 = ax.twinx()
        lines += ax2.plot(*zip(*series["val_metric"], strict=True), color="tab:green", label=metric_name,
                          marker=".")
        ax2.set_ylabel(metric_name)
    ax.legend(lines, [line.get_label() for line in lines], loc="center right")
