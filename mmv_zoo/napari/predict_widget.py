"""Predict: a zoo entry with weights, a run folder or any BioImage.IO package, on image layers, in a
worker thread with progress and Cancel; the result is a Labels or Image layer with the input's scale."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from ..errors import DataError
from ..io.read import is_grey_as_colour
from ..settings.predict import Options
from .common import (
    RECENT_RUNS,
    SESSION,
    Cancelled,
    ErrorLine,
    Relay,
    add_result,
    fill_layer_list,
    follow_layers,
    frames,
    layer_channels,
    layer_list,
)


def entries_with_weights() -> list[str]:
    from ..catalog.listing import catalog

    return [row.entry for row in catalog() if row.weights != "train first"]


class PredictWidget(QWidget):
    """Source, input layers, the options that matter, Predict / Cancel and a progress bar."""

    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        self.source = QComboBox()
        self.source.setEditable(True)
        self.source.setToolTip("A zoo entry with weights, a run folder, or a BioImage.IO package (.zip)")
        self.inputs = layer_list("Image layers, one per channel of the model (or one RGB layer)", 90)
        self.tta = QCheckBox("test-time augmentation (flips)")
        self.probabilities = QCheckBox("probabilities instead of labels")
        self.threshold = QLineEdit()
        self.threshold.setPlaceholderText("default (argmax / the entry's)")
        self.direction = QComboBox()
        self.direction.addItems(["", "a2b", "b2a"])
        self.direction.setToolTip("CycleGAN runs only")
        self.trust = QCheckBox("trust the package's code (pytorch_state_dict)")
        self.run_button = QPushButton("Predict")
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.progress = QProgressBar()
        self.status = QLabel("")
        self.error = ErrorLine()

        file_button, folder_button = QPushButton("Package…"), QPushButton("Run folder…")
        file_button.clicked.connect(self._pick_package)
        folder_button.clicked.connect(self._pick_run)
        pick = QHBoxLayout()
        pick.addWidget(file_button)
        pick.addWidget(folder_button)
        form = QFormLayout()
        form.addRow("model", self.source)
        form.addRow("", _row(pick))
        form.addRow("input layers", self.inputs)
        form.addRow("threshold", self.threshold)
        form.addRow("direction", self.direction)
        buttons = QHBoxLayout()
        buttons.addWidget(self.run_button)
        buttons.addWidget(self.cancel_button)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        for w in (self.tta, self.probabilities, self.trust):
            layout.addWidget(w)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.status)
        layout.addWidget(self.error)
        layout.addStretch()

        self.relay = Relay()
        self.relay.progress.connect(self._on_progress)
        self.run_button.clicked.connect(self.start)
        self.cancel_button.clicked.connect(self.cancel)
        self._cancel = False
        self._cached: tuple[Any, Any] | None = None  # (key, predictor): a second prediction reuses the model
        self.worker: Any = None
        self.refresh_sources()
        self.refresh_layers()
        follow_layers(self.viewer, self.refresh_layers)
        SESSION.runs_changed.connect(self.refresh_sources)

    # ------------------------------------------------------------------ inputs

    def refresh_sources(self) -> None:
        current = self.source.currentText()
        self.source.clear()
        self.source.addItems([*RECENT_RUNS, *entries_with_weights()])
        if current:
            self.source.setCurrentText(current)

    def refresh_layers(self, *_: Any) -> None:
        from napari.layers import Image

        fill_layer_list(self.inputs, self.viewer, Image)

    def _pick_package(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "BioImage.IO package", "", "Packages (*.zip *.yaml)")
        if path:
            self.source.setCurrentText(path)

    def _pick_run(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Run folder")
        if path:
            self.source.setCurrentText(path)

    def options(self) -> Options:
        text = self.threshold.text().strip()
        try:
            threshold = float(text) if text else None
        except ValueError:
            raise DataError(f"threshold {text!r}: expected a number, e.g. 0.5") from None
        return Options.checked(tta=self.tta.isChecked(), probabilities=self.probabilities.isChecked(),
                               threshold=threshold, direction=self.direction.currentText() or None)

    # ------------------------------------------------------------------ running

    def start(self) -> Any:
        """Start predicting in a worker thread; returns the worker (None when the inputs are wrong)."""
        from napari.qt.threading import create_worker

        self.error.clear_error()
        source = self.source.currentText().strip()
        layers = [self.viewer.layers[item.text()] for item in self.inputs.selectedItems()]
        try:
            if not source:
                raise DataError("pick a model: a zoo entry with weights, a run folder or a package")
            if not layers:
                raise DataError("pick an image layer as the input")
            options = self.options()
        except Exception as e:
            self.error.show_error(e)
            return None
        key = (source, options.model_dump_json(), self.trust.isChecked())
        cached = self._cached[1] if self._cached is not None and self._cached[0] == key else None
        self._cancel = False
        self.progress.setValue(0)
        self.status.setText("loading the model…" if cached is None else "predicting…")
        self.run_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.worker = create_worker(self._predict, source, options, key, cached, layers, self.trust.isChecked(),
                                    _ignore_errors=True)
        self.worker.returned.connect(self._done)
        self.worker.errored.connect(self._failed)
        self.worker.finished.connect(self._finished)
        self.worker.start()
        return self.worker

    def cancel(self) -> None:
        self._cancel = True
        self.status.setText("cancelling…")

    def _predict(self, source: str, options: Options, key: Any, predictor: Any, layers: list[Any],
                 trust_code: bool) -> dict:
        """The worker thread's part: it reads no widget (Qt widgets belong to the GUI thread)."""
        if predictor is None:
            from ..predict.sources import open_predictor

            predictor = open_predictor(source, options=options, trust_code=trust_code)
        self._cached = (key, predictor)
        channels, lead = layer_channels(layers, predictor.spatial_dims)
        if len(channels) != predictor.in_channels:
            if predictor.in_channels == 1 and is_grey_as_colour(np.stack([c[(0,) * len(lead)] for c in channels])):
                channels = channels[:1]  # a grey image saved as RGB(A)
            else:
                raise DataError(f"the model takes {predictor.in_channels} channel(s), the input layers give "
                                f"{len(channels)}: pick one image layer per channel, in order")
        n = math.prod(lead)
        outputs, names = [], []
        for i, (_, x) in enumerate(frames(channels, lead)):
            if self._cancel:
                raise Cancelled

            def on_tile(done: int, total: int, i: int = i) -> None:
                if self._cancel:
                    raise Cancelled
                self.relay.progress.emit(i * total + done, n * total)

            if predictor.streams:
                y, names = predictor.predict(x, on_tile=on_tile)
            else:
                y, names = predictor(x)
                self.relay.progress.emit(i + 1, n)
            outputs.append(np.asarray(y))
        y = np.stack(outputs).reshape(*lead, *outputs[0].shape)
        return {"y": y, "names": names, "lead": len(lead), "like": layers[0], "source": source}

    def _on_progress(self, done: int, total: int) -> None:
        self.progress.setMaximum(max(total, 1))
        self.progress.setValue(done)

    def _done(self, result: dict) -> None:
        model = Path(result["source"]).name or result["source"]
        layer = add_result(self.viewer, result["y"], result["names"], result["like"],
                           f"{model}: {result['like'].name}", result["lead"])
        self.status.setText(f"added {layer.name if hasattr(layer, 'name') else model}")

    def _failed(self, e: BaseException) -> None:
        if isinstance(e, Cancelled):
            self.status.setText("cancelled: nothing added")
            self.progress.setValue(0)
            return
        self.status.setText("")
        self.error.show_error(e)

    def _finished(self) -> None:
        self.run_button.setEnabled(True)
        self.cancel_button.setEnabled(False)


def _row(layout: QHBoxLayout) -> QWidget:
    w = QWidget()
    w.setLayout(layout)
    layout.setContentsMargins(0, 0, 0, 0)
    return w
