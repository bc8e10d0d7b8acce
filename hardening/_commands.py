"""``harden run`` and ``harden report`` (registered into the ``harden`` group)."""

from __future__ import annotations

from typing import Any

import click

from hardenkit.cli import handle_errors, parse_fraction, print_json


@click.command("run")
@click.option("--rounds", type=int, default=None, help="Hardening rounds after the round-0 baseline. [default: 5]")
@click.option("--data", type=click.Path(file_okay=False), default=None,
              help="Dataset folder DATA/{train,val,test}/<class>/ (+ masks/). Default: built-in demo data.")
@click.option("--model", type=click.Path(dir_okay=False), default=None,
              help="Starting model (.keras + class names). Default: the cached demo baseline.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Run folder. [default: runs/harden]")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="harden.toml with any option of the loop and per-kind [weights] (0 = off).")
@click.option("--resume", is_flag=True, help="Continue a killed run in --out from its last finished round.")
@click.option("--eps", default=None, help="L-inf budget for PGD samples and robust accuracy, e.g. 8/255.")
@click.option("--pool", type=click.Path(file_okay=False), default=None, help="Unlabelled pool to mine near-boundary images from. "
                   "Without --data: the demo data's own pool and pool-labels.csv.")
@click.option("--pool-labels", type=click.Path(dir_okay=False), default=None, help="CSV file,label for pool images.")
@click.option("--seed", type=int, default=None, help="Seeds every random choice. [default: 0]")
@click.option("--mixed-precision/--no-mixed-precision", default=None,
              help="Mixed precision: float16 on a GPU, bfloat16 on a CPU with bfloat16 units (Intel AMX, "
                   "AVX512-BF16). Without either flag: bfloat16 on such a CPU only. --no-mixed-precision: "
                   "float32 throughout. Saved models are float32 either way.")
@click.option("--json", "as_json", is_flag=True, help="Print metrics.json at the end.")
@handle_errors
def run(rounds: int | None, data: str | None, model: str | None, out: str | None, config_path: str | None,
        resume: bool, eps: str | None, pool: str | None, pool_labels: str | None, seed: int | None,
        mixed_precision: bool | None, as_json: bool) -> None:
    """Harden a model: each round finds its mistakes (CAM erasure, wrong attention,
    adversarial and boundary samples, pool mining, the normal training images it flags at
    its threshold), retrains on them, and measures accuracy, fpr, miss rate,
    robust accuracy, pointing game and item recall.

    Writes RUN_DIR/round-K/model.keras, metrics.json, best.keras, review/, tensorboard/
    and report.html.
    """
    from hardening.config import HardenConfig
    from hardening.loop import run as run_loop

    over: dict[str, Any] = {"rounds": rounds, "data": data, "model": model, "out": out, "pool": pool, "pool_labels": pool_labels,
            "seed": seed, "mixed_precision": mixed_precision,
            "eps": parse_fraction(eps) if eps is not None else None}
    over = {k: v for k, v in over.items() if v is not None}
    cfg = HardenConfig.from_toml(config_path, **over) if config_path else HardenConfig(**over)
    res = run_loop(cfg, resume=resume)
    if as_json:
        print_json(res.metrics)
    else:
        click.echo(f"best round: {res.best_round}  ->  {res.out / 'best.keras'}")
        report = res.out / "report.html"
        if report.exists():
            click.echo(f"report: {report}")
    if res.bad_files:
        raise SystemExit(1)


@click.command("report")
@click.argument("run_dir", type=click.Path(file_okay=False, exists=True))
@handle_errors
def report(run_dir: str) -> None:
    """Re-render RUN_DIR/report.html from what the run saved (no model is run)."""
    from reports import render_hardening

    click.echo(str(render_hardening(run_dir)))
