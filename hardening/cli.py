"""``harden``: train a baseline, run the hardening loop, evaluate, mine, report.

Thin: each command builds a config, calls the library, prints, returns an exit code.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from hardenkit.cli import handle_errors, print_json


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="hardenkit")
def main() -> None:
    """Harden image-moderation classifiers.

    \b
    harden train   train a baseline CNN (demo data by default)
    harden run     the closed loop: CAM + attacks -> new samples -> retrain, per round
    harden eval    accuracy, fpr, miss rate, robust accuracy of a model
    harden mine    rank unlabelled pool images nearest the decision boundary
    harden report  re-render a run's report.html from its saved results
    """


@main.command()
@click.option("--data", type=click.Path(file_okay=False), default=None,
              help="Dataset folder DATA/{train,val,test}/<class>/. Default: the built-in demo data.")
@click.option("--out", type=click.Path(dir_okay=False), default="model.keras", show_default=True,
              help="Where to save the model (.keras); class names go to <stem>.classes.json.")
@click.option("--epochs", type=int, default=30, show_default=True, help="Maximum epochs (early stopping on val loss).")
@click.option("--image-size", type=int, default=64, show_default=True, help="Square input side, pixels.")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--sensitive", default=None, metavar="NAME[,NAME]",
              help="Sensitive class folders (default: the folder named 'sensitive').")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@handle_errors
def train(data: str | None, out: str, epochs: int, image_size: int, batch_size: int,
          sensitive: str | None, seed: int, as_json: bool) -> None:
    """Train a compact CNN classifier from scratch, best epoch by validation loss."""
    from hardenkit.paths import ensure_demo_data
    from hardenkit.train import TrainConfig, train_baseline

    if data is None:
        data = str(ensure_demo_data())
        click.echo(f"note: no --data given; using the built-in demo data {data}", err=True)
    sens = tuple(s for s in (sensitive or "").split(",") if s)
    cfg = TrainConfig(data=data, out=out, epochs=epochs, image_size=image_size, batch_size=batch_size,
                      seed=seed, sensitive=sens)
    res = train_baseline(cfg)
    for msg in res.skipped_files:
        click.echo(f"skipped: {msg}", err=True)
    if as_json:
        print_json({"model": str(res.path), "val_accuracy": res.val_accuracy, "val_loss": res.val_loss,
                    "epochs": res.epochs_run, "seconds": res.seconds, "skipped": res.skipped_files})
    else:
        click.echo(f"saved {res.path}  val_accuracy={res.val_accuracy:.3f}  val_loss={res.val_loss:.3f}  "
                   f"epochs={res.epochs_run}  {res.seconds:.0f}s")
    if res.skipped_files:
        sys.exit(1)


def _register_optional() -> None:
    """Attach commands that live next to their library (attacks, reports, loop) if present."""
    import importlib

    for mod, names in (("hardening._commands", ("run", "report")), ("attacks.cli", ("eval_cmd", "mine_cmd"))):
        try:
            m: Any = importlib.import_module(mod)
        except ModuleNotFoundError as e:
            if e.name != mod:
                raise
            continue
        for n in names:
            if hasattr(m, n):
                main.add_command(getattr(m, n))


_register_optional()

if __name__ == "__main__":  # pragma: no cover
    main()
