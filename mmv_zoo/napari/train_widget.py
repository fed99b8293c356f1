"""Train: an entry (bundled, or a new one from a template as `mmv-zoo new` makes it) on a data folder
or on pairs of image and label layers, with a live loss curve; Cancel leaves a resumable run, Resume
continues one, Export writes its BioImage.IO package, and Predict offers the new run."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QLineEdit,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QVBoxLayout,
    QWidget,
)

from ..errors import DataError
from .common import RECENT_RUNS, SESSION, ErrorLine, Relay, existing_dir, fill_layer_list, follow_layers, layer_list


class TrainWidget(QWidget):
    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        self.viewer = napari_viewer
        from ..entry import bundled_entries

        self.entry = QComboBox()
        self.entry.setEditable(True)
        self.entry.addItems(bundled_entries())
        self.entry.setCurrentText("nuclei_semseg_2d")
        new_button = QPushButton("New entry from this one…")
        new_button.clicked.connect(self._new_entry)
        self.from_folder, self.from_layers = QRadioButton("data folder"), QRadioButton("image and label layers")
        group = QButtonGroup(self)
        group.addButton(self.from_folder)
        group.addButton(self.from_layers)
        self.from_layers.setChecked(True)
        self.folder = QLineEdit()
        self.folder.setPlaceholderText("laid out as the entry says (e.g. images/ and labels/)")
        browse = QPushButton("…")
        browse.clicked.connect(lambda: self._pick_dir(self.folder, "Training data folder"))
        self.images = layer_list("image layers (sources), in order", 70)
        self.labels = layer_list("label layers (targets), in the same order", 70)
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 100000)
        self.epochs.setValue(10)
        self.out = QLineEdit("runs")
        self.train_button, self.cancel_button = QPushButton("Train"), QPushButton("Cancel")
        self.resume_button, self.export_button = QPushButton("Resume a run…"), QPushButton("Export package")
        self.cancel_button.setEnabled(False)
        self.export_button.setEnabled(False)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        self.error = ErrorLine()
        self.figure, self.axes, self.canvas = _loss_plot()

        form = QFormLayout()
        form.addRow("entry", self.entry)
        form.addRow("", new_button)
        form.addRow("data", self.from_layers)
        form.addRow("", self.from_folder)
        folder_row = QHBoxLayout()
        folder_row.addWidget(self.folder)
        folder_row.addWidget(browse)
        form.addRow("folder", folder_row)
        form.addRow("images", self.images)
        form.addRow("labels", self.labels)
        form.addRow("epochs", self.epochs)
        form.addRow("runs folder", self.out)
        buttons = QHBoxLayout()
        for b in (self.train_button, self.cancel_button, self.resume_button, self.export_button):
            buttons.addWidget(b)
        layout = QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.canvas)
        layout.addWidget(self.status)
        layout.addWidget(self.error)

        self.run_button = self.train_button  # what the tests press and wait on
        self.relay = Relay()
        self.relay.epoch.connect(self._on_epoch)
        self.train_button.clicked.connect(lambda: self.start())
        self.resume_button.clicked.connect(self._pick_resume)
        self.cancel_button.clicked.connect(self.cancel)
        self.export_button.clicked.connect(self.export)
        self.stop: Any = None
        self.worker: Any = None
        self.run_folder: Path | None = None
        self.history: list[dict] = []
        self.refresh_layers()
        follow_layers(self.viewer, self.refresh_layers)

    # ------------------------------------------------------------------ inputs

    def refresh_layers(self, *_: Any) -> None:
        from napari.layers import Image, Labels

        fill_layer_list(self.images, self.viewer, Image)
        fill_layer_list(self.labels, self.viewer, Labels)

    def _pick_dir(self, field: QLineEdit, title: str) -> None:
        path = QFileDialog.getExistingDirectory(self, title)
        if path:
            field.setText(path)
            if field is self.folder:
                self.from_folder.setChecked(True)

    def _new_entry(self) -> None:
        from ..catalog.scaffold import new_entry

        name, ok = QInputDialog.getText(self, "New entry", "name (letters, digits, _ and -):")
        if not ok or not name:
            return
        zoo = QFileDialog.getExistingDirectory(self, "Folder for your entries (your zoo)")
        if not zoo:
            return
        try:
            made = new_entry(name, self.entry.currentText(), Path(zoo))
        except Exception as e:
            self.error.show_error(e)
            return
        self.entry.setCurrentText(str(made.folder / "rdf.yaml"))
        self.status.setText(f"new entry {made.folder}: edit its rdf.yaml, then train")

    def layer_data(self, entry: Any, out: Path) -> Path:
        """The picked image/label layer pairs written as TIFFs in the entry's paired-folders layout."""
        import tifffile

        layout = entry.mmv.data.layout
        if layout.layout != "paired_folders":
            raise DataError(f"{entry.source}: data.layout is {layout.layout}; training from layers needs "
                            "paired_folders (give a data folder instead)")
        images = [self.viewer.layers[i.text()] for i in self.images.selectedItems()]
        labels = [self.viewer.layers[i.text()] for i in self.labels.selectedItems()]
        if not images or len(images) != len(labels):
            raise DataError(f"pick as many label layers as image layers ({len(images)} image(s), "
                            f"{len(labels)} label layer(s))")
        root = out / "_layer_data" / f"{entry.slug}-{time.strftime('%Y%m%d-%H%M%S')}"
        for folder in (layout.source, layout.target):
            (root / folder).mkdir(parents=True, exist_ok=True)
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            if tuple(image.data.shape) != tuple(label.data.shape):
                raise DataError(f"layers {image.name!r} {tuple(image.data.shape)} and {label.name!r} "
                                f"{tuple(label.data.shape)}: an image and its labels need one shape")
            safe = re.sub(r"[^\w.-]+", "_", image.name)
            name = f"{i:02d}_{safe}.tif"
            tifffile.imwrite(root / layout.source / name, np.asarray(image.data))
            tifffile.imwrite(root / layout.target / name, np.asarray(label.data))
        return root

    # ------------------------------------------------------------------ running

    def start(self, resume: Path | None = None) -> Any:
        """Train (or resume `resume`) in a worker thread; returns the worker, None on a wrong input."""
        from napari.qt.threading import create_worker

        from ..entry import load_entry

        self.error.clear_error()
        out = Path(self.out.text().strip() or "runs")
        try:
            if resume is None:
                entry = load_entry(self.entry.currentText().strip(), [f"training.max_epochs={self.epochs.value()}"])
                if self.from_folder.isChecked():
                    data = existing_dir(self.folder.text(), "the training data")
                else:
                    data = self.layer_data(entry, out)
            else:
                entry, data = None, None
        except Exception as e:
            self.error.show_error(e)
            return None
        from ..training.callbacks import StopRequest

        self.stop = StopRequest()
        self.history = []
        self._draw()
        self.status.setText("training…" if resume is None else f"resuming {resume}…")
        self.train_button.setEnabled(False)
        self.resume_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        callbacks = [_epoch_relay(self.relay), self.stop]
        self.worker = create_worker(self._train, entry, data, out, resume, callbacks, _ignore_errors=True)
        self.worker.returned.connect(self._done)
        self.worker.errored.connect(self._failed)
        self.worker.finished.connect(self._finished)
        self.worker.start()
        return self.worker

    def _train(self, entry: Any, data: Path | None, out: Path, resume: Path | None, callbacks: list) -> Any:
        from ..training.train import resume as resume_run
        from ..training.train import train

        if resume is not None:
            return resume_run(resume, progress=False, callbacks=callbacks)
        return train(entry, data, out, progress=False, callbacks=callbacks)

    def cancel(self) -> None:
        if self.stop is not None:
            self.stop.request()
            self.status.setText("stopping after this batch…")

    def _pick_resume(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Run folder to resume")
        if path:
            self.start(resume=Path(path))

    def _on_epoch(self, row: dict) -> None:
        self.history.append(row)
        self._draw()
        shown = "  ".join(f"{k} {v:.4f}" for k, v in row.items() if k not in ("epoch", "steps"))
        self.status.setText(f"epoch {row['epoch']}  steps {row['steps']}  {shown}")

    def _draw(self) -> None:
        self.axes.clear()
        for key in ("train_loss", "val_loss"):
            points = [(r["epoch"], r[key]) for r in self.history if key in r]
            if points:
                self.axes.plot(*zip(*points, strict=True), marker="o", label=key)
        self.axes.set_xlabel("epoch")
        self.axes.set_ylabel("loss")
        if self.history:
            self.axes.legend(loc="upper right")
        self.figure.tight_layout()
        self.canvas.draw_idle()

    def _done(self, result: Any) -> None:
        self._remember(result.folder)
        score = "n/a" if result.best_score is None else f"{result.best_score:.4f}"
        self.status.setText(f"trained in {result.seconds:.0f} s: {result.folder} (best {score}); "
                            "Predict offers it, Export packages it")

    def _failed(self, e: BaseException) -> None:
        from ..training.callbacks import TrainingStopped

        if isinstance(e, TrainingStopped):
            self._remember(Path(str(e).split(":", 1)[0]))
            self.status.setText(f"stopped: {e}".replace("mmv-zoo train --resume", "Resume a run… or mmv-zoo "
                                                                               "train --resume"))
            return
        self.status.setText("")
        self.error.show_error(e)

    def _finished(self) -> None:
        self.train_button.setEnabled(True)
        self.resume_button.setEnabled(True)
        self.cancel_button.setEnabled(False)

    def _remember(self, folder: Path) -> None:
        self.run_folder = folder
        self.export_button.setEnabled(True)
        if str(folder) in RECENT_RUNS:
            RECENT_RUNS.remove(str(folder))
        RECENT_RUNS.insert(0, str(folder))
        SESSION.runs_changed.emit()

    def export(self) -> Path | None:
        from ..export.package import export_package

        if self.run_folder is None:
            return None
        out = self.run_folder / f"{self.run_folder.parent.name}.zip"
        try:
            export_package(self.run_folder, out, overwrite=True)
        except Exception as e:
            self.error.show_error(e)
            return None
        self.status.setText(f"exported {out}")
        return out


def _loss_plot() -> tuple[Any, Any, Any]:
    from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4, 2.4), dpi=90)
    axes = figure.add_subplot(111)
    canvas = FigureCanvasQTAgg(figure)
    canvas.setMinimumHeight(180)
    return figure, axes, canvas


def _epoch_relay(relay: Relay) -> Any:
    """A Lightning callback sending each epoch's losses to the widget (from the worker thread)."""
    import pytorch_lightning as pl

    class EpochRelay(pl.Callback):
        def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
            row: dict[str, float] = {"epoch": trainer.current_epoch + 1, "steps": trainer.global_step}
            for key in ("train_loss", "val_loss", "val_metric"):
                if key in trainer.callback_metrics:
                    row[key] = float(trainer.callback_metrics[key])
            relay.epoch.emit(row)

    return EpochRelay()

