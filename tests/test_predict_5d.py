"""`mmv-zoo predict` on 5D images: scenes, time points and channels selected, read lazily, written
tile by tile to OME-TIFF or OME-Zarr with their metadata; interrupted batches resume."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from mmv_zoo.errors import DataError
from mmv_zoo.io.read import read_image
from mmv_zoo.predict import engine
from mmv_zoo.predict.batch import predict_files
from mmv_zoo.predict.engine import Options
from mmv_zoo.predict.files import Selection
from mmv_zoo.run import load_model

from .test_cli import assert_clean_error, run_cli


@pytest.fixture(scope="module")
def stack_5d(data_3d, tmp_path_factory):
    """(T=2, C=2, Z=12, Y=40, X=44) OME-TIFF: channel 'noisy' is the denoise input, 'other' is not."""
    low = sorted((data_3d / "low").iterdir())
    frames = [tifffile.imread(p) for p in low]
    data = np.stack([np.stack([f[:, :, :40].astype(np.uint16), (f[:, :, :40] // 3).astype(np.uint16)])
                     for f in frames])
    data = np.concatenate([data, data[..., :4]], axis=-1)  # X = 44: not a multiple of the network's step
    path = tmp_path_factory.mktemp("five") / "timelapse.ome.tiff"
    tifffile.imwrite(path, data, metadata={"axes": "TCZYX", "Channel": {"Name": ["other", "noisy"]},
                                           "PhysicalSizeX": 0.2, "PhysicalSizeY": 0.2, "PhysicalSizeZ": 0.5,
                                           "TimeIncrement": 30.0})
    return path, data


def test_5d_input_by_channel_name_keeps_metadata(run_3d, stack_5d, tmp_path):
    path, data = stack_5d
    (res,) = predict_files(run_3d, [path], tmp_path / "out", selection=Selection(channels=["noisy"]))
    assert res.output.name == "timelapse.ome.tiff" and res.frames == 2
    from bioio import BioImage

    img = BioImage(res.output)
    assert img.dims.T == 2 and img.dims.C == 1 and img.dims.Z == 12 and (img.dims.Y, img.dims.X) == (40, 44)
    assert pytest.approx(0.2) == img.physical_pixel_sizes.X and pytest.approx(0.5) == img.physical_pixel_sizes.Z
    # each frame equals predicting that frame's channel in memory
    model = load_model(run_3d)
    got = img.get_image_data("TCZYX")
    for t in range(2):
        want = engine.predict_array(model, data[t, 1:2].astype(np.float32), model.entry)
        np.testing.assert_allclose(got[t], want, atol=1e-5)


def test_ome_zarr_output_streams_the_same_values(run_3d, stack_5d, tmp_path):
    path, _ = stack_5d
    sel = Selection(channels=[1], t=(1, 2))
    (tif,) = predict_files(run_3d, [path], tmp_path / "a", selection=sel)
    (zarr,) = predict_files(run_3d, [path], tmp_path / "b", selection=Selection(channels=[1], t=(1, 2),
                                                                                    format="ome-zarr"))
    assert zarr.output.name == "timelapse.ome.zarr" and zarr.output.is_dir()
    from bioio import BioImage

    a, b = BioImage(tif.output), BioImage(zarr.output)
    assert b.dims.T == 1 and b.channel_names == a.channel_names
    np.testing.assert_array_equal(a.get_image_data("TCZYX"), b.get_image_data("TCZYX"))
    assert pytest.approx(0.2) == b.physical_pixel_sizes.Y


def test_many_small_tiles_stream_into_the_writer(run_3d, stack_5d, tmp_path):
    """A tile budget far below the frame: many tiles, the same result as one tile (with the halo
    covering the receptive field; the tiny test patch would cap it in z)."""
    from mmv_zoo.predict import halo as receptive_field

    model = load_model(run_3d)
    _, radius = receptive_field.entry_halo(model.entry, model.inference_model())
    steps = [r.step for r in model.entry.mmv.network.size_rule(3)]
    full = [receptive_field.halo_from_radius(r, s, 10**6) for r, s in zip(radius, steps, strict=True)]
    path, _ = stack_5d
    sel = Selection(channels=["noisy"], t=(0, 1), format="ome-zarr")
    (one,) = predict_files(run_3d, [path], tmp_path / "one", selection=sel, options=Options(halo=full))
    tiles = []
    (many,) = predict_files(run_3d, [path], tmp_path / "many", selection=sel,
                            options=Options(budget=12 * 28 * 32, halo=full), on_tile=lambda d, n: tiles.append(n))
    assert tiles and tiles[-1] > 4
    from bioio import BioImage

    np.testing.assert_allclose(BioImage(many.output).get_image_data("TCZYX"),
                               BioImage(one.output).get_image_data("TCZYX"), atol=1e-5)


def test_interrupted_batch_leaves_no_partial_and_resumes(run_3d, stack_5d, tmp_path, monkeypatch):
    path, data = stack_5d
    inputs = tmp_path / "in"
    inputs.mkdir()
    for name in ("a", "b"):
        tifffile.imwrite(inputs / f"{name}.tif", data[0, 1])
    real = engine.predict_array
    calls = {"n": 0}

    def dies_on_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(engine, "predict_array", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        predict_files(run_3d, [inputs], tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.ome.tiff"]  # no partial of b
    monkeypatch.setattr(engine, "predict_array", real)
    results = predict_files(run_3d, [inputs], tmp_path / "out")
    assert [r.skipped for r in results] == [True, False]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.ome.tiff", "b.ome.tiff"]


def test_tta_and_threshold(run_2d, data_2d, tmp_path):
    image = sorted((data_2d / "images").iterdir())[0]
    (plain,) = predict_files(run_2d, [image], tmp_path / "p", options=Options(probabilities=True))
    (tta,) = predict_files(run_2d, [image], tmp_path / "t", options=Options(probabilities=True, tta=True))
    (mask,) = predict_files(run_2d, [image], tmp_path / "m", options=Options(threshold=0.5))
    p, q, m = (read_image(r.output, 2).data for r in (plain, tta, mask))
    assert p.shape == q.shape == (2, 96, 96) and not np.allclose(p, q)
    np.testing.assert_allclose(q.sum(0), 1.0, atol=1e-5)
    assert m.dtype == np.uint8 and m.shape == (1, 96, 96)
    np.testing.assert_array_equal(m[0], (p[1] >= 0.5).astype(np.uint8))


def test_bad_selections_are_one_line_errors(run_3d, run_2d, stack_5d, tmp_path, capsys):
    path, _ = stack_5d
    code, _, err = run_cli(["predict", str(run_3d), str(path), "--out", str(tmp_path / "o"), "--channels", "dapi"],
                           capsys)
    assert_clean_error(code, err, "timelapse.ome.tiff", "dapi", "'noisy'")
    code, _, err = run_cli(["predict", str(run_3d), str(path), "--out", str(tmp_path / "o")], capsys)
    assert_clean_error(code, err, "2 channel(s)", "--channels")
    code, _, err = run_cli(["predict", str(run_3d), str(path), "--out", str(tmp_path / "o"), "--channels", "1",
                            "--t", "1:5"], capsys)
    assert_clean_error(code, err, "--t 1:5", "2 t position(s)")
    assert not (tmp_path / "o").exists()
    # one plane of the stack through the 2D model
    code, out, _ = run_cli(["predict", str(run_2d), str(path), "--out", str(tmp_path / "o"), "--channels", "1",
                            "--z", "5", "--t", "0"], capsys)
    assert code == 0 and read_image(tmp_path / "o" / "timelapse.ome.tiff", 2).data.shape == (1, 40, 44)


def test_a_2d_model_predicts_a_stack_plane_by_plane(run_2d, data_2d, tmp_path, capsys):
    """A 10-plane stack (and a time-lapse of them) given to a 2D model: one stack out, each plane equal
    to predicting that plane alone; the CLI says so in a note."""
    planes = [tifffile.imread(p) for p in sorted((data_2d / "images").iterdir())]
    stack = np.stack([np.roll(planes[i % 3], 7 * i, axis=1) for i in range(10)])
    tifffile.imwrite(tmp_path / "stack.tif", stack, metadata={"axes": "ZYX"})
    code, out, _ = run_cli(["predict", str(run_2d), str(tmp_path / "stack.tif"), "--out", str(tmp_path / "o"),
                            "--probabilities"], capsys)
    assert code == 0 and "a 2D model on 10 Z planes: predicted plane by plane" in out
    got = read_image(tmp_path / "o" / "stack.ome.tiff", 3).data
    assert got.shape == (2, 10, 96, 96)
    model = load_model(run_2d)
    for z in (0, 4, 9):
        alone = engine.predict_array(model, stack[z][None].astype(np.float32), model.entry)
        np.testing.assert_allclose(got[:, z], alone, atol=1e-5)
    # a time-lapse of stacks, streamed tile by tile into OME-Zarr: (T, Z) planes
    tifffile.imwrite(tmp_path / "tl.tif", np.stack([stack[:3], stack[3:6]]), metadata={"axes": "TZYX"})
    (res,) = predict_files(run_2d, [tmp_path / "tl.tif"], tmp_path / "z", options=Options(probabilities=True),
                           selection=Selection(format="ome-zarr"))
    from bioio import BioImage

    tczyx = BioImage(res.output).get_image_data("TCZYX")
    assert tczyx.shape == (2, 2, 3, 96, 96)
    np.testing.assert_allclose(tczyx[1, :, 2], got[:, 5], atol=1e-5)


def test_a_grey_image_saved_as_rgb_predicts_as_its_grey_channel(run_2d, data_2d, tmp_path, capsys):
    grey = tifffile.imread(sorted((data_2d / "images").iterdir())[0])
    grey8 = (255 * (grey - grey.min()) / (grey.max() - grey.min())).astype(np.uint8)
    from PIL import Image as PILImage

    PILImage.fromarray(np.stack([grey8] * 3, axis=-1)).save(tmp_path / "rgb.png")
    PILImage.fromarray(np.dstack([grey8] * 3 + [np.full_like(grey8, 255)])).save(tmp_path / "rgba.png")
    PILImage.fromarray(grey8).save(tmp_path / "grey.png")
    code, out, _ = run_cli(["predict", str(run_2d), str(tmp_path / "rgb.png"), str(tmp_path / "rgba.png"),
                            str(tmp_path / "grey.png"), "--out", str(tmp_path / "o"), "--probabilities"], capsys)
    assert code == 0 and "rgb.png: its 3 channels hold one grey image" in out and "rgba.png: its 4" in out
    want = read_image(tmp_path / "o" / "grey.ome.tiff", 2).data
    for name in ("rgb", "rgba"):
        np.testing.assert_array_equal(read_image(tmp_path / "o" / f"{name}.ome.tiff", 2).data, want)
    # a real colour image is still refused, naming its channels
    colour = np.stack([grey8, grey8[::-1], grey8], axis=-1)
    PILImage.fromarray(colour).save(tmp_path / "colour.png")
    code, _, err = run_cli(["predict", str(run_2d), str(tmp_path / "colour.png"), "--out", str(tmp_path / "c")],
                           capsys)
    assert_clean_error(code, err, "colour.png", "3 channel(s)", "--channels")


def test_nan_input_is_refused(run_2d, tmp_path):
    img = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    img[3, 4] = np.nan
    tifffile.imwrite(tmp_path / "nan.tif", img)
    with pytest.raises(DataError, match="nan.tif.*NaN"):
        predict_files(run_2d, [tmp_path / "nan.tif"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_two_processes_write_the_same_bytes_as_one(run_2d, data_2d, tmp_path, capsys):
    """--devices 2 on CPU: Lightning splits the files over two processes; every output file has the
    bytes a single process writes (OME-Zarr chunks compared file by file)."""
    images = sorted((data_2d / "images").iterdir())
    one = predict_files(run_2d, images, tmp_path / "one", selection=Selection(format="ome-zarr"))
    code, out, err = run_cli(["predict", str(run_2d), *map(str, images), "--out", str(tmp_path / "two"),
                              "--format", "ome-zarr", "--devices", "2"], capsys)
    assert code == 0, err
    assert "3 predicted" in out
    for r in one:
        other = tmp_path / "two" / r.output.name
        files = sorted(p.relative_to(r.output) for p in r.output.rglob("*") if p.is_file())
        assert files == sorted(p.relative_to(other) for p in other.rglob("*") if p.is_file())
        for f in files:
            if f.name.endswith(".json") or f.name.startswith(".z"):
                continue  # metadata (identical content, key order may differ)
            assert (r.output / f).read_bytes() == (other / f).read_bytes(), f
    # a bad input in one process is one error line from the main process
    code, _, err = run_cli(["predict", str(run_2d), str(images[0]), str(data_2d / "labels" / images[1].name),
                            "--out", str(tmp_path / "bad"), "--devices", "2", "--channels", "3"], capsys)
    assert_clean_error(code, err, "channel")


def test_a_segmentation_written_as_ome_zarr_is_an_ngff_label_image_and_reads_back(run_2d, data_2d, tmp_path):
    """The labels of a segmentation run: an image whose `labels/<name>` is an NGFF label image (as
    ome-zarr-py reads it), with the pixels of the OME-TIFF output, and readable as an input again."""
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Reader

    image = sorted((data_2d / "images").iterdir())[0]
    (tif,) = predict_files(run_2d, [image], tmp_path / "t")
    (res,) = predict_files(run_2d, [image], tmp_path / "z", selection=Selection(format="ome-zarr"))
    want = read_image(tif.output, 2).data
    assert want.dtype == np.uint8 and read_image(res.output, 2).data.tolist() == want.tolist()
    (label,) = [n for n in Reader(parse_url(str(res.output)))() if any(isinstance(s, Label) for s in n.specs)]
    assert label.zarr.path.rstrip("/").endswith(f"labels/{image.stem}")
    np.testing.assert_array_equal(np.asarray(label.data[0])[0, :, 0], want)
    # probabilities are an image, not labels
    (probs,) = predict_files(run_2d, [image], tmp_path / "p", options=Options(probabilities=True),
                             selection=Selection(format="ome-zarr"))
    assert not (probs.output / "labels").exists()
