"""Zoo: the catalog as a searchable table; an entry's card (description, citations, data, metrics
next to the paper's, weights) and, for entries with bundled data, its sample images opened in napari."""

from __future__ import annotations

from typing import Any

from qtpy.QtWidgets import (
    QAbstractItemView,
    QHBoxLayout,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .common import ErrorLine


class ZooWidget(QWidget):
    def __init__(self, napari_viewer: Any) -> None:
        super().__init__()
        from ..catalog.listing import COLUMNS, catalog

        self.viewer = napari_viewer
        self.rows = catalog()
        self.search = QLineEdit()
        self.search.setPlaceholderText("search: task, dims, framework, name… (all words must match)")
        self.table = QTableWidget(len(self.rows), len(COLUMNS))
        self.table.setHorizontalHeaderLabels(list(COLUMNS))
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        for r, row in enumerate(self.rows):
            for c, text in enumerate(row.cells()):
                item = QTableWidgetItem(text)
                item.setToolTip(row.name)
                self.table.setItem(r, c, item)
        self.table.resizeColumnsToContents()
        self.card = QPlainTextEdit()
        self.card.setReadOnly(True)
        self.card.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
        self.setMinimumWidth(560)
        self.sample_button = QPushButton("Open sample")
        self.sample_button.setEnabled(False)
        self.error = ErrorLine()
        buttons = QHBoxLayout()
        buttons.addWidget(self.sample_button)
        buttons.addStretch()
        layout = QVBoxLayout(self)
        layout.addWidget(self.search)
        layout.addWidget(self.table, 3)
        layout.addWidget(self.card, 2)
        layout.addLayout(buttons)
        layout.addWidget(self.error)
        self.search.textChanged.connect(self.filter)
        self.table.itemSelectionChanged.connect(self.show_card)
        self.sample_button.clicked.connect(self.open_sample)

    def filter(self, text: str) -> None:
        words = text.lower().split()
        for r, row in enumerate(self.rows):
            hay = " ".join([*row.cells(), row.name]).lower()
            self.table.setRowHidden(r, not all(w in hay for w in words))

    def visible_entries(self) -> list[str]:
        return [row.entry for r, row in enumerate(self.rows) if not self.table.isRowHidden(r)]

    def selected(self) -> str | None:
        rows = {i.row() for i in self.table.selectedItems()}
        return self.rows[rows.pop()].entry if rows else None

    def select(self, entry: str) -> None:
        r = [row.entry for row in self.rows].index(entry)
        self.table.selectRow(r)
        self.table.scrollToItem(self.table.item(r, 0))

    def show_card(self) -> None:
        from ..catalog.listing import bundled_data, card
        from ..entry import load_entry

        self.error.clear_error()
        slug = self.selected()
        if slug is None:
            return
        try:
            entry = load_entry(slug)
        except Exception as e:
            self.error.show_error(e)
            return
        self.card.setPlainText(card(entry, slug))
        self.sample_button.setEnabled(bool(bundled_data(entry)))

    def open_sample(self) -> list[Any]:
        """The first image of the entry's bundled data (the held-back one when there is one) and its
        target, if the data has targets, as layers."""
        from ..catalog.listing import PACKAGE_PARENT, bundled_data
        from ..entry import load_entry
        from ..io.read import is_image, read_image

        slug = self.selected()
        if slug is None:
            return []
        entry = load_entry(slug)
        layout, dims, added = entry.mmv.data.layout, entry.spatial_dims, []
        for folder in bundled_data(entry):
            root = PACKAGE_PARENT / folder
            for base in (root.parent / "holdout", root):
                source = base / layout.source
                images = sorted(p for p in source.iterdir() if is_image(p)) if source.is_dir() else []
                if not images:
                    continue
                image = read_image(images[0], dims)
                scale = [image.pixel_sizes.get(a) or 1.0 for a in ("z", "y", "x")[3 - dims:]]
                added.append(self.viewer.add_image(image.data[0] if image.data.shape[0] == 1 else image.data,
                                                   name=f"{slug} {images[0].name}", scale=scale,
                                                   channel_axis=None if image.data.shape[0] == 1 else 0))
                target = base / getattr(layout, "target", "") / images[0].name
                if getattr(layout, "target", None) and target.is_file():
                    data = read_image(target, dims).data[0]
                    kind = self.viewer.add_labels if entry.mmv.task != "regression" else self.viewer.add_image
                    added.append(kind(data, name=f"{slug} {images[0].name} target", scale=scale))
                return added
        return added
