"""``mosaic report OUT``: re-render the HTML report of a mosaic output folder.

Registered into the ``mosaic`` group by ``mosaic/cli.py``. No model is loaded.
"""

from __future__ import annotations

import click

from hardenkit.cli import handle_errors


@click.command("report")
@click.argument("out", type=click.Path(file_okay=False))
@handle_errors
def report_cmd(out: str) -> None:
    """Regenerate OUT/mosaic-report.html from OUT/mosaic-report.csv and OUT/mosaic-run.json
    (no model is run) and print its path."""
    from reports import render_mosaic

    click.echo(str(render_mosaic(out)))
