"""`mmv-zoo evaluate` and the metrics behind it: hand-counted scores on tiny examples, then the verb on
tiny trained runs (its numbers equal scores recomputed from `mmv-zoo predict` outputs) and bad input."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import tifffile

from mmv_zoo import metrics
from mmv_zoo.io.read import read_image

from .test_cli import assert_clean_error, run_cli

# ---- instances: AP with one-to-one matching


def three_objects() -> tuple[np.ndarray, np.ndarray]:
    """Truth: A, B, C (4x4 squares, 16 px each). Prediction: A exactly; B split into a 4x3 part (12 px)
    and a 4x1 part (4 px); C missed."""
    truth = np.zeros((10, 10), np.uint16)
    truth[0:4, 0:4], truth[0:4, 6:10], truth[6:10, 0:4] = 1, 2, 3
    pred = np.zeros((10, 10), np.uint16)
    pred[0:4, 0:4], pred[0:4, 6:9], pred[0:4, 9] = 5, 7, 8  # ids need not match the truth's
    return pred, truth


def test_ap50_hand_counted():
    # IoU(A, 5) = 16/16 = 1 -> TP; IoU(B, 7) = 12/16 = 0.75 -> TP; IoU(B, 8) = 4/16 = 0.25 -> FP (B is taken);
    # C unmatched -> FN. AP50 = TP / (TP + FP + FN) = 2 / (2 + 1 + 1) = 0.5
    pred, truth = three_objects()
    m = metrics.match_instances(pred, truth)[0]
    assert (m.n_true, m.n_pred, m.tp, m.fp, m.fn) == (3, 3, 2, 1, 1)
    assert m.ap == 0.5
    assert sorted(map(tuple, m.pairs.tolist())) == [(1, 5), (2, 7)]
    assert metrics.average_precision(pred, truth, 0.5) == 0.5


def test_mean_ap_over_thresholds_hand_counted():
    # thresholds 0.5 .. 0.75 (6 of them): both matches hold -> AP 2/4 = 0.5
    # thresholds 0.8 .. 0.95 (4): only A (IoU 1) -> TP 1, FP 2, FN 2 -> AP 1/5 = 0.2
    # mean = (6 * 0.5 + 4 * 0.2) / 10 = 0.38
    pred, truth = three_objects()
    aps = [m.ap for m in metrics.match_instances(pred, truth, metrics.AP_THRESHOLDS)]
    assert aps == [0.5] * 6 + [0.2] * 4
    s = metrics.instance_scores(pred, truth)
    assert s["ap50"] == 0.5 and s["ap50_95"] == pytest.approx(0.38, abs=1e-12)
    # foreground: prediction 32 px, truth 48 px, overlap 32 -> F1 = 64 / 80
    assert s["f1_foreground"] == pytest.approx(0.8)


def test_matching_is_one_to_one_at_iou_half():
    # one 4x4 object split exactly in half: both halves have IoU 8/16 = 0.5 >= 0.5, but only one may match
    truth = np.zeros((4, 4), np.int32)
    truth[:] = 1
    pred = np.zeros((4, 4), np.int32)
    pred[:, :2], pred[:, 2:] = 1, 2
    m = metrics.match_instances(pred, truth)[0]
    assert (m.tp, m.fp, m.fn) == (1, 1, 0) and m.ap == 0.5


def test_matching_maximizes_matches_not_greedy():
    # 1 x 20 strip. Truth T1 = [0, 10), T2 = [10, 16). Prediction P1 = [3, 14), P2 = [0, 3).
    # IoU(P1, T1) = 7/14 = 0.5, IoU(P1, T2) = 4/13 = 0.31, IoU(P2, T1) = 3/10 = 0.3.
    # At IoU >= 0.25 greedy (best IoU first) pairs P1-T1 and leaves 1 TP; the optimum is P1-T2, P2-T1: 2 TP.
    truth = np.zeros((1, 20), np.int32)
    truth[0, 0:10], truth[0, 10:16] = 1, 2
    pred = np.zeros((1, 20), np.int32)
    pred[0, 3:14], pred[0, 0:3] = 1, 2
    m = metrics.match_instances(pred, truth, (0.25,))[0]
    assert m.tp == 2 and m.ap == 1.0
    assert sorted(map(tuple, m.pairs.tolist())) == [(1, 2), (2, 1)]
    assert metrics.match_instances(pred, truth, (0.5,))[0].tp == 1  # only P1-T1 qualifies


def test_instance_empty_cases():
    empty = np.zeros((8, 8), np.uint16)
    one = empty.copy()
    one[2:5, 2:5] = 9
    both_empty = metrics.instance_scores(empty, empty)
    assert both_empty["ap50"] == 1.0 and both_empty["ap50_95"] == 1.0 and both_empty["f1_foreground"] == 1.0
    assert metrics.instance_scores(one, empty)["ap50"] == 0.0  # all false positive
    missed = metrics.instance_scores(empty, one)
    assert missed["ap50"] == 0.0 and missed["fn50"] == 1 and missed["f1_foreground"] == 0.0


def test_instance_labels_3d_large_ids_and_bad_labels():
    truth = np.zeros((3, 6, 6), np.uint32)
    truth[:, :3] = 4_000_000_000  # a sparse id: the compact path by np.unique
    truth[:, 3:] = 7
    pred = truth.copy()
    pred[pred == 7] = 1
    assert metrics.instance_scores(pred, truth)["ap50_95"] == 1.0
    with pytest.raises(ValueError, match="fractional"):
        metrics.instance_scores(pred.astype(np.float32) + 0.5, truth)
    with pytest.raises(ValueError, match="shapes differ"):
        metrics.instance_scores(pred[:2], truth)


# ---- semantic segmentation


def test_class_scores_hand_values():
    truth = np.array([[0, 1, 1], [2, 2, 0]])
    pred = np.array([[0, 1, 2], [2, 0, 0]])
    # class 1: TP 1, FP 0, FN 1 -> F1 2/3, IoU 1/2
    # class 2: TP 1 (bottom left), FP 1 (top right), FN 1 (bottom middle) -> F1 2/4, IoU 1/3
    # class 0: TP 2, FP 1, FN 0 -> F1 4/5, IoU 2/3
    s = metrics.class_scores(pred, truth, 3)
    np.testing.assert_allclose(s["f1"], [4 / 5, 2 / 3, 1 / 2])
    np.testing.assert_allclose(s["iou"], [2 / 3, 1 / 2, 1 / 3])
    # a class absent from both prediction and truth scores 1; present in one only, 0
    s4 = metrics.class_scores(pred, truth, 4)
    assert s4["f1"][3] == 1.0 and s4["iou"][3] == 1.0
    only_pred = metrics.class_scores(np.array([[3, 0]]), np.array([[0, 0]]), 4)
    assert only_pred["f1"][3] == 0.0 and only_pred["iou"][3] == 0.0


# ---- regression


def test_regression_known_values():
    truth = np.zeros((1, 16, 16))
    truth[:, :, 8:] = 1.0  # data range 1
    same = metrics.regression_scores(truth, truth)
    assert same["pearson"] == pytest.approx(1.0) and same["ssim"] == pytest.approx(1.0) and same["psnr"] == np.inf
    shifted = truth + 0.1  # MSE 0.01, range 1 -> PSNR = 10 log10(1 / 0.01) = 20 dB; correlation unchanged
    s = metrics.regression_scores(shifted, truth)
    assert s["pearson"] == pytest.approx(1.0) and s["psnr"] == pytest.approx(20.0)
    scaled = metrics.regression_scores(3 * truth, truth)  # MSE = mean((2 t)^2) = 2 -> PSNR = 10 log10(1/2)
    assert scaled["pearson"] == pytest.approx(1.0) and scaled["psnr"] == pytest.approx(10 * np.log10(0.5))
    rng = np.random.default_rng(0)
    a, b = rng.random((1, 20, 20)), rng.random((1, 20, 20))
    assert metrics.pearson(a, b) == pytest.approx(np.corrcoef(a.ravel(), b.ravel())[0, 1])
    assert metrics.pearson(-a, a) == pytest.approx(-1.0)
    # constants: correlation undefined, no data range
    flat = np.ones((1, 8, 8))
    assert np.isnan(metrics.pearson(flat, truth[:, :8, :8]))
    assert np.isnan(metrics.psnr(truth[:, :8, :8], flat)) and np.isnan(metrics.ssim(truth[0, :8, :8], flat[0]))


def _ssim_by_hand(x: np.ndarray, y: np.ndarray, data_range: float, win: int) -> float:
    """The SSIM formula (Wang et al. 2004) with a uniform window and sample covariances, as in skimage."""
    from scipy.ndimage import uniform_filter

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    n = win ** x.ndim
    f = n / (n - 1)
    mx, my = uniform_filter(x, win), uniform_filter(y, win)
    vx = f * (uniform_filter(x * x, win) - mx * mx)
    vy = f * (uniform_filter(y * y, win) - my * my)
    cxy = f * (uniform_filter(x * y, win) - mx * my)
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
    pad = (win - 1) // 2
    return float(s[tuple(slice(pad, -pad) for _ in range(x.ndim))].mean())


@pytest.mark.parametrize("shape,win", [((24, 20), 7), ((12, 16, 16), 7), ((5, 16, 16), 5)])
def test_ssim_2d_3d_equals_the_formula_with_the_truth_range(shape, win):
    rng = np.random.default_rng(1)
    truth = rng.random(shape) * 3 + 2  # range about 3, not 1: the data range must come from the truth
    pred = truth + rng.normal(0, 0.3, shape)
    expected = _ssim_by_hand(pred, truth, float(truth.max() - truth.min()), win)
    assert metrics.ssim(pred, truth) == pytest.approx(expected, rel=1e-6)
    assert 0.2 < expected < 0.95
    # channels: the mean over channels of the same
    both = metrics.ssim(np.stack([pred, truth]), np.stack([truth, truth]), channel_axis=0)
    one = metrics.ssim(pred, truth, range_=float(truth.max() - truth.min()))
    assert both == pytest.approx((one + 1.0) / 2, rel=1e-6)


# ---- the verb, end to end


def _rows(csv_path: Path) -> dict[str, dict[str, str]]:
    with csv_path.open(newline="") as f:
        return {r["image"]: r for r in csv.DictReader(f)}


def test_evaluate_segmentation_run_equals_scores_of_predict_outputs(capsys, run_2d, data_2d, tmp_path):
    out = tmp_path / "ev"
    code, stdout, _ = run_cli(["evaluate", str(run_2d), "--data", str(data_2d), "--out", str(out)], capsys)
    assert code == 0, stdout
    rows = _rows(out / "metrics.csv")
    names = sorted(p.name[:-4] for p in (data_2d / "images").glob("*.tif"))
    assert list(rows) == [*names, "mean", "pooled"]
    assert "f1_nucleus" in stdout and "mean" in stdout and "pooled" in stdout
    # the same numbers from `mmv-zoo predict` outputs, scored by hand (labels: foreground -> truth > 0)
    code, _, _ = run_cli(["predict", str(run_2d), str(data_2d / "images"), "--out", str(tmp_path / "pred")], capsys)
    assert code == 0
    total = np.zeros((2, 2), np.int64)
    f1s = []
    for name in names:
        pred = read_image(tmp_path / "pred" / f"{name}.ome.tiff", 2).data[0]
        truth = tifffile.imread(data_2d / "labels" / f"{name}.tif") > 0
        assert truth.max() and pred.max()
        cm = metrics.confusion_matrix(pred, truth, 2)
        total += cm
        s = metrics.scores_from_confusion(cm)
        assert float(rows[name]["f1_nucleus"]) == s["f1"][1]
        assert float(rows[name]["iou_nucleus"]) == s["iou"][1]
        f1s.append(s["f1"][1])
    assert float(rows["mean"]["f1_nucleus"]) == pytest.approx(np.mean(f1s), rel=1e-12)
    assert float(rows["pooled"]["f1_nucleus"]) == pytest.approx(metrics.scores_from_confusion(total)["f1"][1])
    png = (out / "evaluation.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(out / "evaluation.png").shape[1] > 600  # four panels across
    assert sorted(p.name for p in (out / "predictions").iterdir()) == [f"{n}.ome.tiff" for n in names]
    assert not [p for p in out.rglob("*") if ".partial" in p.name]
    # --split val: exactly the images the run held back
    import json

    from mmv_zoo.evaluate.scoring import evaluate

    held = json.loads((run_2d / "run.json").read_text())["val_files"]
    val = evaluate(str(run_2d), data_2d, tmp_path / "ev_val", split="val")
    assert [r.name for r in val.images] == held and len(held) < len(names)
    assert val.images[0].scores == {k: float(rows[held[0]][k]) for k in ("f1_nucleus", "iou_nucleus")}


def test_evaluate_regression_3d(run_3d, data_3d, tmp_path):
    from mmv_zoo.evaluate.scoring import evaluate
    from mmv_zoo.run import load_model
    from mmv_zoo.transforms.normalize import normalize

    result = evaluate(str(run_3d), data_3d, tmp_path / "ev")
    assert result.task == "regression" and result.columns == ["pearson", "ssim", "psnr"]
    entry = load_model(run_3d).entry
    for r in result.images:
        pred = read_image(r.prediction, 3).data
        truth = normalize(read_image(r.target, 3).data, entry.mmv.data.normalization.target)
        expected = metrics.regression_scores(pred, truth)
        assert r.scores == pytest.approx(expected, rel=1e-12)
        assert -1 <= r.scores["pearson"] <= 1 and np.isfinite(r.scores["psnr"])
    rows = _rows(result.metrics_csv)
    assert float(rows["mean"]["ssim"]) == pytest.approx(np.mean([r.scores["ssim"] for r in result.images]))
    assert "pooled" not in rows
    assert result.figure.is_file()


def _instance_folder(root: Path) -> tuple[Path, Path]:
    """Data (source/, target/) and predictions: image `a` is the hand-counted three-object example
    (AP50 0.5), image `b` predicted perfectly."""
    pred_a, truth_a = three_objects()
    truth_b = np.zeros((10, 10), np.uint16)
    truth_b[2:6, 3:8] = 4
    truth_b[7:9, 1:9] = 12
    for sub in ("source", "target", "pred"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name, truth, pred in (("a", truth_a, pred_a), ("b", truth_b, truth_b * 3)):
        tifffile.imwrite(root / "source" / f"{name}.tif", (rng.random((10, 10)) * 100 + 50 * (truth > 0))
                         .astype(np.uint16))
        tifffile.imwrite(root / "target" / f"{name}.tif", truth)
        tifffile.imwrite(root / "pred" / f"{name}.tiff", pred)
    return root, root / "pred"


def test_evaluate_predictions_instance_labels(capsys, tmp_path):
    data, pred = _instance_folder(tmp_path / "d")
    out = tmp_path / "ev"
    code, stdout, err = run_cli(["evaluate", "--predictions", str(pred), "--data", str(data), "--task", "instance",
                                 "--out", str(out)], capsys)
    assert code == 0, err
    rows = _rows(out / "metrics.csv")
    assert float(rows["a"]["ap50"]) == 0.5 and float(rows["a"]["ap50_95"]) == pytest.approx(0.38)
    assert float(rows["b"]["ap50"]) == 1.0 and float(rows["b"]["ap50_95"]) == 1.0
    assert float(rows["mean"]["ap50"]) == 0.75
    # pooled over both images: TP 2 + 2, FP 1, FN 1 -> AP50 = 4 / 6
    assert float(rows["pooled"]["ap50"]) == pytest.approx(4 / 6)
    assert rows["pooled"]["tp50"] == "4" and rows["pooled"]["n_true"] == "5"
    assert rows["a"]["prediction"].endswith("a.tiff")
    assert "ap50" in stdout and (out / "evaluation.png").is_file()


def test_evaluate_bad_input(capsys, run_2d, data_2d, tmp_path):
    data, pred = _instance_folder(tmp_path / "d")
    out = tmp_path / "ev"

    def ev(*args: str) -> tuple[int, str]:
        code, _, err = run_cli(["evaluate", *args, "--out", str(out)], capsys)
        return code, err

    code, err = ev("--predictions", str(pred), "--data", str(tmp_path / "nowhere"), "--task", "instance")
    assert_clean_error(code, err, "nowhere", "does not exist")
    code, err = ev(str(run_2d), "--data", str(tmp_path / "nowhere"))
    assert_clean_error(code, err, "nowhere", "does not exist")
    (tmp_path / "empty" / "source").mkdir(parents=True)
    (tmp_path / "empty" / "target").mkdir()
    code, err = ev("--predictions", str(pred), "--data", str(tmp_path / "empty"), "--task", "instance")
    assert_clean_error(code, err, "source", "no images")
    code, err = ev("--predictions", str(pred), "--data", str(data))
    assert_clean_error(code, err, "--task")
    code, err = ev("--predictions", str(pred), "--data", str(data), "--task", "instances")
    assert_clean_error(code, err, "--task 'instances'", "regression, segmentation or instance")
    code, err = ev(str(run_2d), "--data", str(data_2d), "--task", "instance")
    assert_clean_error(code, err, "--task instance", "segmentation model")
    code, err = ev("--data", str(data))
    assert_clean_error(code, err, "SOURCE", "--predictions")
    tifffile.imwrite(pred / "b.tiff", np.zeros((12, 10), np.uint16))  # wrong shape
    code, err = ev("--predictions", str(pred), "--data", str(data), "--task", "instance")
    assert_clean_error(code, err, "b.tiff", "shape (12, 10)", "(10, 10)")
    (pred / "b.tiff").unlink()
    code, err = ev("--predictions", str(pred), "--data", str(data), "--task", "instance")
    assert_clean_error(code, err, "no prediction for b.tif")
    tifffile.imwrite(pred / "b.tiff", np.full((10, 10), 0.5, np.float32))  # probabilities, not labels
    code, err = ev("--predictions", str(pred), "--data", str(data), "--task", "instance")
    assert_clean_error(code, err, "b.tiff", "fractional")
    assert not out.exists()


def _naive_tp(pred: np.ndarray, truth: np.ndarray, thr: float) -> int:
    """Dense IoU matrix by loops over ids and StarDist's cost on the whole matrix: the reference."""
    from scipy.optimize import linear_sum_assignment

    t_ids, p_ids = [i for i in np.unique(truth) if i], [i for i in np.unique(pred) if i]
    if not t_ids or not p_ids:
        return 0
    iou = np.array([[np.sum((truth == a) & (pred == b)) / np.sum((truth == a) | (pred == b)) for b in p_ids]
                    for a in t_ids])
    n_matched = min(len(t_ids), len(p_ids))
    cost = -(iou >= thr).astype(float) - iou / (2 * n_matched)
    r, c = linear_sum_assignment(cost)
    return int(np.count_nonzero(iou[r, c] >= thr))


