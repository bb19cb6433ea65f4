"""Options and parsers shared by the commands, defined once (in the style of ``rasterio.rio.options``).

Each ``*_options`` decorator adds a group of options to a command; the ``parse_*`` callbacks turn the raw
text into checked values and raise :class:`click.BadParameter` (exit status 2) naming the bad value.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import click

from detector.batch import ModelSpec
from detector.model import RUNTIMES

F = Callable[..., Any]

#: Largest ``--tile`` accepted: a 4096 px RGB tile batch already holds 48 MB per tile in float32.
MAX_TILE = 4096


# ----------------------------------------------------------------------------------------------------------
# the context: --debug and --quiet of the group
# ----------------------------------------------------------------------------------------------------------


def debug_enabled(ctx: click.Context) -> bool:
    """True when the group ran with ``--debug`` (tracebacks instead of one-line errors)."""
    root = ctx.find_root()
    return bool((root.obj or {}).get("debug")) or bool(root.params.get("debug"))


def quiet_enabled(ctx: click.Context) -> bool:
    """True when the group ran with ``--quiet`` (errors only, no progress)."""
    return bool((ctx.find_root().obj or {}).get("quiet"))


# ----------------------------------------------------------------------------------------------------------
# parsers
# ----------------------------------------------------------------------------------------------------------


def comma_list(values: Sequence[str] | str | None) -> list[str]:
    """``("a,b", "c")`` -> ``["a", "b", "c"]`` (repeated options and comma lists alike)."""
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    return [p.strip() for v in items for p in v.split(",") if p.strip()]


def parse_formats(ctx: click.Context, param: click.Parameter, value: Sequence[str]) -> list[str]:
    """Output formats (repeated or comma list), checked against :data:`detector.writers.FORMATS`."""
    from detector.writers import FORMATS

    formats = [f.lower() for f in comma_list(value)] or ["geojson"]
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise click.BadParameter(f"unknown format {bad[0]!r}; choose from {', '.join(FORMATS)}", ctx, param)
    return list(dict.fromkeys(formats))


def parse_classes(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    """A comma list of class names (``None`` when the option is not given). The names are checked against
    the model's own class names by :func:`check_model_classes`, once the model is known."""
    if value is None:
        return None
    classes = comma_list(value)
    if not classes:
        raise click.BadParameter(f"expected a comma list of class names, got {value!r}", ctx, param)
    return classes


