"""The `mmv-zoo` command: parses arguments, loads the entry and calls the library. Nothing heavy is
imported at start-up; each verb imports what it needs."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ..settings.predict import Options, Selection

app = typer.Typer(
    name="mmv-zoo",
    help="Declarative deep-learning image-to-image transformation for microscopy: train, export, predict.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

STATE = {"debug": False}
TASKS = ("segmentation", "regression", "instance")

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override an entry field, e.g. training.max_epochs=5 (repeatable; YAML values)."),
]


def _console():
    from rich.console import Console

    return Console()


@app.callback()
def _root(debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks on errors.")] = False) -> None:
    STATE["debug"] = debug


@app.command()
def validate(
    paths: Annotated[list[str] | None, typer.Argument(help="Entry names, entry folders or rdf.yaml files.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every entry of the bundled zoo.")] = False,
    set_: SetOption = None,
) -> None:
    """Validate zoo entries; prints one line per problem and exits non-zero if any entry is invalid."""
    from ..entry import bundled_entries, load_entry
    from ..errors import EntryError

    refs = [*(paths or []), *(bundled_entries() if all_ else [])]
    if not refs:
        raise EntryError("validate: give entries (names, folders or rdf.yaml files) or --all for the bundled zoo")
    console, failed = _console(), 0
    for p in refs:
        if p.lower().endswith(".md") and Path(p).is_file():  # `validate my_zoo/*` meets my_zoo/README.md
            console.print(f"[dim]skipped[/dim] {p} (documentation, not an entry)", highlight=False, soft_wrap=True)
            continue
        try:
            entry = load_entry(p, set_)
        except EntryError as e:
            failed += 1
            console.print(f"[red]invalid[/red] {e}", highlight=False, soft_wrap=True)
        else:
            console.print(f"[green]valid[/green]   {entry.source}", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


@app.command("list")
def list_entries(
    task: Annotated[str | None, typer.Option(help="Only entries of this task: segmentation, regression, "
                                                 "instance.")] = None,
    dims: Annotated[int | None, typer.Option(help="Only 2D or only 3D entries: 2 or 3.")] = None,
    framework: Annotated[str | None, typer.Option(help="Only entries of this framework, e.g. fcn, pix2pix, "
                                                      "cyclegan, embedseg.")] = None,
) -> None:
    """Show the zoo's entries as a table (weights: where pretrained weights come from; data: bundled,
    recipe or described)."""
    from rich.table import Table

    from ..catalog.listing import COLUMNS, catalog
    from ..errors import EntryError

    if task is not None and task not in TASKS:
        raise EntryError(f"--task {task!r}: not a task; valid: {', '.join(TASKS)}")
    if dims is not None and dims not in (2, 3):
        raise EntryError(f"--dims {dims}: entries are 2 or 3 dimensional")
    rows = catalog(task=task, dims=dims, framework=framework)
    if not rows:
        every = catalog()
        _console().print(f"no entries match (frameworks in the zoo: {', '.join(sorted({r.framework for r in every}))})",
                         highlight=False)
        return
    table = Table(title="mmv_zoo entries")
    for col in COLUMNS:
        table.add_column(col, no_wrap=col == "entry")
    for row in rows:
        table.add_row(*row.cells())
    console = _console()
    if not console.is_terminal:  # piped or captured (grep, CI logs): whole rows rather than 80 columns
        console.width = 240
    console.print(table)


@app.command()
def show(
    entry: Annotated[str, typer.Argument(help="Entry name, folder or rdf.yaml.")],
    set_: SetOption = None,
    card: Annotated[bool, typer.Option("--card", help="Print the entry's card (description, citations, data, "
                                                      "metrics, weights) instead of its YAML.")] = False,
) -> None:
    """Print an entry with every default filled in (after --set overrides), or its card."""
    from ..catalog.listing import card as entry_card
    from ..catalog.listing import pretrained_note
    from ..entry import entry_to_yaml, load_entry

    e = load_entry(entry, set_)
    if card:
        sys.stdout.write(entry_card(e))
        return
    sys.stdout.write(f"# {e.source}\n{entry_to_yaml(e)}")
    note = pretrained_note(e)
    if note is not None:
        sys.stdout.write(f"# {note}\n")


@app.command("stain-reference")
def stain_reference(
    image: Annotated[Path, typer.Argument(help="An RGB brightfield image (H&E, IHC) stained as you want all "
                                               "images to look.")],
    intensity: Annotated[float, typer.Option(help="Background brightness Io (240 for 8-bit images).")] = 240.0,
) -> None:
    """Print the `kind: macenko` normalization block (reference stains of IMAGE) to paste into an entry."""
    import yaml

    from ..transforms.stain import reference_from_image

    block = {"kind": "macenko", "reference": reference_from_image(image, intensity=intensity),
             "intensity": intensity}
    sys.stdout.write(f"# Macenko reference of {image}: config.mmv_zoo.data.normalization.source\n"
                     + yaml.safe_dump({"source": block}, sort_keys=False, default_flow_style=None))


@app.command()
def schema() -> None:
    """Print the JSON schema of zoo entries (rdf.yaml)."""
    import json

    from ..entry import json_schema

    sys.stdout.write(json.dumps(json_schema(), indent=1) + "\n")


@app.command()
def new(
    entry: Annotated[str, typer.Argument(help="Name of the new entry (its folder): letters, digits, _ and -.")],
    template: Annotated[str, typer.Option("--from", help="The entry to start from: a zoo entry name, folder or "
                                                        "rdf.yaml.")],
    zoo: Annotated[Path, typer.Option(help="Your zoo folder, entries are <zoo>/<name>/rdf.yaml (default: ./zoo "
                                           "in the current folder).")] = Path("zoo"),
) -> None:
    """Create a new entry from an existing one, to adapt its method to your data by editing YAML: the
    template's rdf.yaml without its trained weights and data (pretrained, recipe, paper, training_data),
    and a README saying what to edit."""
    from ..catalog.scaffold import new_entry

    done = new_entry(entry, template, zoo)
    console = _console()
    console.print(f"[bold green]created[/bold green] {done.folder} from {done.template}", highlight=False,
                  soft_wrap=True)
    if done.dropped:
        console.print(f"  left out   {', '.join(done.dropped)} (the template's own model and data)",
                      highlight=False, soft_wrap=True)
    console.print(f"  next: edit {done.folder / 'rdf.yaml'}: data layout folders, channels, normalization "
                  f"(see {done.folder / 'README.md'}), then\n"
                  f"        mmv-zoo validate {done.folder}\n"
                  f"        mmv-zoo train {done.folder} --data DIR", highlight=False, soft_wrap=True)


@app.command()
def train(
    entry: Annotated[str | None, typer.Argument(help="Entry name, folder or rdf.yaml (not with --resume).")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="Training data folder (laid out as the entry says; "
                                                             "with --resume: default the run's).")] = None,
    out: Annotated[Path, typer.Option("--out", help="Runs folder; the run goes to OUT/<entry>/<run-id>/.")] = Path(
        "runs"
    ),
    resume: Annotated[Path | None, typer.Option("--resume", help="Continue an interrupted run folder from its "
                                                                 "checkpoints/last.ckpt, in the same folder.")] = None,
    set_: SetOption = None,
    progress: Annotated[bool, typer.Option(help="Show a progress bar.")] = True,
) -> None:
    """Train an entry on your data with PyTorch Lightning (GPU when there is one, else CPU), or resume a run."""
    from ..errors import EntryError

    if resume is not None:
        if entry is not None:
            raise EntryError(f"--resume {resume}: give the run folder only (its rdf.yaml is the entry), not {entry}")
        from ..training.train import resume as resume_training

        result = resume_training(resume, data, set_, progress=progress)
    else:
        if entry is None or data is None:
            raise EntryError("train: give ENTRY and --data DIR (or --resume RUN)")
        from ..entry import load_entry
        from ..training.train import train as run_training

        e = load_entry(entry, set_)
        result = run_training(e, data, out, progress=progress)
    if result.rank:  # another DDP process: rank 0 reports
        return
    console = _console()
    console.print(f"[bold green]trained[/bold green] {result.folder.parent.name} in {result.seconds:.0f} s",
                  highlight=False)
    console.print(f"  run folder       {result.folder}", highlight=False, soft_wrap=True)
    score = "n/a" if result.best_score is None else f"{result.best_score:.4f}"
    console.print(f"  best checkpoint  {result.best_checkpoint} (score {score})", highlight=False, soft_wrap=True)
    console.print(f"  last checkpoint  {result.last_checkpoint}", highlight=False, soft_wrap=True)
    console.print(f"  metrics          {result.metrics_csv}", highlight=False, soft_wrap=True)
    if result.loss_plot:
        console.print(f"  loss curve       {result.loss_plot}", highlight=False, soft_wrap=True)
    console.print(f"  resolved entry   {result.folder / 'rdf.yaml'}", highlight=False, soft_wrap=True)
    for problem in result.skipped:
        console.print(f"  [yellow]skipped[/yellow]          {problem}", highlight=False, soft_wrap=True)


@app.command()
def tune(
    what: Annotated[str, typer.Argument(help="lr (learning-rate finder) or batch-size (largest batch that fits).")],
    entry: Annotated[str, typer.Argument(help="Entry name, folder or rdf.yaml.")],
    data: Annotated[Path, typer.Option("--data", help="Training data folder (laid out as the entry says).")],
    out: Annotated[Path | None, typer.Option("--out", help="Where to write the tuned entry (default "
                                                           "tuned/<entry>/rdf.yaml).")] = None,
    steps: Annotated[int, typer.Option(min=10, help="lr: training steps of the range test.")] = 60,
    max_batch_size: Annotated[int, typer.Option(min=1, help="batch-size: stop doubling here.")] = 256,
    set_: SetOption = None,
) -> None:
    """Run Lightning's learning-rate finder or batch-size scaler and write the result into a resolved entry."""
    from ..entry import load_entry
    from ..training.tune import tune as run_tune

    e = load_entry(entry, set_)
    result = run_tune(what, e, data, out, num_training=steps, max_batch_size=max_batch_size)
    _console().print(f"[bold green]{result.field}[/bold green] {result.value:g} (was {result.before:g})\n"
                     f"  tuned entry  {result.entry_file}\n  train with   mmv-zoo train {result.entry_file} "
                     f"--data {data}", highlight=False, soft_wrap=True)