def test_matching_equals_a_dense_reference_on_random_labels():
    from skimage.measure import label
    from skimage.segmentation import expand_labels

    rng = np.random.default_rng(3)
    for trial in range(12):
        seeds = np.zeros((40, 40), np.int32)
        seeds[tuple(rng.integers(0, 40, (2, 12)))] = 1
        truth = expand_labels(label(seeds), 4)
        pred = truth.copy()
        shift = rng.integers(-3, 4, 2)
        pred = np.roll(pred, tuple(shift), axis=(0, 1))  # misplaced objects: IoUs all over [0, 1]
        pred[rng.random(pred.shape) < 0.05] = 0
        pred[pred == rng.integers(1, pred.max() + 1)] = 0  # one object missed
        for thr in (0.1, 0.3, 0.5, 0.7):
            assert metrics.match_instances(pred, truth, (thr,))[0].tp == _naive_tp(pred, truth, thr), (trial, thr)


def test_evaluate_package_reads_task_and_labels_from_its_config(tmp_path):
    """The shipped nuclei package (class probabilities out): task, classes and `labels: foreground`
    come from its config.mmv_zoo; scores equal the hold-out F1/IoU its entry records (4 digits)."""
    from mmv_zoo.entry import load_entry
    from mmv_zoo.evaluate.scoring import evaluate

    from .conftest import SAMPLE

    entry = load_entry("nuclei_semseg_2d")
    package = entry.source.parent / entry.mmv.pretrained.source
    result = evaluate(str(package), SAMPLE / "holdout", tmp_path / "ev")
    assert result.task == "segmentation" and result.columns == ["f1_nucleus", "iou_nucleus"]
    (image,) = result.images
    recorded = entry.mmv.pretrained.metrics
    assert image.scores["f1_nucleus"] == pytest.approx(recorded["holdout_foreground_f1"], abs=5e-5)
    assert image.scores["iou_nucleus"] == pytest.approx(recorded["holdout_foreground_iou"], abs=5e-5)
    assert read_image(image.prediction, 2).data.shape[0] == 2  # probabilities, scored by their argmax


