"""Per-pixel uncertainty beside a prediction: the spread of several predictions of the same image.

- `tta`: the model on every flip of the space axes (4 in 2D, 8 in 3D), each flipped back;
- `dropout`: a run's network `samples` times with its dropout layers active (Monte-Carlo dropout; the
  network must have been trained with dropout, e.g. `--set network.dropout=0.1`);
- `ensemble`: several runs, zoo entries or packages of the same task and channels.

The prediction is made from the mean of the samples (segmentation: the class probabilities averaged,
then labelled as without uncertainty; regression: the mean). The map is the predictive entropy of the
mean probabilities in nats (segmentation; 0 where every sample is sure of one class, log K at most) or
the variance of the samples per output channel (regression). `UncertainPredictor` wraps whole-frame
predictors of any kind; `predict_file` writes the map as `<stem>_uncertainty.ome.tiff` next to the
prediction, with its shape, pixel sizes and time points (`Predictor.companions`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import DataError
from ..frameworks.finish import task_postprocess
from ..settings.predict import Options
from .predictor import Predictor

METHODS = ("tta", "dropout", "ensemble")
SUFFIX = "_uncertainty"
DEFAULT_DROPOUT_SAMPLES = 8


class UncertainPredictor(Predictor):
    """Predictions from the mean of several samples, with a per-pixel uncertainty map as a companion."""

    def __init__(self, members: list[Predictor], method: str, options: Options, samples: int | None = None) -> None:
        """`members`: predictors opened to return raw outputs (probabilities for segmentation); `options`:
        the user's options (threshold, probabilities) for the final prediction."""
        if method not in METHODS:
            raise DataError(f"--uncertainty {method!r}: choose {', '.join(METHODS)}")
        if not members:
            raise DataError("--uncertainty: no model to sample")
        first = members[0]
        self.members, self.method, self.options = members, method, options
        self.spatial_dims, self.in_channels = first.spatial_dims, first.in_channels
        self.task = first.task or "regression"
        self.raw_names = first.output_names()
        if self.task == "instance":
            raise DataError("--uncertainty: instance models are not supported (their outputs are labels "
                            "clustered from embeddings); use a segmentation or regression model")
        for m in members[1:]:
            if (m.task or "regression", m.spatial_dims, m.in_channels, m.output_names()) != (
                    self.task, self.spatial_dims, self.in_channels, self.raw_names):
                raise DataError("--uncertainty ensemble: the models differ in task, dimensions or channels "
                                f"({self.task} {self.spatial_dims}D {self.raw_names} vs {m.task} "
                                f"{m.spatial_dims}D {m.output_names()})")
        if method == "ensemble" and len(members) < 2:
            raise DataError("--uncertainty ensemble needs at least two models: add --member SOURCE")
        if method == "dropout":
            from .engine import RunPredictor, has_dropout

            if not isinstance(first, RunPredictor) or len(members) > 1:
                raise DataError("--uncertainty dropout needs one trained run (its network is sampled); "
                                "packages and zoo entries: use tta or ensemble")
            if not has_dropout(first.model):
                raise DataError(f"{first.model.entry.slug}: its network has no dropout layers; MC dropout needs "
                                "one trained with dropout (e.g. --set network.dropout=0.1); or use tta or ensemble")
        self.samples = samples if samples is not None else DEFAULT_DROPOUT_SAMPLES
        if self.samples < 2:
            raise DataError(f"--samples {samples}: at least 2")
        self.finish, self.names = task_postprocess(self.task, self.raw_names, options)

    def output_names(self) -> list[str]:
        return self.names

    def pixel_sizes(self, from_file: dict[str, float | None]) -> dict[str, float | None]:
        return self.members[0].pixel_sizes(from_file)  # e.g. an entry's axis scales where the file has none

    def companion_names(self) -> dict[str, list[str]]:
        if self.task == "segmentation":
            return {SUFFIX: ["entropy"]}
        return {SUFFIX: [f"{n}_variance" for n in self.raw_names]}

    def _draws(self, x: np.ndarray) -> list[np.ndarray]:
        if self.method == "ensemble":
            return [m(x)[0].astype(np.float32) for m in self.members]
        member = self.members[0]
        if self.method == "tta":
            from .engine import flip_sets

            out = []
            for flip in flip_sets(self.spatial_dims, first=1):
                xi = np.ascontiguousarray(np.flip(x, flip)) if flip else x
                y = member(xi)[0].astype(np.float32)
                out.append(np.ascontiguousarray(np.flip(y, flip)) if flip else y)
            return out
        from .engine import predict_array

        finish, _ = member.model.postprocess(member.options)
        return [predict_array(member.model, x, member.entry, options=member.options, finish=finish,
                              mc_dropout=True).astype(np.float32) for _ in range(self.samples)]

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, list[str]]:
        y, names, _ = self.with_companions(x)
        return y, names

    def with_companions(self, x: np.ndarray) -> tuple[np.ndarray, list[str], dict[str, tuple[np.ndarray, list[str]]]]:
        draws = np.stack(self._draws(x))
        mean = draws.mean(0)
        if self.task == "segmentation":
            p = np.clip(mean, 1e-12, 1.0)
            spread = -(p * np.log(p)).sum(0, keepdims=True)
        else:
            spread = draws.var(0)
        name, names = next(iter(self.companion_names().items()))
        return self.finish(mean), self.names, {name: (spread.astype(np.float32), names)}


def open_uncertain(sources: list[Any], method: str, options: Options, samples: int | None = None,
                   trust_code: bool = False, weight_format: str | None = None) -> UncertainPredictor:
    """The members of `sources` opened for raw outputs, wrapped; DataError naming what does not fit."""
    from .sources import open_predictor

    if method not in METHODS:
        raise DataError(f"--uncertainty {method!r}: choose {', '.join(METHODS)}")
    if options.tta:
        raise DataError("--tta and --uncertainty: --uncertainty tta already averages over the flips")
    raw = options.model_copy(update={"probabilities": True, "threshold": None})
    members = [open_predictor(s, trust_code=trust_code, weight_format=weight_format, options=raw) for s in sources]
    return UncertainPredictor(members, method, options, samples)