def _help(model: Any, field: str) -> str:
    """The help of an option: the docstring of the library field it sets (written once)."""
    return " ".join((model.model_fields[field].description or "").split())


@app.command()
def predict(
    source: Annotated[str, typer.Argument(help="A run folder, a checkpoint (.ckpt), a BioImage.IO package "
                                               "(.zip, folder or rdf.yaml; ours or anyone's) or a zoo entry "
                                               "with pretrained weights.")],
    inputs: Annotated[list[str], typer.Argument(help="Images, folders or glob patterns (2D-5D; TIFF, OME-TIFF, "
                                                      "PNG, OME-Zarr).")],
    out: Annotated[Path, typer.Option("--out", help="Output folder (one OME-TIFF or OME-Zarr per input scene).")],
    overwrite: Annotated[bool, typer.Option(help="Replace existing outputs (default: skip them).")] = False,
    probabilities: Annotated[bool, typer.Option(help=_help(Options, "probabilities"))] = False,
    overlap: Annotated[float, typer.Option(min=0.0, max=0.9, help=_help(Options, "overlap"))] = 0.0,
    channels: Annotated[str | None, typer.Option(help=_help(Selection, "channels"))] = None,
    t: Annotated[str | None, typer.Option("--t", help=_help(Selection, "t"))] = None,
    z: Annotated[str | None, typer.Option("--z", help=_help(Selection, "z"))] = None,
    scene: Annotated[str | None, typer.Option(help=_help(Selection, "scenes"))] = None,
    output_format: Annotated[str, typer.Option("--format", help=_help(Selection, "format"))] = "auto",
    tta: Annotated[bool, typer.Option(help=_help(Options, "tta"))] = False,
    threshold: Annotated[float | None, typer.Option(help=_help(Options, "threshold"))] = None,
    trust_code: Annotated[bool, typer.Option(help="Packages: allow pytorch_state_dict weights, which run the "
                                                  "package's own Python code.")] = False,
    weights: Annotated[str | None, typer.Option(help="Packages: weight format to use (torchscript, onnx, "
                                                     "pytorch_state_dict); default: the first that passes "
                                                     "the package's own test.")] = None,
    border: Annotated[str | None, typer.Option(help=_help(Options, "border"))] = None,
    direction: Annotated[str | None, typer.Option(help=_help(Options, "direction"))] = None,
    halo: Annotated[str | None, typer.Option(help=_help(Options, "halo") + " Comma-separated, e.g. 8,32,32.")] = None,
    devices: Annotated[int, typer.Option(min=1, help="Processes per node (GPUs, or CPU processes) that share "
                                                     "the files, through Lightning.")] = 1,
    num_nodes: Annotated[int, typer.Option(min=1, help="Nodes (e.g. under SLURM), through Lightning.")] = 1,
    uncertainty: Annotated[str | None, typer.Option(help="Also write a per-pixel uncertainty map "
                                                         "<name>_uncertainty.ome.tiff: tta (over flips), "
                                                         "dropout (MC dropout of a run trained with dropout) "
                                                         "or ensemble (with --member); entropy for "
                                                         "segmentation, variance for regression.")] = None,
    samples: Annotated[int | None, typer.Option(min=2, help="--uncertainty dropout: forward passes "
                                                            "(default 8).")] = None,
    member: Annotated[list[str] | None, typer.Option(help="--uncertainty ensemble: another run, entry or "
                                                          "package (repeat the option).")] = None,
) -> None:
    """Predict images (2D-5D: scenes, time points, channels, z) with a run, a BioImage.IO package or a
    zoo entry with weights; outputs keep the inputs' pixel sizes, channel names and time steps."""
    from ..predict.batch import predict_files

    selection = Selection.parse(channels=channels, t=t, z=z, scenes=scene, format=output_format)
    options = Options.checked(probabilities=probabilities, overlap=overlap, tta=tta, threshold=threshold,
                              direction=direction, border=border, halo=_ints("--halo", halo))
    console = _console()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True, disable=not console.is_terminal) as progress:
        tiles = progress.add_task("tiles", total=None)

        def report(p) -> None:
            state = "[yellow]skipped (exists)[/yellow]" if p.skipped else "[green]wrote[/green]"
            console.print(f"{state} {p.output}  <-  {p.input}", highlight=False, soft_wrap=True)
            for note in p.notes:
                console.print(f"[dim]note:[/dim] {note}", highlight=False, soft_wrap=True)

        def tile(done: int, total: int) -> None:
            progress.update(tiles, completed=done, total=total)

        done = predict_files(source, inputs, out, overwrite, on_file=report, trust_code=trust_code,
                             weight_format=weights, options=options, selection=selection, on_tile=tile,
                             devices=devices, num_nodes=num_nodes, uncertainty=uncertainty, samples=samples,
                             members=member)
    console.print(f"{sum(not p.skipped for p in done)} predicted, {sum(p.skipped for p in done)} skipped -> {out}",
                  highlight=False)