def parse_class_map(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> dict[int | str, str] | None:
    """``"0=aircraft,boat=boat"`` -> ``{0: "aircraft", "boat": "boat"}``: raw class (index or name) -> output
    class (``None`` when the option is not given)."""
    if value is None:
        return None
    out: dict[int | str, str] = {}
    for item in comma_list(value):
        raw, sep, ours = (p.strip() for p in item.partition("="))
        if not sep or not raw or not ours:
            raise click.BadParameter(f"expected RAW=OURS pairs (e.g. 0=aircraft), got {item!r}", ctx, param)
        out[int(raw) if raw.isdigit() else raw] = ours
    if not out:
        raise click.BadParameter(f"expected RAW=OURS pairs (e.g. 0=aircraft), got {value!r}", ctx, param)
    return out


def check_model_classes(classes: Sequence[str], model: ModelSpec) -> tuple[str, ...]:
    """Check ``--classes`` against the class names of the model that will run (its own, then those derived
    from them by size, e.g. ``transport-aircraft``: :attr:`detector.pipeline.Detector.class_names`); returns
    those names.

    Loads the model in this process (once: :meth:`ModelSpec.load` caches it, and a local batch reuses it).

    Raises:
        click.BadParameter: a class the model does not output (the message lists the ones it does).
        ModelError: the model cannot be loaded.
    """
    names = model.load().class_names
    bad = [c for c in classes if c not in names]
    if bad:
        where = model.weights or "the default model"
        raise click.BadParameter(
            f"unknown class {bad[0]!r}: {where} outputs {', '.join(names)}", param_hint="'--classes'"
        )
    return names


def parse_bands(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    """``"3,2,1"`` -> ``(3, 2, 1)``: three 1-based bands (red, green, blue) or one (gray)."""
    if value is None:
        return None
    try:
        bands = tuple(int(b) for b in comma_list(value))
    except ValueError:
        raise click.BadParameter(
            f"expected 1-based band numbers like 1,2,3, got {value!r}", ctx, param
        ) from None
    if len(bands) not in (1, 3) or min(bands) < 1:
        raise click.BadParameter(
            f"give 3 bands (red,green,blue) or 1 (gray), numbered from 1; got {value!r}", ctx, param
        )
    return bands


def parse_device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """``cpu``, ``cuda`` or ``cuda:N``."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?", value):
        raise click.BadParameter(f"expected cpu, cuda or cuda:N, got {value!r}", ctx, param)
    return value


def check_finite(ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """Refuse ``inf`` and ``nan`` (click's float ranges let them through)."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"expected a finite number, got {value!r}", ctx, param)
    return value


def check_overlap(tile: int | None, overlap: float | None) -> None:
    """An overlap in pixels (1 and up) must be smaller than the tile given with it (a usage error)."""
    if overlap is not None and tile is not None and overlap >= 1 and overlap >= tile:
        raise click.BadParameter(
            f"{overlap:g} px is not smaller than the {tile} px tile (give pixels below the tile size, "
            "or a fraction below 1)",
            param_hint="'--overlap'",
        )


def check_tile(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    """A tile size must be a multiple of the model stride."""
    from detector.model import STRIDE

    if value is not None and value % STRIDE:
        lo = value // STRIDE * STRIDE
        raise click.BadParameter(
            f"{value} is not a multiple of {STRIDE} (the model's stride); try {lo} or {lo + STRIDE}"
        )
    return value


# ----------------------------------------------------------------------------------------------------------
# option groups
# ----------------------------------------------------------------------------------------------------------

device_option = click.option(
    "--device", default="cpu", show_default=True, callback=parse_device, help="cpu, cuda or cuda:N."
)


def weights_option(help: str = "Model file (.onnx or .pt); default: the shipped model.") -> Callable[[F], F]:
    """``-w/--weights FILE`` (one model file)."""
    return click.option("-w", "--weights", type=click.Path(dir_okay=False), default=None, help=help)


bands_option = click.option(
    "--bands",
    callback=parse_bands,
    default=None,
    help="Bands read as red,green,blue (1-based), or one band for gray.",
)

gsd_option = click.option(
    "--gsd",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    callback=check_finite,
    help="Ground sample distance in m/px, overriding the georeferencing.",
)


def data_root_option(
    help: str = "Data root (default: $DETECTOR_SHARED_DATA or the config's).",
) -> Callable[[F], F]:
    """``--data DIR`` (the root the config's relative data paths are read from)."""
    return click.option("--data", "data_root", type=click.Path(file_okay=False), default=None, help=help)


threads_option = click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="CPU threads for the model (default: all)."
)


def model_options(f: F) -> F:
    """``--device --runtime --conf --threads --streams`` (the weights option differs per command)."""
    f = click.option(
        "--streams",
        type=click.IntRange(min=1),
        default=None,
        help="Tiles run at once on the CPU, sharing the threads (default: 2 for onnxruntime, 1 for OpenVINO).",
    )(f)
    f = threads_option(f)
    f = click.option(
        "--conf",
        type=click.FloatRange(0, 1),
        default=0.25,
        show_default=True,
        help="Keep detections scoring at least this.",
    )(f)
    f = click.option(
        "--runtime",
        type=click.Choice(RUNTIMES),
        default=RUNTIMES[0],
        show_default=True,
        help="Runtime for ONNX models.",
    )(f)
    return device_option(f)


def tile_options(f: F) -> F:
    """``--tile --overlap --zoom`` shared by predict, eval and change."""
    f = click.option(
        "--zoom",
        type=click.FloatRange(min=0.25, max=4.0),
        default=None,
        callback=check_finite,
        help="Magnify scenes by this factor on top of any GSD resampling: small objects gain, at zoom^2 "
        "the time (1.5 measured: small aircraft and 0.3-0.5 m vehicles better, helicopters worse; see "
        "TileConfig). Default 1; detector change: 1.25 for scenes of 0.3 m/px or coarser, else 1.",
    )(f)
    f = click.option(
        "--overlap",
        type=click.FloatRange(min=0),
        default=None,
        callback=check_finite,
        help="Tile overlap: a fraction of the tile below 1, pixels from 1 up, smaller than the tile (default 0.2).",
    )(f)
    f = click.option(
        "--tile",
        type=click.IntRange(min=32, max=MAX_TILE),
        default=None,
        callback=check_tile,
        help=f"Tile size in model pixels, a multiple of 32, at most {MAX_TILE} (default: the model's, e.g. 1024).",
    )(f)
    return f
