"""``detector train``: fine-tune a model (torch and the ``training`` package are imported when it runs)."""

from __future__ import annotations

import importlib
import logging
from pathlib import Path
from types import ModuleType

import click

from detector.cli.options import quiet_enabled
from detector.errors import CommandError

#: Top-level packages of the training extra: a missing one means the extra is not installed.
TRAINING_PACKAGES = ("training", "torch", "ultralytics", "albumentations")


def import_training(module: str) -> ModuleType:
    """Import a module of the training extra, or raise :class:`CommandError` saying how to install it."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in TRAINING_PACKAGES:
            raise CommandError(
                f"{module} needs the training extra ({e.name} is missing): pip install 'overhead-detector[train]' "
                "from a source checkout"
            ) from e
        raise


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": False})
@click.argument("config", type=click.Path(dir_okay=False))
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
@click.pass_context
def train(ctx: click.Context, config: str, overrides: tuple[str, ...]) -> None:
    """Fine-tune a model: CONFIG (configs/train/*.yaml) then key=value overrides (nested keys with dots)."""
    if not Path(config).is_file():
        raise CommandError(f"{config}: file not found")
    bad = [o for o in overrides if "=" not in o]
    if bad:
        raise click.BadParameter(f"overrides are key=value, got {bad[0]!r}", param_hint="OVERRIDES")
    if not quiet_enabled(ctx):
        log = logging.getLogger("training")
        log.setLevel(min(log.getEffectiveLevel(), logging.INFO))
    trainer = import_training("training.train")
    status = trainer.main([config, *overrides])
    ctx.exit(int(status or 0))