def _ints(name: str, value: str | None) -> list[int] | None:
    from ..errors import DataError

    if value is None:
        return None
    try:
        return [int(v) for v in value.split(",")]
    except ValueError:
        raise DataError(f"{name} {value!r}: expected whole numbers separated by commas, e.g. 8,32,32") from None


@app.command()
def evaluate(
    data: Annotated[Path, typer.Option("--data", help="Labelled data folder, laid out as the entry's data "
                                                      "(e.g. images/ and labels/, or its CSV).")],
    source: Annotated[str | None, typer.Argument(help="What predict takes: a run folder, checkpoint, BioImage.IO "
                                                      "package or zoo entry with weights. With --predictions it "
                                                      "only gives the task, classes and data layout.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Output folder (default evaluation/<source name>/): "
                                                           "metrics.csv, evaluation.png, predictions/.")] = None,
    predictions: Annotated[Path | None, typer.Option(help="Score the images already in this folder (matched to "
                                                          "sources by file name) instead of predicting.")] = None,
    task: Annotated[str | None, typer.Option(help="regression, segmentation or instance; needed when SOURCE "
                                                  "does not say (no SOURCE, or anyone's package).")] = None,
    split: Annotated[str, typer.Option(help="all: every pair in --data; val: the pairs the run held back "
                                            "for validation.")] = "all",
    trust_code: Annotated[bool, typer.Option(help="Packages: allow pytorch_state_dict weights (runs the "
                                                  "package's own Python code).")] = False,
    uncertainty: Annotated[str | None, typer.Option(help="Predict with an uncertainty map (tta, dropout or "
                                                         "ensemble, as predict) and score how well it ranks "
                                                         "the errors.")] = None,
    samples: Annotated[int | None, typer.Option(min=2, help="--uncertainty dropout: forward passes.")] = None,
    member: Annotated[list[str] | None, typer.Option(help="--uncertainty ensemble: another model (repeat).")]
    = None,
) -> None:
    """Score a model on labelled data with the paper's metrics: Pearson, SSIM and PSNR (regression), F1 and
    IoU per class (segmentation), AP at IoU 0.5 and mean AP 0.5-0.95 (instances); prints a table and writes
    metrics.csv and a figure (input | prediction | truth | errors)."""
    from rich.table import Table

    from ..evaluate.scoring import evaluate as run_evaluation

    console = _console()

    def report(r) -> None:
        console.print(f"[green]scored[/green] {r.name}", highlight=False, soft_wrap=True)

    result = run_evaluation(source, data, out, predictions=predictions, task=task, split=split,
                            trust_code=trust_code, on_image=report, uncertainty=uncertainty,
                            samples=samples, members=member)
    n = len(result.images)
    table = Table(title=f"{result.task} scores ({n} image{'s' if n != 1 else ''})")
    counts = [c for c in ("n_true", "n_pred", "tp50", "fp50", "fn50") if c in result.columns]  # one column
    shown = [c for c in result.columns if c not in counts]
    table.add_column("image", overflow="fold")
    for col in shown:
        table.add_column(col, justify="right", no_wrap=True)
    if counts:
        table.add_column("true/pred: tp/fp/fn", justify="right", no_wrap=True)

    def cells(row: dict, with_counts: bool = True) -> list[str]:
        got = [_score_text(row[c]) for c in shown]
        if counts:
            got.append(f"{row['n_true']}/{row['n_pred']}: {row['tp50']}/{row['fp50']}/{row['fn50']}"
                       if with_counts else "")
        return got

    for i, r in enumerate(result.images):
        table.add_row(r.name, *cells(r.scores), end_section=i == len(result.images) - 1)
    for label, row in result.summary.items():
        table.add_row(f"[bold]{label}[/bold]", *(f"[bold]{v}[/bold]" for v in cells(row, label != "mean")))
    console.print(table)
    for note in result.notes:
        console.print(f"[yellow]note[/yellow] {note}", highlight=False, soft_wrap=True)
    console.print(f"  metrics      {result.metrics_csv}", highlight=False, soft_wrap=True)
    console.print(f"  figure       {result.figure}", highlight=False, soft_wrap=True)
    console.print(f"  predictions  {result.predictions}", highlight=False, soft_wrap=True)


