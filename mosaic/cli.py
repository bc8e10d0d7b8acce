"""``mosaic``: censor what an image-moderation classifier flags, where its CAM points.

Thin: ``blur`` turns options into a :class:`~mosaic.config.MosaicConfig`, makes one library
call (:func:`mosaic.blur_folder` or :func:`mosaic.blur_file`), prints, returns an exit code.
No TensorFlow import here, so ``mosaic --help`` answers at once.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from cam.methods import METHODS
from hardenkit.cli import handle_errors, load_bundle, model_options, print_json, warn_if_no_images

from .config import DEFAULT_METHOD, SHAPES, MosaicConfig, parse_shard
from .styles import STYLES
from .tune import REGION_THRESHOLDS

#: The option defaults come from here, so ``--help`` and the library cannot disagree.
_DEFAULTS = MosaicConfig()


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hardenkit")
def main() -> None:
    """Censor the sensitive regions of images, located by CAM heatmaps.

    \b
    mosaic blur IN OUT   censor flagged images of a folder (or one file) into a mirror tree
    mosaic tune          pick --style and --region-threshold for a model, on data with masks
    mosaic report OUT    summarise a finished run
    """


@main.command()
@click.argument("src", metavar="IN", type=click.Path())
@click.argument("dst", metavar="OUT", type=click.Path())
@model_options
@click.option("--style", type=click.Choice(list(STYLES)), default="pixelate", show_default=True,
              help="How regions are censored.")
@click.option("--shape", type=click.Choice(list(SHAPES)), default="mask", show_default=True,
              help="Censor each region's bounding box, the ellipse inscribed in it, or its exact pixels.")
@click.option("--threshold", type=float, default=0.5, show_default=True,
              help="Sensitive score at or above which an image is censored.")
@click.option("--region-threshold", type=float, default=_DEFAULTS.region_threshold, show_default=True,
              help="CAM region threshold, as a fraction of the heatmap's maximum.")
@click.option("--method", type=click.Choice(list(METHODS)), default=None,
              help=f"CAM method locating the regions. Default: {DEFAULT_METHOD} at a finer layer "
                   "(the activations before the model's last downsampling).")
@click.option("--layer", default=None, metavar="NAME",
              help="CAM target layer. Default: see --method (an explicit method reads the last 4-D layer).")
@click.option("--dilate", type=int, default=None, metavar="PX",
              help="Grow regions by PX pixels. Default: --margin x the image's short side.")
@click.option("--margin", type=float, default=_DEFAULTS.margin, show_default=True,
              help="Default region growth, as a fraction of the image's short side.")
@click.option("--block", type=int, default=None, metavar="PX",
              help="Pixelate block size. Default: max(4, region short side / 6).")
@click.option("--strength", type=float, default=1.0, show_default=True,
              help="Blur sigma / noise amplitude multiplier.")
@click.option("--color", default="black", show_default=True,
              help="Solid colour: a name, #rrggbb or 'mean'. Also the last resort's fill (see --max-rounds).")
@click.option("--max-rounds", type=int, default=4, show_default=True,
              help="Verify-and-grow rounds before censoring the whole image (status 'unresolved'; filled "
                   "with --color if the model still flags it in the style).")
@click.option("--only-censored", is_flag=True, help="Do not copy clean images to OUT.")
@click.option("--keep-metadata", is_flag=True,
              help="Keep EXIF/ICC in censored outputs (stripped by default, for privacy).")
@click.option("--resume", is_flag=True, help="Skip inputs the existing report marks done; append to it.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False), default=None,
              help="CSV report path. Default: OUT/mosaic-report.csv (none for a single file).")
@click.option("--workers", type=int, default=min(4, os.cpu_count() or 1), show_default=True,
              help="Decode/encode threads.")
@click.option("--lanes", type=int, default=_DEFAULTS.lanes, show_default=True,
              help="Batches in model work at once (more overlap, more memory: lanes x batch size images).")
@click.option("--batch-size", type=int, default=16, show_default=True, help="Images per model batch.")
@click.option("--shard", default=None, metavar="I/N",
              help="Process only inputs whose index in the sorted list mod N == I.")
@click.option("--quality", type=int, default=95, show_default=True, help="JPEG/WebP quality of censored outputs.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@handle_errors
def blur(src: str, dst: str, model_path: str | None, unsafe_model: bool, sensitive: str | None, style: str,
         shape: str, threshold: float, region_threshold: float, method: str | None, layer: str | None,
         dilate: int | None, margin: float, block: int | None, strength: float, color: str, max_rounds: int,
         only_censored: bool, keep_metadata: bool, resume: bool, report_path: str | None, workers: int, lanes: int, batch_size: int,
         shard: str | None, quality: int, as_json: bool) -> None:
    """Censor flagged images under IN into OUT (same relative paths and formats).

    Images scoring below --threshold are copied unchanged; the others get their CAM regions
    censored, are scored again, and the regions grow until the output is no longer flagged
    (else the whole image is censored, in --color if the style alone leaves it flagged:
    'unresolved'). IN may also be one file, OUT then being
    the output file. Writes OUT/mosaic-report.csv, OUT/mosaic-report.html and
    OUT/mosaic-run.json. Exit code 1 if any input failed (one 'Error: <file>: <reason>'
    line each on stderr).
    """
    from .batch import blur_file, blur_folder, check_paths

    cfg = MosaicConfig(style=style, shape=shape, threshold=threshold, region_threshold=region_threshold,
                       method=method, layer=layer, dilate=dilate, margin=margin, block=block, strength=strength,
                       color=color, max_rounds=max_rounds, only_censored=only_censored, keep_metadata=keep_metadata,
                       resume=resume, workers=workers, lanes=lanes, batch_size=batch_size, shard=parse_shard(shard),
                       quality=quality)
    single = Path(src).exists() and not Path(src).is_dir()
    check_paths(Path(src), Path(dst), Path(report_path) if report_path else None)  # before loading a model
    bundle = load_bundle(model_path, unsafe_model, sensitive)
    if single:
        rep = blur_file(src, dst, cfg, bundle, report=report_path)
    else:
        warn_if_no_images(src)
        rep = blur_folder(src, dst, cfg, bundle, report=report_path, show_progress=True)
        if report_path is None:
            from reports import render_mosaic

            click.echo(f"html report: {render_mosaic(dst)}", err=True)
    for row in rep.failed:
        click.echo(f"Error: {row.path}: {row.error}", err=True)
    if as_json:
        print_json(rep.summary())
    else:
        where = f"; report {rep.report_path}" if rep.report_path is not None else ""
        click.echo(f"{rep.summary_line()} -> {rep.output}{where}")
    sys.exit(rep.exit_code)


@main.command()
@click.option("--data", "data_dir", type=click.Path(file_okay=False), default=None,
              help="Dataset folder with masks (masks/<split>/<class>/). Default: the built-in demo data.")
@model_options
@click.option("--split", default="val", show_default=True, help="Split to tune on (keep the test split for measuring).")
@click.option("--threshold", type=float, default=0.5, show_default=True,
              help="Sensitive score at or above which an image is censored (as you will run mosaic blur).")
@click.option("--coverage", type=float, default=0.95, show_default=True,
              help="Share of ground-truth sensitive pixels a candidate must censor.")
@click.option("--styles", default="pixelate,solid", show_default=True, help="Styles to try, comma-separated.")
@click.option("--region-thresholds", default=",".join(f"{v:g}" for v in REGION_THRESHOLDS), show_default=True,
              help="Region thresholds to try, comma-separated.")
@click.option("--method", type=click.Choice(list(METHODS)), default=None, help="CAM method (as for mosaic blur).")
@click.option("--margin", type=float, default=_DEFAULTS.margin, show_default=True, help="As for mosaic blur.")
@click.option("--limit", type=int, default=None, metavar="N", help="Use at most N images.")
@click.option("--json", "as_json", is_flag=True, help="Print every candidate and the pick as JSON.")
@handle_errors
def tune(data_dir: str | None, model_path: str | None, unsafe_model: bool, sensitive: str | None, split: str,
         threshold: float, coverage: float, styles: str, region_thresholds: str, method: str | None, margin: float,
         limit: int | None, as_json: bool) -> None:
    """Pick --style and --region-threshold for a model on a labelled split with masks.

    The defaults suit the demo model; another model's maps are sharper or blurrier, and some
    models still flag pixelated blocks. Each candidate censors the split's sensitive images;
    the pick has the smallest censored area among those censoring at least --coverage of the
    ground truth with no output still flagged. Prints a table and the options to pass to
    mosaic blur.
    """
    from hardenkit.errors import UsageError
    from hardenkit.paths import ensure_demo_data
    from hardenkit.progress import progress_bar

    from .tune import tune as run_tune

    style_list = [v.strip() for v in styles.split(",") if v.strip()]
    bad = [v for v in style_list if v not in STYLES]
    if bad or not style_list:
        raise UsageError(f"--styles: expected names from {sorted(STYLES)}, got {styles!r}")
    try:
        thresholds = [float(v) for v in region_thresholds.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--region-thresholds: expected comma-separated numbers, got {region_thresholds!r}") from None
    if not thresholds or not all(0.0 < v <= 1.0 for v in thresholds):
        raise UsageError(f"--region-thresholds: expected values in (0, 1], got {region_thresholds!r}")
    cfg = MosaicConfig(threshold=threshold, method=method, margin=margin)
    data = Path(data_dir) if data_dir is not None else ensure_demo_data()
    bundle = load_bundle(model_path, unsafe_model, sensitive)
    with progress_bar(len(style_list) * len(thresholds), "mosaic tune") as advance:
        res = run_tune(bundle, data, cfg, split=split, coverage=coverage, styles=style_list,
                       region_thresholds=thresholds, limit=limit, progress=advance)
    if as_json:
        print_json(res.to_json())
        return
    click.echo(f"{res.images} sensitive {split} images with masks; goal: coverage >= {coverage:g}, nothing still flagged")
    click.echo(f"{'style':10s} {'region_thr':>10s} {'coverage':>9s} {'area/gt':>8s} {'unresolved':>10s} {'still_flagged':>13s}")
    for r in res.rows:
        mark = "  <- pick" if r == res.best else ""
        click.echo(f"{r.style:10s} {r.region_threshold:>10g} {r.coverage:>9.3f} {r.area_ratio:>8.2f} "
                   f"{r.unresolved:>10.3f} {r.still_flagged:>13.3f}{mark}")
    for note in res.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"use: mosaic blur IN OUT --threshold {threshold:g} {res.options()}")


def _register_optional() -> None:
    """Attach ``mosaic report`` (written next to the reports code) if it exists."""
    try:
        from ._report_cmd import report_cmd
    except ModuleNotFoundError as e:
        if e.name != f"{__package__}._report_cmd":
            raise
        return
    main.add_command(report_cmd)


_register_optional()


if __name__ == "__main__":  # pragma: no cover
    main()
