"""The ``detector`` command line: a thin layer over the Python API.

Commands: ``predict`` (scenes -> GeoJSON / GeoPackage / CSV / COCO files and quicklooks), ``info`` (a model's
metadata or a raster's layout), ``export`` (``.pt`` -> verified ``.onnx``), ``eval`` (AP on the eval sets),
``data build`` (training chips) and ``train``. Training commands import torch and the ``training`` package
lazily, so ``predict`` on an ONNX model needs neither.

Errors: without ``--debug`` any failure prints one line ``error: <file>: <problem>`` on stderr and exits
non-zero (1; 2 for usage errors; 130 when interrupted); ``--debug`` shows tracebacks. Logging handlers,
GDAL options and Ultralytics' offline switch are set here, when a command runs, never at import.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from detector.errors import CommandError  # noqa: F401  (re-exported)
from detector import __version__
from detector.backends.base import TAXONOMY

if TYPE_CHECKING:
    from detector.detections import Detections

logger = logging.getLogger("detector.cli")

#: File endings ``predict`` picks up when a SOURCE is a folder or a glob.
IMAGE_EXTENSIONS = (".tif", ".tiff", ".jp2", ".png", ".jpg", ".jpeg", ".vrt")
#: GDAL configuration used by every command (block cache, remote reads of cloud-optimised GeoTIFFs).
GDAL_OPTIONS: dict[str, Any] = {
    "GDAL_CACHEMAX": 512 * 2**20,  # bytes: rasterio passes an int to GDAL as bytes
    "VSI_CACHE": True,
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.jp2,.vrt,.ovr,.msk",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
}
QUICKLOOK_SUFFIX = ".quicklook.jpg"
EXIT_FAILED = 1
EXIT_INTERRUPTED = 130


# ----------------------------------------------------------------------------------------------------------
# error handling and logging
# ----------------------------------------------------------------------------------------------------------


def describe(error: BaseException, name: str | None = None) -> str:
    """One line for an error: ``"<name>: <message>"`` unless the message already names ``name``."""
    msg = " ".join(str(error).split()) or type(error).__name__
    if not _is_ours(error) and not isinstance(error, (OSError, ValueError)):
        msg = f"{type(error).__name__}: {msg}"
    if name and name not in msg:
        msg = f"{name}: {msg}"
    return msg


def _is_ours(error: BaseException) -> bool:
    return type(error).__module__.startswith(("detector.", "training.")) or type(error).__name__ in (
        "RasterError",
        "ModelError",
        "WriteError",
        "LabelError",
        "BuildError",
        "TaxonomyError",
        "CommandError",
    )




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
            if _debug(ctx):
                raise
            hint = (
                ""
                if _is_ours(e) or isinstance(e, (OSError, ValueError))
                else " (run with --debug for the traceback)"
            )
            click.echo(f"error: {describe(e)}{hint}", err=True)
            ctx.exit(EXIT_FAILED)


def _debug(ctx: click.Context) -> bool:
    root = ctx.find_root()
    return bool((root.obj or {}).get("debug")) or bool(root.params.get("debug"))


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
# option parsing helpers and shared options
# ----------------------------------------------------------------------------------------------------------


def _comma_list(values: Sequence[str] | str | None) -> list[str]:
    if values is None:
        return []
    items = [values] if isinstance(values, str) else list(values)
    return [p.strip() for v in items for p in v.split(",") if p.strip()]


def _parse_formats(ctx: click.Context, param: click.Parameter, value: Sequence[str]) -> list[str]:
    from detector.writers import FORMATS

    formats = [f.lower() for f in _comma_list(value)] or ["geojson"]
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise click.BadParameter(f"unknown format {bad[0]!r}; choose from {', '.join(FORMATS)}", ctx, param)
    return list(dict.fromkeys(formats))


def _parse_classes(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    if value is None:
        return None
    classes = _comma_list(value)
    bad = [c for c in classes if c not in TAXONOMY]
    if bad or not classes:
        raise click.BadParameter(
            f"unknown class {bad[0] if bad else value!r}; choose from {', '.join(TAXONOMY)}", ctx, param
        )
    return classes


def _parse_bands(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...] | None:
    if value is None:
        return None
    try:
        bands = tuple(int(b) for b in _comma_list(value))
    except ValueError:
        raise click.BadParameter(
            f"expected 1-based band numbers like 1,2,3, got {value!r}", ctx, param
        ) from None
    if len(bands) not in (1, 3) or min(bands) < 1:
        raise click.BadParameter(
            f"give 3 bands (red,green,blue) or 1 (gray), numbered from 1; got {value!r}", ctx, param
        )
    return bands


def _parse_device(ctx: click.Context, param: click.Parameter, value: str) -> str:
    if not re.fullmatch(r"cpu|cuda(:\d+)?", value):
        raise click.BadParameter(f"expected cpu, cuda or cuda:N, got {value!r}", ctx, param)
    return value


def _model_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--device --conf --threads`` (the weights option differs per command)."""
    f = click.option(
        "--threads",
        type=click.IntRange(min=1),
        default=None,
        help="CPU threads for the model (default: all).",
    )(f)
    f = click.option(
        "--conf",
        type=click.FloatRange(0, 1),
        default=0.25,
        show_default=True,
        help="Keep detections scoring at least this.",
    )(f)
    f = click.option(
        "--device", default="cpu", show_default=True, callback=_parse_device, help="cpu, cuda or cuda:N."
    )(f)
    return f