def _score_text(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    return f"{v:.4f}" if abs(v) < 1e6 else f"{v:g}"


def _formats(text: str | None) -> tuple[str, ...] | None:
    """--formats as a tuple (None: the export's default for the run's task)."""
    return None if text is None else tuple(f.strip() for f in text.split(",") if f.strip())


@app.command()
def export(
    source: Annotated[str, typer.Argument(help="A run folder or a checkpoint (.ckpt).")],
    out: Annotated[Path, typer.Option("--out", help="The package to write, e.g. model.zip.")],
    sample: Annotated[Path | None, typer.Option(help="Image for the test tensors and cover (default: the "
                                                     "run's first validation image).")] = None,
    formats: Annotated[str | None, typer.Option(help="Weight formats, comma-separated: torchscript, "
                                                     "pytorch_state_dict, onnx (default: torchscript,"
                                                     "pytorch_state_dict; torchscript for instance labels).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing package at --out.")] = False,
    direction: Annotated[str | None, typer.Option(help="CycleGAN runs: the direction to export, a2b (the entry's "
                                                       "inputs to outputs) or b2a; one package each.")] = None,
    embeddings: Annotated[bool, typer.Option(help="Instance (EmbedSeg) runs: a package of the raw embeddings "
                                                  "(any format) instead of the labels clustered inside its "
                                                  "TorchScript.")] = False,
    class_labels: Annotated[bool, typer.Option("--class-labels/--no-class-labels", help="Segmentation runs: a "
                                               "second output with the class labels (argmax) beside the "
                                               "probabilities; --no-class-labels keeps one output, as QuPath "
                                               "needs.")] = True,
) -> None:
    """Export a trained run as a BioImage.IO model package, tested by bioimageio.core before it is kept."""
    from ..export.package import export_package

    result = export_package(source, out, sample=sample, formats=_formats(formats), overwrite=overwrite,
                            direction=direction, embeddings=embeddings, class_labels=class_labels)
    _console().print(f"[bold green]exported[/bold green] {result.zip_path} ({', '.join(result.formats)}; "
                     f"bioimageio.core test_model: {result.test_status})", highlight=False, soft_wrap=True)


@app.command()
def pull(
    source: Annotated[str, typer.Argument(help="A zoo entry with pretrained weights, a URL, a Zenodo DOI or a path.")],
    sha256: Annotated[str | None, typer.Option(help="Expected sha256 (URL/DOI/path only).")] = None,
    file: Annotated[str | None, typer.Option(help="DOI records with several files: the one to fetch.")] = None,
    member: Annotated[str | None, typer.Option(help="Archives (URL/DOI/path only): extract only this file, "
                                                    "e.g. models/denoising/planaria.ckpt.")] = None,
) -> None:
    """Download (or find in the cache) pretrained weights and verify their sha256."""
    from ..predict.sources import pull_weights

    got = pull_weights(source, sha256, file=file, member=member)
    how = ("sha256 recorded on first use (trust on first use: check it against the publisher's)"
           if got.trusted_on_first_use else "sha256 verified" if got.checked
           else "sha256 (nothing to check it against: pass --sha256)")
    where = "local file" if got.local else "from the cache" if got.from_cache else "downloaded"
    console = _console()
    if got.member is None:
        console.print(f"[green]{how}[/green] {got.sha256}", highlight=False)
        console.print(f"  {where}: {got.path}", highlight=False, soft_wrap=True)
        return
    console.print(f"[green]archive {how}[/green] {got.sha256}", highlight=False)
    console.print(f"  archive ({where}): {got.archive}", highlight=False, soft_wrap=True)
    console.print(f"  member {got.member}: {got.path}", highlight=False, soft_wrap=True)


@app.command()
def publish(
    run: Annotated[str, typer.Argument(help="A trained run folder.")],
    entry: Annotated[str, typer.Option("--entry", help="Name of the zoo entry to create or update.")],
    zoo: Annotated[Path, typer.Option(help="Your zoo folder, entries are <zoo>/<name>/rdf.yaml (default: ./zoo "
                                           "in the current folder).")] = Path("zoo"),
    sample: Annotated[Path | None, typer.Option(help="Image for the package's test tensors and cover.")] = None,
    formats: Annotated[str | None, typer.Option(help="Weight formats, comma-separated: torchscript, "
                                                     "pytorch_state_dict, onnx (ONNX lets predict start without "
                                                     "importing torch; default as for export).")] = None,
) -> None:
    """Export a run into a zoo entry: its tested package, sha256 and metrics, ready for predict and pull."""
    from ..catalog.publish import publish as do_publish

    done = do_publish(run, entry, zoo, sample, formats=_formats(formats))
    verb = "created" if done.created else "updated"
    _console().print(f"[bold green]{verb}[/bold green] {done.entry}\n  package {done.package}\n  sha256  "
                     f"{done.sha256}\n  try: mmv-zoo predict {done.entry.parent} IMAGE --out OUT", highlight=False,
                     soft_wrap=True)


@app.command()
def plan(
    data: Annotated[Path, typer.Argument(help="Your data folder, laid out as the task's zoo entry (e.g. "
                                              "images/ and labels/).")],
    task: Annotated[str, typer.Option("--task", help="segmentation, instance, regression or denoise.")],
    out: Annotated[Path, typer.Option("--out", help="The new entry's folder, e.g. my_zoo/my_nuclei.")],
    template: Annotated[str | None, typer.Option("--from", help="The entry whose method to start from (default: "
                                                               "the zoo's entry for the task and the data's "
                                                               "dimensions).")] = None,
    search: Annotated[int, typer.Option(min=0, help="Train this many variants of the plan (half patch, one "
                                                    "level fewer, lower learning rate, foreground patches) "
                                                    "with cross-validation and keep the best (0: no search).")]
    = 0,
    search_steps: Annotated[int, typer.Option(min=1, help="--search: optimizer steps per candidate and "
                                                          "fold.")] = 100,
    folds: Annotated[int, typer.Option(min=2, help="--search: folds of the cross-validation.")] = 3,
) -> None:
    """Derive an entry from your data: a fingerprint of the images (sizes, pixel sizes, channels,
    intensities, labels, objects) and the device's memory choose network depth and strides, patch,
    batch, normalization, sampling and training length; each value is commented with its reason."""
    from ..catalog.plan import plan_entry

    console = _console()

    def scored(name: str, score: float) -> None:
        console.print(f"  candidate {name}: {score:.4f}", highlight=False)

    done = plan_entry(data, task, out, template, search=search, search_steps=search_steps, folds=folds,
                      on_candidate=scored)
    console.print(f"[bold green]planned[/bold green] {done.folder / 'rdf.yaml'} (method of {done.template})",
                  highlight=False, soft_wrap=True)
    for key, why in done.reasons.items():
        console.print(f"  {key}: {why}", highlight=False, soft_wrap=True)
    console.print(f"  try: mmv-zoo train {done.folder} --data {data} --out runs", highlight=False, soft_wrap=True)


@app.command()
def gallery(
    out: Annotated[Path, typer.Option("--out", help="Folder to write the site into (index.html, entries/, ...).")],
    zoo: Annotated[Path | None, typer.Option(help="A zoo folder (<zoo>/<entry>/rdf.yaml); default: the bundled "
                                                  "zoo.")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
) -> None:
    """Write a static web site of a zoo: an index filterable by task, dimensions and framework, and a page
    per entry (cover, metrics beside the paper's, commands, package download). Opens from the file
    system or any static host."""
    from ..catalog.gallery import build_gallery

    site = build_gallery(out, zoo=zoo, overwrite=overwrite)
    _console().print(f"[bold green]wrote[/bold green] {site.index} ({len(site.pages)} entry pages, "
                     f"{len(site.packages)} packages)", highlight=False, soft_wrap=True)


data_app = typer.Typer(help="Public training data of zoo entries: download and arrange it.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("pull")
def data_pull(
    entry: Annotated[str, typer.Argument(help="A zoo entry with a data recipe (see `mmv-zoo list`).")],
    out: Annotated[Path, typer.Option("--out", help="Folder to write the arranged data into (created).")],
    overwrite: Annotated[bool, typer.Option(help="Replace a non-empty --out.")] = False,
) -> None:
    """Download an entry's public data (sha256-verified, cached, resumable) and arrange it into the
    entry's layout, ready for `mmv-zoo train ENTRY --data OUT`."""
    from ..entry import load_entry
    from ..recipes.pull import pull_data

    console = _console()
    loaded = load_entry(entry)
    done = pull_data(loaded, out, overwrite=overwrite,
                     report=lambda m: console.print(m, highlight=False, soft_wrap=True))
    console.print(f"[bold green]pulled[/bold green] {loaded.slug} data into {done.out}", highlight=False)
    for folder, n in sorted(done.files.items()):
        console.print(f"  {folder}: {n} file(s)", highlight=False)
    console.print(f"  try: mmv-zoo train {loaded.slug} --data {done.train} --out runs", highlight=False,
                  soft_wrap=True)


@app.command("test")
def test_package(
    package: Annotated[str, typer.Argument(help="A BioImage.IO package: .zip, folder or rdf.yaml.")],
    trust_code: Annotated[bool, typer.Option(help="Also test pytorch_state_dict weights (runs the package's "
                                                  "Python code).")] = False,
) -> None:
    """Run bioimageio.core's checks on a package, every weight format; exit 1 if any fails."""
    from rich.table import Table

    from ..predict.package_predictor import package_tests

    tested = package_tests(package, trust_code=trust_code)
    table = Table(title=f"{tested.name} ({package})")
    table.add_column("weights")
    table.add_column("bioimageio.core test_model")
    for fmt, status in tested.results.items():
        table.add_row(fmt, "[green]passed[/green]" if status == "passed" else f"[red]{status}[/red]")
    _console().print(table)
    if not tested.passed:
        raise typer.Exit(1)


def main() -> None:
    """Console entry point: user errors become one red line and exit code 1 (tracebacks with --debug).

    OpenMP threads sleep rather than spin while they wait (unless OMP_WAIT_POLICY is set): spinning
    threads made small training steps 5-30x slower on shared cores (bench/omp_policy.py)."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads the OpenMP runtime
    from ..errors import MmvZooError

    try:
        code = app(standalone_mode=False, prog_name="mmv-zoo")
    except MmvZooError as e:
        if STATE["debug"]:
            raise
        sys.stderr.write(f"error: {e}\n")
        sys.exit(1)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except typer.Exit as e:
        sys.exit(e.exit_code)
    except typer.Abort:
        sys.stderr.write("aborted\n")
        sys.exit(1)
    except Exception as e:  # usage errors (typer's own click: they show the verb's usage) and failures
        if callable(getattr(e, "show", None)) and isinstance(getattr(e, "exit_code", None), int):
            e.show()
            sys.exit(e.exit_code)
        if STATE["debug"]:
            raise
        sys.stderr.write(f"error: {type(e).__name__}: {e}\n(run with --debug for the traceback)\n")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
