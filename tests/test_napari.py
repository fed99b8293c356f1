"""The napari plugin as a person uses it: the real viewer (napari's `make_napari_viewer`, pytest-qt),
the widgets' own buttons, models run in worker threads. `make test` runs these under Xvfb; without a
display they are skipped with that reason. Screenshots of each widget go to MMV_ZOO_SCREENSHOTS when
it is set (`make screenshots` writes docs/napari/)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("napari", reason="the napari extra is not installed (pip install 'mmv_zoo[napari]')")
pytest.importorskip("pytestqt", reason="pytest-qt is not installed")
if not os.environ.get("DISPLAY") and os.environ.get("QT_QPA_PLATFORM") != "offscreen":
    pytest.skip("no display: run under xvfb-run (make test does)", allow_module_level=True)

from mmv_zoo.metrics import foreground_scores  # noqa: E402
from mmv_zoo.napari.predict_widget import PredictWidget  # noqa: E402
from mmv_zoo.napari.samples import bbbc007  # noqa: E402

TIMEOUT_MS = 300_000


def screenshot(widget, name: str, tmp_path: Path) -> Path:
    """Save the widget as the viewer shows it; the picture must not be blank."""
    folder = Path(os.environ.get("MMV_ZOO_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    widget.grab().save(str(path))
    from PIL import Image

    pixels = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
    assert pixels.shape[0] > 50 and pixels.shape[1] > 50 and pixels.std() > 5, (name, pixels.shape)
    return path


def open_sample(viewer) -> tuple[object, object]:
    for data, meta, kind in bbbc007():
        getattr(viewer, f"add_{kind}")(data, **meta)
    return viewer.layers[0], viewer.layers[1]


def run_widget(qtbot, widget) -> None:
    """Press the widget's run button and wait until it is enabled again (the worker finished)."""
    widget.run_button.click()
    assert not widget.run_button.isEnabled()
    qtbot.waitUntil(widget.run_button.isEnabled, timeout=TIMEOUT_MS)


def test_the_manifest_registers_every_widget_and_the_sample():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    manifest = pm.get_manifest("mmv_zoo")
    assert {w.display_name for w in manifest.contributions.widgets} == {"Zoo", "Predict", "Train", "Evaluate"}
    assert [s.key for s in manifest.contributions.sample_data] == ["bbbc007"]


def test_predict_widget_segments_the_bbbc007_sample(make_napari_viewer, qtbot, tmp_path):
    """The bundled nuclei_semseg_2d model on the sample image: a Labels layer with the image's scale,
    foreground F1 >= 0.95 against the sample's labels; a second run reuses the loaded model."""
    viewer = make_napari_viewer()
    image, labels = open_sample(viewer)
    image.scale, image.translate = (0.5, 0.5), (3.0, 4.0)
    widget = PredictWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Predict")
    widget.source.setCurrentText("nuclei_semseg_2d")
    assert [i.text() for i in widget.inputs.selectedItems()] == [image.name]
    run_widget(qtbot, widget)
    assert not widget.error.text(), widget.error.text()
    result = viewer.layers[-1]
    assert type(result).__name__ == "Labels" and result.name == f"nuclei_semseg_2d: {image.name}"
    assert tuple(result.scale) == (0.5, 0.5) and tuple(result.translate) == (3.0, 4.0)
    f1 = foreground_scores(np.asarray(result.data), np.asarray(labels.data))["f1"]
    assert f1 >= 0.95, f1
    model = widget._cached[1]
    run_widget(qtbot, widget)
    assert widget._cached[1] is model and len(viewer.layers) == 4  # no reload, a second result
    screenshot(widget, "predict", tmp_path)
    viewer.layers.remove(viewer.layers[-1])
    labels.visible = False
    viewer.window._qt_window.resize(1400, 760)  # the window as a person would size it
    qtbot.wait(500)
    viewer.reset_view()
    viewer.camera.zoom *= 1.6  # reset_view leaves a wide margin
    qtbot.wait(300)
    folder = Path(os.environ.get("MMV_ZOO_SCREENSHOTS") or tmp_path)
    window = viewer.screenshot(path=str(folder / "predict_viewer.png"), canvas_only=False, flash=False)
    assert window.shape[0] > 300 and window.shape[1] > 500 and window[..., :3].std() > 5