def _tile_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """``--tile --overlap`` shared by predict and eval."""
    f = click.option(
        "--overlap",
        type=click.FloatRange(min=0),
        default=None,
        help="Tile overlap: a fraction of the tile below 1, pixels from 1 up (default 0.2).",
    )(f)
    f = click.option(
        "--tile",
        type=click.IntRange(min=32),
        default=None,
        callback=_check_tile,
        help="Tile size in model pixels, a multiple of 32 (default: the model's, e.g. 1024).",
    )(f)
    return f


def _check_tile(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    from detector.model import STRIDE

    if value is not None and value % STRIDE:
        lo = value // STRIDE * STRIDE
        raise click.BadParameter(
            f"{value} is not a multiple of {STRIDE} (the model's stride); try {lo} or {lo + STRIDE}"
        )
    return value


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


# ----------------------------------------------------------------------------------------------------------
# predict
# ----------------------------------------------------------------------------------------------------------


def _is_remote(name: str) -> bool:
    return name.startswith("/vsi") or "://" in name


def _images_in(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


def expand_sources(sources: Sequence[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Files, folders (recursed for :data:`IMAGE_EXTENSIONS`) and globs -> ``(scenes, missing)``.

    Explicit files are taken whatever their extension; folders and globs contribute image files only.
    Duplicates are dropped, the order of the arguments is kept (sorted within a folder or glob).
    ``missing`` holds ``(argument, problem)`` for arguments that name nothing.
    """
    scenes: list[str] = []
    missing: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(p: str) -> None:
        key = p if _is_remote(p) else str(Path(p).resolve())
        if key not in seen:
            seen.add(key)
            scenes.append(p)

    for arg in sources:
        path = Path(arg)
        if _is_remote(arg) or path.is_file():
            add(arg)
        elif path.is_dir():
            found = _images_in(path)
            if not found:
                missing.append((arg, f"no images ({' '.join(IMAGE_EXTENSIONS)}) in this folder"))
            for f in found:
                add(str(f))
        elif glob.has_magic(arg):
            found_files: list[str] = []
            for m in sorted(glob.glob(arg, recursive=True)):
                mp = Path(m)
                if mp.is_dir():
                    found_files += [str(p) for p in _images_in(mp)]
                elif mp.is_file() and mp.suffix.lower() in IMAGE_EXTENSIONS:
                    found_files.append(m)
            if not found_files:
                missing.append((arg, "no images match this pattern"))
            for name in found_files:
                add(name)
        else:
            missing.append((arg, "file not found"))
    return scenes, missing


def output_stems(scenes: Sequence[str]) -> list[str]:
    """A distinct output name per scene: the file stem, prefixed with parent folders where stems collide."""

    def stem(name: str, depth: int) -> str:
        p = Path(name.rstrip("/"))
        parts = [p.stem, *[q.name for q in list(p.parents)[:depth] if q.name]]
        return "_".join(reversed(parts))

    depth = [0] * len(scenes)
    names = [stem(s, 0) for s in scenes]
    for _ in range(8):
        counts: dict[str, int] = {}
        for n in names:
            counts[n] = counts.get(n, 0) + 1
        clash = [i for i, n in enumerate(names) if counts[n] > 1]
        if not clash:
            break
        for i in clash:
            depth[i] += 1
            names[i] = stem(scenes[i], depth[i])
    final: list[str] = []
    used: set[str] = set()
    for n in names:  # last resort for identical paths below 8 folders: a counter
        candidate, k = n, 2
        while candidate.lower() in used:
            candidate, k = f"{n}_{k}", k + 1
        used.add(candidate.lower())
        final.append(candidate)
    return final


def _check_output_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CommandError(
            f"{out}: cannot create the output folder ({(e.strerror or str(e)).lower()})"
        ) from e
    if not os.access(out, os.W_OK | os.X_OK):
        raise CommandError(f"{out}: output folder is not writable")


@dataclass
class SceneResult:
    """What happened to one scene of a ``predict`` batch."""

    source: str
    name: str
    counts: dict[str, int] = field(default_factory=dict)
    outputs: list[Path] = field(default_factory=list)
    error: str | None = None


class _Bar:
    """A tqdm bar per scene, driven by the pipeline's ``progress(done, total)`` callback."""

    def __init__(self, label: str, disable: bool) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=0, desc=label, unit="tile", leave=False, disable=disable or None, dynamic_ncols=True
        )

    def __call__(self, done: int, total: int) -> None:
        if self.bar.total != total:
            self.bar.total = total
        self.bar.n = done
        self.bar.refresh()

    def close(self) -> None:
        self.bar.close()


def _write_scene(
    dets: Detections,
    scene: str,
    name: str,
    out: Path,
    formats: Sequence[str],
    *,
    keep_crs: bool,
    quicklook: bool,
    bands: tuple[int, ...] | None,
) -> list[Path]:
    from detector import writers

    written = []
    for fmt in formats:
        written.append(writers.write(dets, out / f"{name}{writers.FORMATS[fmt]}", fmt, keep_crs=keep_crs))
    if quicklook:
        written.append(
            writers.write_quicklook(dets, out / f"{name}{QUICKLOOK_SUFFIX}", source=scene, bands=bands)
        )
    return written


def summary_table(results: Sequence[SceneResult], classes: Sequence[str]) -> str:
    """Counts per class per scene and in total, then the failures (plain text, aligned)."""
    header = ["scene", *classes, "total"]
    rows = []
    totals = dict.fromkeys(classes, 0)
    done = [r for r in results if r.error is None]
    for r in done:
        counts = [r.counts.get(c, 0) for c in classes]
        for c, n in zip(classes, counts, strict=True):
            totals[c] += n
        rows.append([r.name, *map(str, counts), str(sum(counts))])
    rows.append(
        [f"total ({len(done)} scenes)", *(str(totals[c]) for c in classes), str(sum(totals.values()))]
    )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]

    def fmt(row: list[str]) -> str:
        return "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )

    lines = [fmt(header), *(fmt(r) for r in rows[:-1]), "-" * len(fmt(header)), fmt(rows[-1])]
    failed = [r for r in results if r.error is not None]
    if failed:
        lines.append(f"failed: {len(failed)} of {len(results)} scenes")
        lines += [f"  {r.error}" for r in failed]
    return "\n".join(lines)


@cli.command()
@click.argument("sources", nargs=-1, required=True)
@click.option(
    "-o",
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder (created when missing); one file per scene and format, named after the scene.",
)
@click.option(
    "-f",
    "--format",
    "formats",
    multiple=True,
    callback=_parse_formats,
    help="geojson (default), gpkg, csv, coco; repeat the option or give a comma list.",
)
@click.option(
    "-w",
    "--weights",
    type=click.Path(dir_okay=False),
    default=None,
    help="Model file (.onnx or .pt); default: the shipped model.",
)
@_model_options
@_tile_options
@click.option(
    "--batch", type=click.IntRange(min=1), default=8, show_default=True, help="Tiles per model call."
)
@click.option(
    "--classes",
    callback=_parse_classes,
    default=None,
    help=f"Keep only these classes (comma list of {', '.join(TAXONOMY)}).",
)
@click.option(
    "--bands",
    callback=_parse_bands,
    default=None,
    help="Bands read as red,green,blue (1-based), or one band for gray.",
)
@click.option(
    "--gsd",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Ground sample distance in m/px, overriding the georeferencing.",
)
@click.option("--no-resample", is_flag=True, help="Do not resample scenes to the model's training GSD.")
@click.option(
    "--quicklook/--no-quicklook",
    default=True,
    show_default=True,
    help=f"Also write <scene>{QUICKLOOK_SUFFIX} with the detections drawn.",
)
@click.option(
    "--keep-crs",
    is_flag=True,
    help="GeoJSON in the scene CRS (with a 'crs' member) instead of RFC 7946 lon/lat.",
)
@click.pass_context
def predict(
    ctx: click.Context,
    sources: tuple[str, ...],
    out: Path,
    formats: list[str],
    weights: str | None,
    device: str,
    conf: float,
    threads: int | None,
    tile: int | None,
    overlap: float | None,
    batch: int,
    classes: list[str] | None,
    bands: tuple[int, ...] | None,
    gsd: float | None,
    no_resample: bool,
    quicklook: bool,
    keep_crs: bool,
) -> None:
    """Detect objects in SOURCES (files, folders, globs) and write the results to OUT.

    Each scene gets one file per format, named after the scene (e.g. OUT/scene.geojson). A scene that fails
    is reported and skipped; the others are still written. The exit status is 1 when any scene failed.
    """
    from detector.pipeline import Detector
    from detector.tiling import TileConfig

    scenes, missing = expand_sources(sources)
    if not scenes:
        arg, problem = missing[0]
        raise CommandError(f"{arg}: {problem}")
    tiling = TileConfig(
        tile=tile, overlap=0.2 if overlap is None else overlap, batch=batch, resample=not no_resample
    )
    _check_output_dir(out)
    detector = Detector.load(weights, device=device, conf=conf, threads=threads)
    logger.info(
        "model %s (%s, %d px tiles)",
        detector.meta.name or weights or "default",
        detector.meta.task,
        tile or detector.meta.imgsz,
    )

    results = [SceneResult(source=arg, name=arg, error=f"{arg}: {problem}") for arg, problem in missing]
    for arg, problem in missing:
        logger.error("%s: %s", arg, problem)
    quiet = bool(ctx.obj and ctx.obj.get("quiet"))
    names = output_stems(scenes)
    interrupted = False
    for k, (scene, name) in enumerate(zip(scenes, names, strict=True)):
        result = SceneResult(source=scene, name=name)
        results.append(result)
        bar = _Bar(f"[{k + 1}/{len(scenes)}] {Path(scene).name}", disable=quiet)
        try:
            dets = detector.predict(scene, tile=tiling, classes=classes, bands=bands, gsd=gsd, progress=bar)
            bar.close()
            result.counts = {c: int((dets.class_ids == i).sum()) for i, c in enumerate(dets.class_names)}
            result.outputs = _write_scene(
                dets, scene, name, out, formats, keep_crs=keep_crs, quicklook=quicklook, bands=bands
            )
            logger.info(
                "%s: %d detections -> %s", scene, len(dets), ", ".join(p.name for p in result.outputs)
            )
        except KeyboardInterrupt:
            bar.close()
            result.error = f"{scene}: interrupted"
            interrupted = True
            break
        except Exception as e:  # one scene's failure never stops the batch
            bar.close()
            result.error = describe(e, scene)
            logger.error("%s", result.error, exc_info=_debug(ctx))

    if len(results) > 1 or not results[0].error:  # a single failed scene: its error line says it all
        click.echo(summary_table(results, classes or list(TAXONOMY)))
        click.echo(f"outputs in {out}")
    if interrupted:
        ctx.exit(EXIT_INTERRUPTED)
    if any(r.error for r in results):
        ctx.exit(EXIT_FAILED)


# ----------------------------------------------------------------------------------------------------------
# info
# ----------------------------------------------------------------------------------------------------------

MODEL_SUFFIXES = (".onnx", ".pt")


def model_info(path: str | Path) -> dict[str, Any]:
    """The :class:`~detector.backends.base.ModelMeta` of a model file as a plain dict."""
    from detector.model import read_meta

    meta = read_meta(path)
    return {
        "file": str(path),
        "name": meta.name,
        "task": meta.task,
        "imgsz": meta.imgsz,
        "gsd": meta.gsd,
        "classes": list(meta.names),
        "class_map": {f"{k} {meta.raw_names[k]}": v for k, v in sorted(meta.class_map.items())},
        "raw_classes": len(meta.raw_names),
        "normalization": meta.normalization,
        "end_to_end": meta.end_to_end,
        "extra": meta.extra,
    }


def raster_info(path: str | Path) -> dict[str, Any]:
    """Size, bands, data type, CRS, GSD, nodata, block layout and overviews of a raster."""
    import rasterio

    from detector.raster import open_scene

    with open_scene(path) as scene:
        gsd, rgb_bands = scene.gsd, scene.bands
    with rasterio.open(path) as ds:
        block_rows, block_cols = ds.block_shapes[0]
        if block_cols >= ds.width and ds.height > block_rows:
            layout = f"striped ({block_rows} row{'s' if block_rows > 1 else ''} per strip)"
        else:
            layout = f"tiled ({block_cols}x{block_rows} blocks)"
        crs = ds.crs
        t = ds.transform
        georef = crs is not None or not t.is_identity
        return {
            "file": str(path),
            "driver": ds.driver,
            "size": f"{ds.width}x{ds.height} px (columns x rows)",
            "bands": ds.count,
            "dtype": ", ".join(dict.fromkeys(ds.dtypes)),
            "colorinterp": [ci.name for ci in ds.colorinterp],
            "rgb_bands": list(rgb_bands),
            "crs": None if crs is None else (f"EPSG:{crs.to_epsg()}" if crs.to_epsg() else crs.to_wkt()),
            "crs_name": None if crs is None else _crs_title(crs),
            "transform": list(t)[:6] if georef else None,
            "north_up": (t.b == 0 and t.d == 0 and t.e < 0) if georef else None,
            "bounds": list(ds.bounds) if georef else None,
            "gsd_m": None if gsd is None else round(gsd, 4),
            "nodata": "none" if ds.nodata is None else ds.nodata,
            "layout": layout,
            "compression": ds.compression.name if ds.compression else "none",
            "overviews": ds.overviews(1),
        }


def _crs_title(crs: Any) -> str:
    try:
        from pyproj import CRS as ProjCRS  # optional: a nicer name

        return str(ProjCRS.from_wkt(crs.to_wkt()).name)
    except Exception:  # noqa: BLE001 - the name is cosmetic
        m = re.match(r'\w+\["([^"]+)"', crs.to_wkt())
        return m.group(1) if m else ""


def _print_info(info: dict[str, Any]) -> None:
    width = max(len(k) for k in info)
    for k, v in info.items():
        if isinstance(v, dict):
            text = (
                ", ".join(f"{a} -> {b}" for a, b in v.items())
                if k == "class_map"
                else json.dumps(v, default=str)
            )
        elif isinstance(v, (list, tuple)):
            text = ", ".join(str(x) for x in v) if v else "none"
        else:
            text = "unknown" if v is None else str(v)
        click.echo(f"{k.ljust(width)}  {text}")


@cli.command()
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def info(path: str, as_json: bool) -> None:
    """Describe a model file (metadata) or a raster (size, bands, CRS, GSD, layout, overviews)."""
    data = model_info(path) if Path(path).suffix.lower() in MODEL_SUFFIXES else raster_info(path)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        _print_info(data)


# ----------------------------------------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------------------------------------


@cli.command()
@click.argument("pt", type=click.Path(dir_okay=False))
@click.option(
    "-o", "--out", "out", required=True, type=click.Path(dir_okay=False), help="The .onnx file to write."
)
@click.option(
    "--imgsz",
    type=click.IntRange(min=32),
    default=None,
    help="Input size, a multiple of 32 (default: training size).",
)
@click.option("--name", default="", help="Model name stored in the metadata (default: the file stem).")
@click.option(
    "--gsd", type=click.FloatRange(min=0, min_open=True), default=None, help="Training GSD in m/px."
)
@click.option("--end-to-end", is_flag=True, help="Export the NMS-free head (YOLO26 and similar).")
@click.option("--no-verify", is_flag=True, help="Skip the onnxruntime-vs-PyTorch check (not recommended).")
def export(
    pt: str, out: str, imgsz: int | None, name: str, gsd: float | None, end_to_end: bool, no_verify: bool
) -> None:
    """Export an Ultralytics checkpoint PT to a self-describing, verified ONNX model."""
    if not out.lower().endswith(".onnx"):
        raise click.BadParameter(f"the output must end in .onnx, got {out!r}", param_hint="'-o' / '--out'")
    from detector.model import export_onnx

    path = export_onnx(pt, out, imgsz=imgsz, name=name, gsd=gsd, end_to_end=end_to_end, verify=not no_verify)
    click.echo(f"wrote {path}")


# ----------------------------------------------------------------------------------------------------------
# eval
# ----------------------------------------------------------------------------------------------------------


@cli.command(name="eval")
@click.option(
    "-w",
    "--weights",
    "weights",
    multiple=True,
    help="Model file(s); the first is the baseline (default: the shipped model).",
)
@click.option("-s", "--set", "sets", multiple=True, help="Eval set name(s) from the config (default: all).")
@click.option(
    "--data",
    "data_root",
    type=click.Path(file_okay=False),
    default=None,
    help="Data root (default: $DETECTOR_SHARED_DATA or the config's).",
)
@click.option(
    "-o",
    "--out",
    "out",
    default="out/eval",
    show_default=True,
    type=click.Path(file_okay=False),
    help="Report folder.",
)
@click.option(
    "--config", type=click.Path(dir_okay=False), default=None, help="Eval config (default configs/eval.yaml)."
)
@click.option(
    "--conf",
    type=click.FloatRange(0, 1),
    default=None,
    help="Operating threshold for P/R (default: the config's).",
)
@_tile_options
@click.option(
    "--limit", type=click.IntRange(min=1), default=None, help="At most this many images per set (quick runs)."
)
@click.option(
    "--iou-type",
    type=click.Choice(["aabb", "rotated"]),
    default=None,
    help="Box comparison (default: per set).",
)
@click.option(
    "--device", default="cpu", show_default=True, callback=_parse_device, help="cpu, cuda or cuda:N."
)
@click.pass_context
def eval_cmd(
    ctx: click.Context,
    weights: tuple[str, ...],
    sets: tuple[str, ...],
    data_root: str | None,
    out: str,
    config: str | None,
    conf: float | None,
    tile: int | None,
    overlap: float | None,
    limit: int | None,
    iou_type: str | None,
    device: str,
) -> None:
    """Average precision per class and size on the eval sets (reports: eval.md, eval.json, PR curves)."""
    from detector import evaluate

    bars: dict[str, Any] = {}
    quiet = bool(ctx.obj and ctx.obj.get("quiet"))

    def progress(label: str, done: int, total: int) -> None:
        from tqdm.auto import tqdm

        bar = bars.get(label)
        if bar is None:
            bar = bars[label] = tqdm(total=total, desc=label, unit="img", leave=False, disable=quiet or None)
        bar.n = done
        bar.refresh()
        if done >= total:
            bar.close()

    models: list[str | None] = list(weights) or [None]  # None: the default model
    report = evaluate.run(
        models,  # type: ignore[arg-type]  # run() documents None entries as the default model
        sets=list(sets) or None,
        data_root=data_root,
        out_dir=out,
        conf=conf,
        tile=tile,
        overlap=overlap,
        limit=limit,
        iou_type=iou_type,
        device=device,
        config=config,
        progress=progress,
    )
    for label, results in report["results"].items():
        click.echo(f"## {label}\n{evaluate.markdown_table(results)}\n")
    click.echo(
        f"reports: {report['markdown']}, {report['json']}" + "".join(f", {p}" for p in report["plots"])
    )


# ----------------------------------------------------------------------------------------------------------
# training: data build, train (torch and the training package imported lazily)
# ----------------------------------------------------------------------------------------------------------


def _import_training(module: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        if e.name and e.name.split(".")[0] in ("training", "torch", "ultralytics", "albumentations"):
            raise CommandError(
                f"{module} needs the training extra ({e.name} is missing): pip install 'overhead-detector[train]' "
                "from a source checkout"
            ) from e
        raise


@cli.group()
def data() -> None:
    """Training data: build chip datasets from the labelled sources."""


@data.command()
@click.argument("config", type=click.Path(dir_okay=False))
@click.pass_context
def build(ctx: click.Context, config: str) -> None:
    """Build the chip dataset described by CONFIG (configs/data/*.yaml)."""
    if not Path(config).is_file():
        raise CommandError(f"{config}: file not found")
    chips = _import_training("training.chips")
    bar = _Bar(f"chips {Path(config).stem}", disable=bool(ctx.find_root().obj.get("quiet")))
    try:
        summary = chips.build(config, progress=bar)
    finally:
        bar.close()
    click.echo(summary.format())


@cli.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": False})
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
    if not ctx.find_root().obj.get("quiet"):
        logging.getLogger("training").setLevel(
            min(logging.getLogger("training").getEffectiveLevel(), logging.INFO)
        )
    trainer = _import_training("training.train")
    status = trainer.main([config, *overrides])
    ctx.exit(int(status or 0))


# ----------------------------------------------------------------------------------------------------------
# entry point
# ----------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point (``detector``)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="detector")


if __name__ == "__main__":
    main()
