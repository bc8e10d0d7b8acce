"""``cam``: heatmaps of what drives a classifier's sensitive score, and how good they are.

Thin: each command builds a config, makes one library call, prints, returns an exit code.
No TensorFlow import here, so ``cam --help`` answers at once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from hardenkit.cli import handle_errors, load_bundle, model_options, print_json, warn_if_no_images

from .methods import DEFAULT_METHOD, METHODS

_METRIC_COLUMNS = (("deletion_auc", "deletion AUC (low)"), ("insertion_auc", "insertion AUC (high)"),
                   ("pointing_game", "pointing game"), ("item_recall", "item recall"),
                   ("mprt_spearman", "MPRT rho (low)"), ("seconds", "seconds"))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hardenkit")
def main() -> None:
    """Explain image-moderation classifiers with CAM heatmaps.

    \b
    cam show IMG...   heatmap overlays (<stem>.cam.png) with the sensitive score
    cam eval          deletion/insertion AUC, pointing game, item recall, MPRT vs random maps
    """


@main.command()
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@model_options
@click.option("--method", type=click.Choice(list(METHODS)), default=DEFAULT_METHOD, show_default=True,
              help="CAM method.")
@click.option("--target", default="sensitive", show_default=True,
              help="What to explain: 'sensitive' (summed sensitive probability), 'top' (each image's top "
                   "class) or a class name.")
@click.option("--layer", default=None, help="Target layer name (default: the last conv feature map, nested "
                                            "models included).")
@click.option("--out", default="cam-out", show_default=True, type=click.Path(file_okay=False),
              help="Output folder for <stem>.cam.png.")
@click.option("--alpha", type=float, default=0.5, show_default=True, help="Heatmap opacity, 0..1.")
@click.option("--grid", is_flag=True, help="Also write <stem>.grid.png comparing every method.")
@click.option("--threshold", type=float, default=0.5, show_default=True,
              help="Region threshold, as a fraction of the map maximum.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per image on stdout.")
@handle_errors
def show(inputs: tuple[str, ...], model_path: str | None, unsafe_model: bool, sensitive: str | None,
         method: str, target: str, layer: str | None, out: str, alpha: float, grid: bool, threshold: float,
         batch_size: int, as_json: bool) -> None:
    """Write a heatmap overlay per image (files or folders) and print its score and top region.

    Bad files get one 'Error: <file>: <reason>' line each; the others are still written, and
    the exit code is 1 if any file failed.
    """
    from .config import ShowConfig
    from .show import ensure_out_dir
    from .show import show as run_show

    cfg = ShowConfig(inputs=tuple(inputs), out=out, method=method, target=target, layer=layer, alpha=alpha,
                     grid=grid, threshold=threshold, batch_size=batch_size)
    for raw in inputs:
        warn_if_no_images(raw)
    bundle = load_bundle(model_path, unsafe_model, sensitive)
    ensure_out_dir(cfg.out)
    failed = 0
    from hardenkit.errors import InvalidImageError

    for res in run_show(bundle, cfg):
        if isinstance(res, InvalidImageError):
            failed += 1
            click.echo(f"Error: {res}", err=True)
        elif as_json:
            print_json(res.to_json())
        else:
            box = res.regions[0].box if res.regions else None
            click.echo(f"{res.path}  sensitive={res.score:.3f}  top_region={box}  -> {res.output}")
    if failed:
        click.echo(f"{failed} file(s) failed", err=True)
        sys.exit(1)


def format_table(result: dict[str, Any]) -> str:
    """The methods x metrics table of :func:`cam.evaluate`'s result (``random`` last).

    Example:
        >>> print(format_table({"random": {"deletion_auc": 0.5}}).splitlines()[1].split()[0])
        random
    """
    rows = [k for k in result if k not in ("curves", "random")] + (["random"] if "random" in result else [])
    head = f"{'method':<16}" + "".join(f"{label:>22}" for _, label in _METRIC_COLUMNS)
    lines = [head]
    for name in rows:
        cells = []
        for key, _ in _METRIC_COLUMNS:
            v = result[name].get(key)
            cells.append(f"{'n/a' if v is None or v != v else f'{v:.3f}':>22}")
        lines.append(f"{name:<16}" + "".join(cells))
    return "\n".join(lines)


@main.command(name="eval")
@model_options
@click.option("--data", type=click.Path(file_okay=False), default=None,
              help="Dataset folder DATA/<split>/<class>/ with masks in DATA/masks/. Default: the demo data.")
@click.option("--split", default="test", show_default=True)
@click.option("--method", "methods", multiple=True, type=click.Choice([*METHODS, "all"]),
              default=(DEFAULT_METHOD,), show_default=True, help="Method(s) to score; repeat, or 'all'.")
@click.option("--max-images", type=int, default=None, help="Seeded random subset of the split.")
@click.option("--steps", type=int, default=16, show_default=True, help="Deletion/insertion steps.")
@click.option("--batch-size", type=int, default=32, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default=None,
              help="Save cam-eval.json (with the deletion/insertion curves) and cam-eval.html in this folder.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@handle_errors
def eval_cmd(model_path: str | None, unsafe_model: bool, sensitive: str | None, data: str | None, split: str,
             methods: tuple[str, ...], max_images: int | None, steps: int, batch_size: int, out: str | None,
             as_json: bool) -> None:
    """Score CAM methods against a random-map baseline on a labelled split with masks."""
    from hardenkit.imageio import atomic_write_text
    from hardenkit.paths import ensure_demo_data
    from hardenkit.progress import progress_bar

    from .config import EvalConfig
    from .metrics import evaluate
    from .show import ensure_out_dir

    if data is None:
        data = str(ensure_demo_data())
        click.echo(f"note: no --data given; using the built-in demo data {data}", err=True)
    cfg = EvalConfig(data=data, split=split, methods=methods, max_images=max_images, steps=steps,
                     batch_size=batch_size, out=out)
    bundle = load_bundle(model_path, unsafe_model, sensitive)
    with progress_bar(len(cfg.methods) + 1, "cam eval") as advance:
        res = evaluate(bundle, cfg.data, cfg.split, cfg.methods, cfg.max_images, cfg.steps, cfg.batch_size,
                       progress=advance)
    if cfg.out is not None:
        path = ensure_out_dir(cfg.out) / "cam-eval.json"
        atomic_write_text(path, json.dumps({**res, "model": str(bundle.path), "data": cfg.data,
                                            "split": cfg.split}, indent=1) + "\n")
        from reports import render_cam_eval

        click.echo(f"saved {path} and {render_cam_eval(path)}", err=True)
    table = {k: v for k, v in res.items() if k != "curves"}
    if as_json:
        print_json(table)
    else:
        click.echo(format_table(table))


if __name__ == "__main__":  # pragma: no cover
    main()