def test_predictions_with_a_source_take_its_layout_and_any_task(capsys, run_2d, data_2d, tmp_path):
    """SOURCE with --predictions gives only the data layout (images/, labels/): no model is run, and
    --task may differ from the model's. The truth's own labels as predictions score 1."""
    pred = tmp_path / "pred"
    pred.mkdir()
    for label in sorted((data_2d / "labels").glob("*.tif")):
        truth = tifffile.imread(label)
        tifffile.imwrite(pred / label.name, (truth * 7).astype(np.uint16))  # other ids, same objects
    out = tmp_path / "ev"
    code, _, err = run_cli(["evaluate", str(run_2d), "--predictions", str(pred), "--data", str(data_2d),
                            "--task", "instance", "--out", str(out)], capsys)
    assert code == 0, err
    rows = _rows(out / "metrics.csv")
    assert len(rows) == 5 and all(float(r["ap50_95"]) == 1.0 for r in rows.values())
    assert not (out / "predictions").exists()


def test_eval_pairs_follow_the_entry_layout(tmp_path):
    """CSV layouts, presplit folders (train/ and val/ together), exclusion masks not needed, CycleGAN's
    unpaired folder names used as pairs."""
    from mmv_zoo.errors import DataError
    from mmv_zoo.evaluate.scoring import Scoring, eval_pairs
    from mmv_zoo.settings.data import DataSettings

    def spec(**data) -> Scoring:
        return Scoring(task="instance", name="x", data=DataSettings(patch=[8, 8], **data))

    img = np.zeros((8, 8), np.uint16)
    for sub in ("train/raw", "train/gt", "val/raw", "val/gt", "flat/raw", "flat/gt"):
        (tmp_path / sub).mkdir(parents=True)
    for sub, names in (("train", "ab"), ("val", "c"), ("flat", "de")):
        for n in names:
            tifffile.imwrite(tmp_path / sub / "raw" / f"{n}.tif", img)
            tifffile.imwrite(tmp_path / sub / "gt" / f"{n}.tif", img)
    folders = {"layout": "paired_folders", "source": "raw", "target": "gt", "exclusion": "masks"}
    pre = spec(layout=folders, split={"kind": "presplit"})
    assert [p.name for p in eval_pairs(tmp_path, pre)] == ["a", "b", "c"]  # no masks/ folder needed
    assert [p.name for p in eval_pairs(tmp_path, pre, "val")] == ["c"]
    unpaired = spec(layout={"layout": "unpaired_folders", "source": "raw", "target": "gt"})
    assert [p.name for p in eval_pairs(tmp_path / "flat", unpaired)] == ["d", "e"]
    (tmp_path / "flat" / "list.csv").write_text("in,out\nraw/e.tif,gt/e.tif\n")
    table = spec(layout={"layout": "csv", "file": "list.csv", "source_column": "in", "target_column": "out"})
    (pair,) = eval_pairs(tmp_path / "flat", table)
    assert pair.target == tmp_path / "flat" / "gt" / "e.tif"
    with pytest.raises(DataError, match="none of the run's validation images"):
        eval_pairs(tmp_path / "flat", Scoring(task="instance", name="x", data=unpaired.data, val_files=["zz"]),
                   "val")
