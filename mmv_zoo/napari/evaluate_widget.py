"""Evaluate: a prediction layer against a ground-truth layer with the task's metrics (those `mmv-zoo
evaluate` reports), as a table."""

from __future__ import annotations

from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QComboBox,
    QFormLayout,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from ..errors import DataError
from .common import ErrorLine, follow_layers

TASKS = ("segmentation", "instance", "regression")
MAX_CLASSES = 16
"""Segmentation layers with label values up to this are scored per class too."""


def layer_scores(task: str, pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """The task's metrics of two layers' data: foreground and per-class F1/IoU (segmentation), AP and
    counts (instance), Pearson/SSIM/PSNR (regression)."""
    from ..metrics import class_scores, foreground_scores, instance_scores, regression_scores

    if pred.shape != truth.shape:
        raise DataError(f"prediction {pred.shape} and ground truth {truth.shape}: the layers need one shape")
    if task == "instance":
        return {k: float(v) for k, v in instance_scores(pred, truth).items()}
    if task == "regression":
        return regression_scores(pred[None].astype(np.float32), truth[None].astype(np.float32))
    if not (np.issubdtype(pred.dtype, np.integer) or np.issubdtype(pred.dtype, np.bool_)):
        raise DataError("segmentation: the prediction layer holds no labels (a probability image?); "
                        "predict without 'probabilities', or pick the Labels layer")
    out = {f"foreground {k}": v for k, v in foreground_scores(pred, truth).items()}
    top = int(max(pred.max(initial=0), truth.max(initial=0)))
    if 2 <= top <= MAX_CLASSES:  # class labels; more values are instance ids, scored as foreground
        per_class = class_scores(pred.astype(np.int64), truth.astype(np.int64), top + 1)
        for c, (f1, iou) in enumerate(zip(per_class["f1"], per_class["iou"], strict=True)):
            out[f"class {c} f1"], out[f"class {c} iou"] = float(f1), float(iou)
    return out


class EvaluateWidget(QWidget):
    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.prediction, self.truth = QComboBox(), QComboBox()
        self.task = QComboBox()
        self.task.addItems(TASKS)
        self.run_button = QPushButton("Evaluate")
        self.table = QTableWidget(0, 2)
        self.table.setHorizontalHeaderLabels(["metric", "value"])
        self.table.verticalHeader().setVisible(False)
        self.error = ErrorLine()
        form = QFormLayout()
        form.addRow("prediction", self.prediction)
        form.addRow("ground truth", self.truth)
        form.addRow("task", self.task)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addWidget(self.run_button)
        layout.addWidget(self.table)
        layout.addWidget(self.error)
        self.run_button.clicked.connect(self.evaluate)
        self.refresh_layers()
        follow_layers(self.viewer, self.refresh_layers)

    def refresh_layers(self, *_: Any) -> None:
        from napari.layers import Image, Labels

        names = [layer.name for layer in self.viewer.layers if isinstance(layer, Image | Labels)]
        for combo in (self.prediction, self.truth):
            current = combo.currentText()
            combo.clear()
            combo.addItems(names)
            if current in names:
                combo.setCurrentText(current)
        labels = [layer.name for layer in self.viewer.layers if isinstance(layer, Labels)]
        if len(labels) >= 2 and self.prediction.currentText() == self.truth.currentText():
            self.truth.setCurrentText(labels[0])  # the first labels (e.g. the sample's), the newest predicted
            self.prediction.setCurrentText(labels[-1])

    def evaluate(self) -> dict[str, float] | None:
        self.error.clear_error()
        try:
            pred = np.asarray(self.viewer.layers[self.prediction.currentText()].data)
            truth = np.asarray(self.viewer.layers[self.truth.currentText()].data)
            scores = layer_scores(self.task.currentText(), pred, truth)
        except KeyError:
            self.error.show_error("error: pick a prediction layer and a ground-truth layer")
            return None
        except Exception as e:
            self.error.show_error(e)
            return None
        self.table.setRowCount(len(scores))
        for r, (k, v) in enumerate(scores.items()):
            self.table.setItem(r, 0, QTableWidgetItem(k))
            self.table.setItem(r, 1, QTableWidgetItem(f"{v:.4f}" if isinstance(v, float) else str(v)))
        self.table.resizeColumnsToContents()
        return scores
