"""``detector data build``: training chips from the labelled sources (the training extra, imported lazily)."""

from __future__ import annotations

from pathlib import Path

import click

from detector.cli import train as _train
from detector.cli.options import quiet_enabled
from detector.cli.progress import Bar
from detector.errors import CommandError


@click.group()
def data() -> None:
    """Training data: build chip datasets from the labelled sources."""


@data.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.pass_context
def build(ctx: click.Context, config: str) -> None:
    """Build the chip dataset described by CONFIG (configs/data/*.yaml)."""
    if not Path(config).is_file():
        raise CommandError(f"{config}: file not found")
    chips = _train.import_training("training.chips")
    bar = Bar(f"chips {Path(config).stem}", disable=quiet_enabled(ctx))
    try:
        summary = chips.build(config, progress=bar)
    finally:
        bar.close()
    click.echo(summary.format())