def test_predict_errors_show_in_the_widget_as_one_line(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    open_sample(viewer)
    widget = PredictWidget(viewer)
    widget.source.setCurrentText(str(tmp_path / "no_such_model.zip"))
    run_widget(qtbot, widget)
    assert widget.error.isVisibleTo(widget) and "no_such_model.zip" in widget.error.text()
    assert "\n" not in widget.error.text() and "Traceback" not in widget.error.text()
    widget.source.setCurrentText("nuclei_semseg_2d")
    widget.threshold.setText("half")
    assert widget.start() is None and "threshold 'half'" in widget.error.text()
    assert len(viewer.layers) == 2


def test_cancel_stops_a_prediction_and_adds_nothing(make_napari_viewer, qtbot, run_2d, tmp_path, monkeypatch):
    """A 40-plane stack through a 2D run, cancelled after its first planes: no layer, no file, and the
    viewer keeps working while the worker runs."""
    monkeypatch.chdir(tmp_path)
    viewer = make_napari_viewer()
    stack = np.random.default_rng(0).integers(0, 255, (40, 256, 256)).astype(np.uint8)
    viewer.add_image(stack, name="stack")
    widget = PredictWidget(viewer)
    widget.source.setCurrentText(str(run_2d))
    widget.run_button.click()
    qtbot.waitUntil(lambda: widget.progress.value() >= 2, timeout=TIMEOUT_MS)
    viewer.add_points(np.zeros((1, 2)), name="still responsive")  # the GUI thread is free
    widget.cancel_button.click()
    qtbot.waitUntil(widget.run_button.isEnabled, timeout=TIMEOUT_MS)
    assert widget.status.text() == "cancelled: nothing added"
    assert [layer.name for layer in viewer.layers] == ["stack", "still responsive"]
    assert widget.progress.value() == 0 and not list(tmp_path.iterdir())


def test_a_3d_run_predicts_a_3d_layer_with_its_scale(make_napari_viewer, qtbot, run_3d, data_3d):
    import tifffile

    viewer = make_napari_viewer()
    volume = tifffile.imread(sorted((data_3d / "low").iterdir())[0])
    layer = viewer.add_image(volume, name="volume", scale=(2.0, 0.3, 0.3))
    widget = PredictWidget(viewer)
    widget.source.setCurrentText(str(run_3d))
    run_widget(qtbot, widget)
    assert not widget.error.text(), widget.error.text()
    result = viewer.layers[-1]
    assert type(result).__name__ == "Image" and result.data.shape == volume.shape
    assert tuple(result.scale) == tuple(layer.scale) == (2.0, 0.3, 0.3)
    from mmv_zoo.predict.engine import predict_array
    from mmv_zoo.run import load_model

    model = load_model(run_3d)
    want = predict_array(model, volume[None].astype(np.float32), model.entry)[0]
    np.testing.assert_allclose(np.asarray(result.data), want, atol=1e-4)


def test_train_widget_trains_from_two_layers_and_predict_offers_the_run(make_napari_viewer, qtbot, tmp_path):
    """nuclei_semseg_2d, one short epoch on the sample image and its labels layer (one image: split
    into a training and a validation region): a run folder with checkpoints, the loss curve drawn,
    the run offered by Predict, and exported as a package."""
    from mmv_zoo.napari.train_widget import TrainWidget

    viewer = make_napari_viewer()
    open_sample(viewer)
    widget = TrainWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Train")
    widget.entry.setCurrentText("nuclei_semseg_2d")
    widget.epochs.setValue(1)
    widget.out.setText(str(tmp_path / "runs"))
    run_widget(qtbot, widget)
    assert not widget.error.text(), widget.error.text()
    folder = widget.run_folder
    assert folder is not None and folder.parent.parent == tmp_path / "runs"
    assert (folder / "checkpoints" / "last.ckpt").is_file() and (folder / "checkpoints" / "best.ckpt").is_file()
    assert len(widget.history) == 1 and {"train_loss", "val_loss"} <= set(widget.history[0])
    assert widget.axes.lines, "the loss curve is drawn"
    predict = PredictWidget(viewer)
    assert predict.source.itemText(0) == str(folder)
    package = widget.export()
    assert package is not None and package.is_file() and "exported" in widget.status.text(), widget.error.text()
    screenshot(widget, "train", tmp_path)


def test_cancelled_training_is_resumable_from_the_widget(make_napari_viewer, qtbot, tmp_path):
    import json

    from mmv_zoo.napari.train_widget import TrainWidget

    viewer = make_napari_viewer()
    open_sample(viewer)
    widget = TrainWidget(viewer)
    widget.epochs.setValue(200)
    widget.out.setText(str(tmp_path / "runs"))
    widget.train_button.click()
    qtbot.waitUntil(lambda: len(widget.history) >= 1, timeout=TIMEOUT_MS)
    widget.cancel_button.click()
    qtbot.waitUntil(widget.train_button.isEnabled, timeout=TIMEOUT_MS)
    folder = widget.run_folder
    assert "stopped" in widget.status.text() and not widget.error.text()
    info = json.loads((folder / "run.json").read_text())
    assert info["status"] == "interrupted" and (folder / "checkpoints" / "last.ckpt").is_file()
    steps = info["steps"]
    widget.start(resume=folder)
    qtbot.waitUntil(lambda: bool(widget.history) and widget.history[-1]["steps"] > steps, timeout=TIMEOUT_MS)
    widget.cancel_button.click()
    qtbot.waitUntil(widget.train_button.isEnabled, timeout=TIMEOUT_MS)
    assert json.loads((folder / "run.json").read_text())["steps"] > steps  # it went on from where it stopped


def test_train_widget_errors_name_what_is_wrong(make_napari_viewer, qtbot, tmp_path):
    from mmv_zoo.napari.train_widget import TrainWidget

    viewer = make_napari_viewer()
    open_sample(viewer)
    widget = TrainWidget(viewer)
    widget.labels.clearSelection()
    assert widget.start() is None and "1 image(s), 0 label layer(s)" in widget.error.text()
    widget.from_folder.setChecked(True)
    widget.folder.setText(str(tmp_path / "nothing"))
    assert widget.start() is None and "nothing: no such folder" in widget.error.text()
    widget.entry.setCurrentText("no_such_entry")
    assert widget.start() is None and "no_such_entry" in widget.error.text()
    assert not (tmp_path / "runs").exists()


def test_zoo_widget_searches_shows_a_card_and_opens_the_sample(make_napari_viewer, tmp_path):
    from mmv_zoo.napari.zoo_widget import ZooWidget

    viewer = make_napari_viewer()
    widget = ZooWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Zoo")
    widget.search.setText("instance 2D")
    shown = widget.visible_entries()
    assert "nuclei_instance_2d" in shown and all("semseg" not in s for s in shown)
    widget.search.setText("")
    assert len(widget.visible_entries()) == len(widget.rows) > 20
    widget.select("nuclei_semseg_2d")
    text = widget.card.toPlainText()
    assert text.startswith("# nuclei_semseg_2d") and "Citations:" in text and "holdout_foreground_f1" in text
    assert widget.sample_button.isEnabled()
    image, labels = widget.open_sample()
    assert image.data.shape == labels.data.shape == (400, 400) and type(labels).__name__ == "Labels"
    screenshot(widget, "zoo", tmp_path)


def test_evaluate_widget_scores_layers_with_the_task_metrics(make_napari_viewer, tmp_path):
    from mmv_zoo.metrics import instance_scores
    from mmv_zoo.napari.evaluate_widget import EvaluateWidget

    viewer = make_napari_viewer()
    image, labels = open_sample(viewer)
    truth = np.asarray(labels.data)
    guess = truth.copy()
    guess[:, :200] = 0  # half the nuclei missed
    viewer.add_labels(guess, name="prediction")
    widget = EvaluateWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Evaluate")
    assert (widget.prediction.currentText(), widget.truth.currentText()) == ("prediction", labels.name)
    scores = widget.evaluate()
    want = foreground_scores(guess, truth)["f1"]
    assert scores["foreground f1"] == pytest.approx(want) and want < 0.9
    assert widget.table.rowCount() == 2 and widget.table.item(0, 0).text() == "foreground f1"
    widget.task.setCurrentText("instance")
    scores = widget.evaluate()
    assert scores["ap50"] == pytest.approx(instance_scores(guess, truth)["ap50"]) and scores["n_true"] == 85
    screenshot(widget, "evaluate", tmp_path)
    widget.task.setCurrentText("segmentation")
    widget.prediction.setCurrentText(image.name)  # an image, not labels
    viewer.layers[image.name].data = np.random.default_rng(0).random((400, 400))
    assert widget.evaluate() is None and "holds no labels" in widget.error.text()
