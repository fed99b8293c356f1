"""What the widgets share: napari layers as model inputs and results as layers, the error line, a
signal relay from worker threads, and the runs trained in this session."""

from __future__ import annotations

from collections.abc import Iterator
from itertools import product
from pathlib import Path
from typing import Any

import numpy as np
from qtpy.QtCore import QObject, Signal
from qtpy.QtWidgets import QAbstractItemView, QLabel, QListWidget

from ..errors import DataError, MmvZooError

RECENT_RUNS: list[str] = []
"""Run folders trained (or resumed) in this napari session, newest first: Predict offers them."""


class Cancelled(Exception):  # noqa: N818 (a user's choice, not an error)
    """The user pressed Cancel; the worker stops at the next tile or frame."""


class Relay(QObject):
    """Signals emitted from a worker thread, delivered in the GUI thread."""

    progress = Signal(int, int)
    epoch = Signal(dict)


class Session(QObject):
    """Events between the widgets of one napari session."""

    runs_changed = Signal()
    """A run was trained, stopped or resumed (RECENT_RUNS changed)."""


SESSION = Session()


class ErrorLine(QLabel):
    """One red line naming the file and the field, as the CLI prints it; hidden when empty."""

    def __init__(self) -> None:
        super().__init__()
        self.setWordWrap(True)
        self.setStyleSheet("color: #e06c6c;")
        self.hide()

    def show_error(self, e: BaseException | str) -> None:
        self.setText(f"error: {message(e)}" if not isinstance(e, str) else e)
        self.show()

    def clear_error(self) -> None:
        self.setText("")
        self.hide()


def message(e: BaseException) -> str:
    """The CLI's one line for an error: our errors as they are, anything else with its type."""
    if isinstance(e, MmvZooError):
        return str(e)
    first = str(e).splitlines()[0] if str(e) else ""
    return f"{type(e).__name__}: {first}"[:400]


def layer_channels(layers: list[Any], dims: int) -> tuple[list[np.ndarray], tuple[int, ...]]:
    """The channels a model gets from image layers (one channel per layer, or the samples of an RGB
    layer), each of shape (*lead, [Z], Y, X), and the leading shape (planes and time points a 2D model
    takes one by one, time points a 3D model takes one by one)."""
    if not layers:
        raise DataError("pick an image layer as the input")
    channels: list[np.ndarray] = []
    for layer in layers:
        data = np.asarray(layer.data)
        if getattr(layer, "rgb", False):
            channels += [data[..., c] for c in range(data.shape[-1])]
        else:
            channels.append(data)
    shapes = {c.shape for c in channels}
    if len(shapes) > 1:
        raise DataError(f"input layers {[layer.name for layer in layers]}: shapes differ {sorted(shapes)}; "
                        "channels must have one shape")
    shape = channels[0].shape
    if len(shape) < dims:
        raise DataError(f"layer {layers[0].name!r}: {len(shape)}D, but the model is {dims}D")
    return channels, shape[: len(shape) - dims]


def frames(channels: list[np.ndarray], lead: tuple[int, ...]) -> Iterator[tuple[tuple[int, ...], np.ndarray]]:
    """(index into the leading axes, its (C, [Z], Y, X) image) for every plane or time point."""
    for index in product(*(range(n) for n in lead)):
        yield index, np.stack([c[index] for c in channels])


def add_result(viewer: Any, y: np.ndarray, names: list[str], like: Any, name: str, lead: int) -> Any:
    """A prediction (*lead, K, [Z], Y, X) (`lead` leading axes) as a layer with the input layer's scale
    and translate: one integer channel (class labels, instances, masks) as Labels, anything else as
    Image (one layer per channel, named after the channels)."""
    scale, translate = list(like.scale), list(like.translate)
    if y.shape[lead] == 1:
        one = np.take(y, 0, axis=lead)
        if np.issubdtype(one.dtype, np.integer):
            return viewer.add_labels(one, name=name, scale=scale, translate=translate)
        return viewer.add_image(one, name=name, scale=scale, translate=translate)
    return viewer.add_image(y, channel_axis=lead, name=[f"{name} {n}" for n in names], scale=scale,
                            translate=translate)


def layer_list(tip: str, height: int = 80) -> QListWidget:
    """A list of layers to pick from, several at a time (channels, pairs), in order."""
    w = QListWidget()
    w.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
    w.setToolTip(tip)
    w.setMaximumHeight(height)
    return w


def fill_layer_list(widget: QListWidget, viewer: Any, kind: type) -> None:
    """The viewer's layers of `kind` in `widget`, keeping what was picked (else picking the first)."""
    chosen = {item.text() for item in widget.selectedItems()}
    widget.clear()
    names = [layer.name for layer in viewer.layers if isinstance(layer, kind)]
    widget.addItems(names)
    for i, name in enumerate(names):
        if name in chosen or (not chosen and i == 0):
            widget.item(i).setSelected(True)


def follow_layers(viewer: Any, refresh: Any) -> None:
    """Call `refresh` whenever a layer is added to or removed from the viewer."""
    for event in (viewer.layers.events.inserted, viewer.layers.events.removed):
        event.connect(refresh)


def existing_dir(text: str, what: str) -> Path:
    path = Path(text).expanduser()
    if not text.strip() or not path.is_dir():
        raise DataError(f"{text or '(empty)'}: no such folder ({what})")
    return path
