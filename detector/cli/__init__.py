"""The ``detector`` command line: a thin layer over the Python API (in the style of rasterio's ``rio``).

This module holds the click group :data:`cli`, error handling, logging set-up and :func:`main`; shared
options live in :mod:`detector.cli.options`, and each command in its own module, registered on the group
below: ``predict`` (scenes -> GeoJSON / GeoPackage / CSV / COCO files and quicklooks, through
:mod:`detector.batch`), ``info`` (a model's metadata or a raster's layout), ``export`` (``.pt`` -> verified
``.onnx``), ``eval`` (AP on the eval sets), ``data build`` (training chips) and ``train``. Training commands
import torch and the ``training`` package lazily, so ``predict`` on an ONNX model needs neither.

Errors: without ``--debug`` any failure prints one line ``error: <file>: <problem>`` on stderr and exits
non-zero (1; 2 for usage errors; 130 when interrupted); ``--debug`` shows tracebacks. Logging handlers,
GDAL options and Ultralytics' offline switch are set here, when a command runs, never at import.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from detector import __version__
from detector.batch import describe_error as describe
from detector.cli.options import debug_enabled
from detector.errors import CommandError, DetectorError

logger = logging.getLogger(__name__)

#: GDAL configuration used by every command (remote reads of cloud-optimised GeoTIFFs). The block cache is left to
#: :class:`detector.pipeline.Detector`, which sizes it to each scene's rows of tiles.
GDAL_OPTIONS: dict[str, Any] = {
    "VSI_CACHE": True,
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.jp2,.vrt,.ovr,.msk",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
}
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130

#: Names that moved to :mod:`detector.batch`, still importable from here (imported on first use).
_BATCH_NAMES = (
    "IMAGE_EXTENSIONS",
    "QUICKLOOK_SUFFIX",
    "SceneResult",
    "expand_sources",
    "output_stems",
    "summary_table",
)


# ----------------------------------------------------------------------------------------------------------
# error handling and logging
# ----------------------------------------------------------------------------------------------------------


class _Group(click.Group):
    """A click group that turns any exception of a command into one ``error:`` line (unless ``--debug``)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except KeyboardInterrupt:
            click.echo("error: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except Exception as e:
            if debug_enabled(ctx):
                raise
            ours = isinstance(e, (DetectorError, OSError, ValueError))
            hint = "" if ours else " (run with --debug for the traceback)"
            click.echo(f"error: {describe(e)}{hint}", err=True)
            ctx.exit(EXIT_FAILED)


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname.lower()}: {record.getMessage()}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


class _Once(logging.Filter):
    """Show each distinct warning text once per run (e.g. one "not georeferenced" per scene, not per format)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING:
            return True
        text = record.getMessage()
        if text in self.seen:
            return False
        self.seen.add(text)
        return True


def _setup_logging(verbose: int, quiet: bool) -> logging.Handler:
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    handler.addFilter(_Once())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    for name in ("detector", "training"):
        logging.getLogger(name).setLevel(level)
    if verbose >= 2:
        root.setLevel(logging.DEBUG)
    logging.captureWarnings(True)  # library warnings go through the same one-line format
    return handler


def _teardown_logging(handler: logging.Handler) -> None:
    logging.captureWarnings(False)
    logging.getLogger().removeHandler(handler)


# ----------------------------------------------------------------------------------------------------------
# the group
# ----------------------------------------------------------------------------------------------------------


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, envvar="DETECTOR_DEBUG", help="Show tracebacks and debug logs.")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Errors only (no warnings, no progress bar).")
@click.version_option(version=__version__, prog_name="detector")
@click.pass_context
def cli(ctx: click.Context, debug: bool, verbose: int, quiet: bool) -> None:
    """Detect aircraft, helicopters and vehicles in satellite and aerial imagery."""
    import rasterio

    ctx.obj = {"debug": debug, "quiet": quiet}
    handler = _setup_logging(2 if debug else verbose, quiet)
    ctx.call_on_close(lambda: _teardown_logging(handler))
    os.environ.setdefault("YOLO_OFFLINE", "1")  # Ultralytics must never download anything behind our back
    ctx.with_resource(rasterio.Env(**GDAL_OPTIONS))


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``detector``)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="detector")


def __getattr__(name: str) -> Any:
    if name in _BATCH_NAMES:
        from detector import batch

        return getattr(batch, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# ----------------------------------------------------------------------------------------------------------
# the commands, one module each (training modules import torch only when their command runs)
# ----------------------------------------------------------------------------------------------------------

from detector.cli import change as _change  # noqa: E402
from detector.cli import data as _data  # noqa: E402
from detector.cli import eval as _eval  # noqa: E402
from detector.cli import export as _export  # noqa: E402
from detector.cli import info as _info  # noqa: E402
from detector.cli import predict as _predict  # noqa: E402
from detector.cli import quantize as _quantize  # noqa: E402
from detector.cli import train as _train  # noqa: E402

for _command in (_predict.predict, _info.info, _export.export, _eval.eval_cmd, _data.data, _train.train):
    cli.add_command(_command)
cli.add_command(_change.change)
cli.add_command(_quantize.quantize)

__all__ = ["GDAL_OPTIONS", "CommandError", "cli", "describe", "main"]
