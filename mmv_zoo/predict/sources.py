"""Where a model comes from, decided once: a run folder, a checkpoint, a BioImage.IO package (ours or
anyone's) or a zoo entry. `resolve_source` is the one place that tells them apart; prediction,
evaluation, export and the command line all ask it. `open_predictor` gives the predictor of a source,
`pull_weights` fetches a source's pretrained weights (an entry's, or a URL, DOI or file).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..entry import RDF_NAME, Entry, load_entry
from ..errors import EntryError, RunError
from ..remote.pretrained import PretrainedPackage, entry_package, is_doi, pull_source
from ..run import RunFolder, load_im2im_checkpoint
from ..settings.predict import Options
from .engine import EntryPredictor, RunPredictor
from .package_predictor import check_label_options, is_package
from .predictor import Predictor
from .verified_package import open_package

Kind = Literal["run", "checkpoint", "package", "entry"]
WHAT = "a run folder, checkpoint, BioImage.IO package or zoo entry"


@dataclass(frozen=True)
class Source:
    """A model reference resolved: what it is, and its run or entry where it has one."""

    kind: Kind
    ref: str
    """As the user gave it."""
    path: Path
    run: RunFolder | None = None
    """The run of a run folder, or the run a checkpoint belongs to (None for a loose checkpoint)."""
    entry: Entry | None = None
    """The loaded entry of kind `entry`."""


def resolve_source(source: str | Path) -> Source:
    """Tell what `source` is; RunError (or the entry's own EntryError) when it is none of them.

    A package (.zip, or an rdf listing weights) comes first, then a run (a folder with run.json or
    checkpoints/, a .ckpt file, or any folder without an rdf.yaml: its error says what a run lacks),
    then a zoo entry (name, folder or rdf.yaml)."""
    path = Path(source)
    if is_package(path):
        return Source("package", str(source), path)
    if path.is_file() and path.suffix == ".ckpt":
        return Source("checkpoint", str(source), path, run=RunFolder.of(path))
    if RunFolder.looks_like(path) or (path.is_dir() and not (path / RDF_NAME).exists()):
        return Source("run", str(source), path, run=RunFolder(path))
    try:
        entry = load_entry(source)
    except EntryError:
        if path.exists():
            raise
        raise RunError(f"{source}: not {WHAT}") from None
    return Source("entry", str(source), entry.source or path, entry=entry)


def open_predictor(source: str | Path | Source, probabilities: bool = False, overlap: float = 0.0,
                   trust_code: bool = False, weight_format: str | None = None,
                   options: Options | None = None) -> Predictor:
    """A run folder or checkpoint -> RunPredictor; a BioImage.IO package -> its predictor (`open_package`); a zoo
    entry with pretrained weights -> EntryPredictor (or, for MMV_Im2Im weights, the entry's framework
    around them)."""
    options = options or Options(probabilities=probabilities, overlap=overlap)
    src = source if isinstance(source, Source) else resolve_source(source)
    if options.direction is not None and src.kind not in ("run", "checkpoint"):
        raise RunError(f"{src.ref}: --direction {options.direction} is for CycleGAN runs; a package or zoo entry "
                       "predicts in the one direction it was exported for")
    if src.kind == "package":
        predictor = open_package(src.path, trust_code=trust_code, weight_format=weight_format,
                                 border=options.border, raw=options.probabilities, seed_threshold=options.threshold,
                                 halo=options.halo)
        if getattr(predictor, "labels_inside", False):
            check_label_options(src.ref, options.probabilities, options.threshold, options.halo)
        return predictor
    if src.kind in ("run", "checkpoint"):
        return RunPredictor(src.path, options=options)  # says what a run folder lacks
    entry = src.entry
    assert entry is not None
    pre = entry.mmv.pretrained
    if pre is not None and pre.format == "mmv_im2im_checkpoint":  # the entry's network, weights from MMV_Im2Im
        ckpt = entry_package(entry).path
        return RunPredictor(ckpt, model=load_im2im_checkpoint(entry, ckpt), options=options)
    return EntryPredictor(entry, trust_code=trust_code, weight_format=weight_format, options=options)


def pull_weights(source: str, sha256: str | None = None, file: str | None = None,
                 member: str | None = None) -> PretrainedPackage:
    """Fetch (or find in the cache) and verify pretrained weights: a zoo entry's (name, folder or
    rdf.yaml), or a package or checkpoint by URL, Zenodo DOI or path (with `sha256`; `file` picks one of
    a DOI record's files, `member` one file of an archive)."""
    path = Path(source)
    if "://" in source or is_doi(source) or (path.is_file() and path.suffix.lower() not in (".yaml", ".yml")):
        return pull_source(source, sha256, file=file, member=member)
    if sha256 is not None or file is not None or member is not None:
        raise EntryError(f"{source}: --sha256, --file and --member are for a URL, DOI or path; a zoo entry "
                         "records them in config.mmv_zoo.pretrained")
    return entry_package(load_entry(source))
