"""``harden eval`` and ``harden mine``: two click commands registered into the ``harden`` group.

Thin: options -> frozen config -> one library call (:mod:`attacks.runs`) -> print -> exit code.
TensorFlow is imported only inside the command bodies.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from hardenkit.cli import handle_errors, load_bundle, model_options, parse_fraction, print_json


def _report_errors(errors: list[Any]) -> None:
    for e in errors:
        click.echo(f"skipped: {e}", err=True)


_CTX = {"help_option_names": ["-h", "--help"]}


@click.command("eval", context_settings=_CTX)
@model_options
@click.option("--data", type=click.Path(file_okay=False), default=None,
              help="Dataset folder DATA/<split>/<class>/. Default: the built-in demo data.")
@click.option("--split", default="test", show_default=True, help="Split to evaluate.")
@click.option("--attack", default="pgd", show_default=True, metavar="NAME[,NAME]",
              help="Attacks, comma-separated: fgsm, pgd, pgd-l2, deepfool, cw-l2, hopskipjump.")
@click.option("--eps", default="8/255", show_default=True,
              help="Perturbation budget in each attack's norm (L-inf; L2 for pgd-l2 and cw-l2).")
@click.option("--threshold", type=float, default=None, help="Sensitive-score threshold  [default: 0.5]")
@click.option("--recall", type=float, default=None,
              help="Instead of --threshold: the highest threshold keeping this recall on the split.")
@click.option("--max-images", type=int, default=None, help="Evaluate a seeded random subset of this size.")
@click.option("--steps", type=int, default=None, help="Attack iterations (default: each attack's own).")
@click.option("--batch-size", type=int, default=64, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print the figures as one JSON object.")
@handle_errors
def eval_cmd(model_path: str | None, unsafe_model: bool, sensitive: str | None, data: str | None, split: str,
          attack: str, eps: str, threshold: float | None, recall: float | None, max_images: int | None,
          steps: int | None, batch_size: int, as_json: bool) -> None:
    """Accuracy, false-positive rate, miss rate and robust accuracy of a model on a split.

    An image counts as robust only if it is classified right clean and under every attack
    listed in --attack. Unreadable images are reported on stderr and skipped (exit code 1).
    """
    from hardenkit.paths import ensure_demo_data

    from .runs import EvalConfig, run_eval

    if data is None:
        data = str(ensure_demo_data())
        click.echo(f"note: no --data given; using the built-in demo data {data}", err=True)
    cfg = EvalConfig(data=data, split=split, attacks=tuple(a.strip() for a in attack.split(",") if a.strip()),
                     eps=parse_fraction(eps), threshold=threshold, recall=recall, max_images=max_images,
                     steps=steps, batch_size=batch_size)
    bundle = load_bundle(model_path, unsafe_model, sensitive)
    report = run_eval(cfg, bundle)
    _report_errors(report.errors)
    m = report.metrics
    if as_json:
        print_json(m)
    else:
        skipped = f", {m['skipped']} skipped" if m["skipped"] else ""
        click.echo(f"images            {m['n']} ({cfg.split} split{skipped})")
        click.echo(f"accuracy          {m['accuracy']:.4f}")
        click.echo(f"fpr               {m['fpr']:.4f}   (threshold {m['threshold']:.4f})")
        click.echo(f"miss_rate         {m['miss_rate']:.4f}")
        click.echo(f"robust_accuracy   {m['robust_accuracy']:.4f}   (eps {eps}, all of: {', '.join(cfg.attacks)})")
        for name, acc in m["robust_accuracy_per_attack"].items():
            click.echo(f"  {name:<15} {acc:.4f}")
    if report.errors:
        sys.exit(1)


@click.command("mine", context_settings=_CTX)
@model_options
@click.option("--pool", required=True, type=click.Path(exists=True), help="Folder of unlabelled images.")
@click.option("--seeds", required=True, type=click.Path(file_okay=False),
              help="Labelled dataset folder whose split seeds the boundary samples.")
@click.option("--split", default="train", show_default=True, help="Seed split.")
@click.option("--top", type=int, default=500, show_default=True, help="How many pool images to keep.")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="CSV to write (rank,path,distance).")
@click.option("--max-seeds", type=int, default=200, show_default=True, help="Seed images used at most.")
@click.option("--lam", type=float, default=0.05, show_default=True, help="Jacobian step size (L-inf).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@handle_errors
def mine_cmd(model_path: str | None, unsafe_model: bool, sensitive: str | None, pool: str, seeds: str, split: str,
          top: int, out: str, max_seeds: int, lam: float, as_json: bool) -> None:
    """Rank unlabelled pool images by how close they sit to the model's decision boundary.

    Boundary samples are Jacobian walks from the seed split; pool images nearest to them in
    the model's feature space come first. Writes OUT as CSV rank,path,distance.
    Unreadable files are reported on stderr and skipped (exit code 1).
    """
    from .runs import MineConfig, run_mine

    cfg = MineConfig(pool=pool, seeds=seeds, out=out, split=split, top=top, max_seeds=max_seeds, lam=lam)
    bundle = load_bundle(model_path, unsafe_model, sensitive)
    report = run_mine(cfg, bundle)
    _report_errors(report.errors)
    if as_json:
        print_json({"out": str(report.out), "items": len(report.result), "pool": report.result.n_pool,
                    "seeds": report.n_seeds, "skipped": [str(e) for e in report.errors],
                    "top": [{"rank": i.rank, "path": str(i.path), "distance": i.distance} for i in report.result.items[:10]]})
    else:
        click.echo(f"wrote {report.out}: {len(report.result)} of {report.result.n_pool} pool images "
                   f"ranked (boundary samples from {report.n_seeds} seeds)")
    if report.errors:
        sys.exit(1)
