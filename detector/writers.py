"""Write :class:`~detector.detections.Detections` to files and read back what produced them.

Formats: GeoJSON, GeoPackage, CSV, COCO and a quicklook image per scene (:func:`write`, ``write_*``); one file
for a whole batch in GeoPackage, GeoJSON, FlatGeobuf, GeoParquet, CSV or COCO (:func:`write_collection`).
Every writer writes **atomically**: the data go to a hidden temporary file in the same folder (named without
the characters GDAL's path parsing mangles), which replaces the target with :func:`os.replace` only once it
is complete and verified (the quicklook is decoded again first), so a reader never sees half a file and a
failed write leaves the previous file (or nothing, no side-car either) behind. A file that cannot be written
raises :class:`WriteError` naming the path.

Coordinates:

* Footprints are the 4 corners of each box (:func:`detector.geometry.corners`): the rotated rectangle for
  OBB models, the axis-aligned box otherwise. Pixel corners go through the affine ``transform`` into the
  scene CRS (pixel ``(0, 0)`` is the top-left corner of the top-left pixel, as in GDAL).
* GeoJSON follows RFC 7946 by default: longitude/latitude on WGS 84 (EPSG:4326), in that order, exterior
  rings counter-clockwise. ``keep_crs=True`` keeps the scene CRS and writes the (pre-RFC 7946) ``"crs"``
  member instead. GeoPackage, FlatGeobuf, GeoParquet and CSV keep the scene CRS (and record it).
* A collection (:func:`write_collection`) holds all its scenes in one CRS (:func:`collection_crs`): the first
  scene's when every scene shares it, else EPSG:4326. A ``scene`` column (in place of ``source``) names the
  scene of every detection, as the caller gave its path. GeoPackage with ``layer_per_crs=True`` writes one
  layer per CRS instead. Scenes without georeferencing cannot share a file with georeferenced ones.
* **Pixel outputs.** An image without georeferencing (``crs`` or ``transform`` ``None``) is written in image
  pixels (x right, y down), and no output of it can pass for longitude/latitude. The rule:

  - GeoJSON goes to ``<name>.px.geojson`` (:func:`output_name` gives the callers the file name ending), with
    a ``"coordinates"`` member saying ``"image pixels ..."`` and a ``"crs"`` member naming an engineering
    CRS in image pixels (:data:`PIXEL_CRS_WKT`), which GDAL reads as a ``LOCAL_CS``, not as a geographic
    CRS. ``"crs": null`` would not do: GDAL 3.12 reads a GeoJSON whose ``crs`` is ``null`` (or absent) as
    EPSG:4326 (tested in ``tests/test_writers.py``).
  - GeoPackage, FlatGeobuf and GeoParquet record no CRS (GDAL reports none; GeoParquet writes
    ``"crs": null``, "unknown"), and the layer metadata says ``coordinates: image pixels ...``.
  - CSV writes ``pixels`` in its ``crs`` column; COCO is in pixels anyway.

  A warning naming the scene is logged.

Attributes written per detection (:func:`attribute_table`): ``class``, ``score``; ``length_m`` and
``width_m`` (long and short side of the footprint, when the GSD is known and finite: a non-finite GSD such as
``--gsd inf`` leaves them empty, with a warning, and never writes ``NaN``/``Infinity``); ``heading_deg``, the
azimuth of the long side in degrees clockwise from grid north of the scene CRS (from image up when not
georeferenced), in ``[0, 180)`` because front and back are not told apart, only for rotated boxes that are
not nearly square (``None`` otherwise); ``source`` (the scene path as given); the enclosing pixel box
``px_xmin .. px_ymax``; then every :attr:`Detections.data` column (numbers rounded, strings as they are,
``NaN`` as empty), which replaces an attribute of the same name (e.g. a measured ``length_m``).

Provenance. Every output records what produced it (:func:`provenance_record`): the software and its version,
the model (name, file, sha256), ``conf``, ``tile`` and ``overlap`` (from a :class:`Provenance` the caller
passes; model name and tile default to :attr:`Detections.meta`), and per scene its ``source``, size in pixels,
CRS, transform, ``footprint_wkt`` (the whole raster as a polygon in the scene CRS; in pixels without
georeferencing), GSD and count. Where it goes:

* GeoJSON: the top-level foreign member ``"detector"``;
* GeoPackage: the layer metadata item ``detector`` (JSON text; with one layer per CRS, each layer holds
  its scenes);
* FlatGeobuf: the layer metadata item ``detector``;
* GeoParquet: ``GeoDataFrame.attrs["detector"]`` (pandas keeps it in the Parquet schema metadata);
* CSV: ``# key: value`` comment lines before the header row. Read the table with
  ``pandas.read_csv(path, comment="#")``: text cells are quoted, so a ``#`` inside a value is kept;
* COCO: ``info["detector"]``.

:func:`read_provenance` reads it back from any of these files as one dict: the run-level keys and
``scenes``, a list with one dict per scene (one entry for a per-scene file).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import logging
import math
import os
import re
import uuid
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from detector import __version__
from detector.detections import Detections
from detector.errors import DetectorIOError, LabelError, WriteError
from detector.geometry import corners
from detector.georef import (  # noqa: F401  (re-exported for older callers)
    SQUARE_TOLERANCE,
    crs_name,
    footprints,
    headings,
    lengths_m,
    reproject,
    scene_footprint,
    valid_gsd,
)
from detector.georef import (
    ccw as _ccw,
)
from detector.georef import (
    side_lengths as _side_lengths,
)
from detector.taxonomy import default_classes, default_taxonomy

if TYPE_CHECKING:
    from detector.raster import Scene

logger = logging.getLogger(__name__)

#: Output formats and the file name ending each one gets from the CLI (see :func:`output_name`).
FORMATS: dict[str, str] = {"geojson": ".geojson", "gpkg": ".gpkg", "csv": ".csv", "coco": ".coco.json"}
#: Formats of :func:`write_collection` (one file for a batch) and their file name endings.
COLLECTION_FORMATS: dict[str, str] = {
    "gpkg": ".gpkg",
    "geojson": ".geojson",
    "fgb": ".fgb",
    "parquet": ".parquet",
    "csv": ".csv",
    "coco": ".coco.json",
}
#: File name ending of the GeoJSON of an image without georeferencing (see the module docstring).
PIXEL_GEOJSON_SUFFIX = ".px.geojson"
#: Layer name inside GeoPackage outputs.
GPKG_LAYER = "detections"
#: Longest side of a quicklook image in pixels.
QUICKLOOK_MAX_SIZE = 2048
#: What the files say about coordinates of images without georeferencing.
PIXEL_COORDINATES = (
    "image pixels (x right, y down, origin at the top-left corner of the image); not georeferenced"
)
#: The CRS a pixel GeoJSON names: an engineering CRS in image pixels, which GDAL reads as a ``LOCAL_CS``.
PIXEL_CRS_WKT = (
    'ENGCRS["image pixels (x right, y down)",EDATUM["image"],CS[Cartesian,2],'
    'AXIS["x (column)",east,ORDER[1],LENGTHUNIT["pixel",1]],'
    'AXIS["y (row)",south,ORDER[2],LENGTHUNIT["pixel",1]]]'
)
#: Name of the provenance member / metadata item / attrs key in every output.
PROVENANCE_KEY = "detector"
#: Decimals of float ``Detections.data`` columns in the outputs.
DATA_DECIMALS = 4


def _is_pixels(dets: Detections) -> bool:
    return dets.crs is None or dets.transform is None


def source_name(dets: Detections) -> str:
    """The scene's file name (``""`` when unknown)."""
    if not dets.source:
        return ""
    return Path(str(dets.source)).name


def source_path(dets: Detections) -> str:
    """The scene's path as the caller gave it (``""`` when unknown): the ``source``/``scene`` attribute."""
    return str(dets.source) if dets.source else ""


def output_name(dets: Detections, fmt: str) -> str:
    """The file name ending for ``dets`` in format ``fmt``: :data:`FORMATS`, except ``.px.geojson`` for the
    GeoJSON of an image without georeferencing (see the module docstring).

    Raises:
        ValueError: unknown format.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt == "geojson" and _is_pixels(dets):
        return PIXEL_GEOJSON_SUFFIX
    return FORMATS[fmt]


def output_suffixes(fmt: str) -> tuple[str, ...]:
    """Every file name ending :func:`output_name` can give for ``fmt`` (to find earlier outputs)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}")
    return (FORMATS[fmt], PIXEL_GEOJSON_SUFFIX) if fmt == "geojson" else (FORMATS[fmt],)


# ----------------------------------------------------------------------------------------------------------
# geometry and attributes shared by the writers
# ----------------------------------------------------------------------------------------------------------


def plain_values(column: Any) -> list[Any]:
    """A per-detection column as plain Python values for the files: floats rounded to :data:`DATA_DECIMALS`,
    ``NaN``/infinity as ``None``, integers and booleans as they are, strings as they are, anything else as
    its ``str``."""
    col = np.asarray(column)
    if col.ndim != 1:
        return [None if v is None else json.dumps(_json_safe(v)) for v in col.tolist()]
    kind = col.dtype.kind
    if kind == "f":
        return [
            round(v, DATA_DECIMALS) if math.isfinite(v) else None for v in col.astype(np.float64).tolist()
        ]
    if kind in "iu":
        return [int(v) for v in col.tolist()]
    if kind == "b":
        return [bool(v) for v in col.tolist()]
    if kind == "U":
        return [str(v) for v in col.tolist()]
    return [_plain(v) for v in col.tolist()]


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        v = v.item()
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):
        return round(v, DATA_DECIMALS) if math.isfinite(v) else None
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if hasattr(v, "isoformat"):
        return v.isoformat()
    return str(v)


def _kind(values: np.ndarray) -> str:
    """The field type of a data column in the files: ``"f"``, ``"i"``, ``"b"`` or ``"s"`` (text; also for
    columns of more than one value per detection, which :func:`plain_values` writes as JSON text)."""
    arr = np.asarray(values)
    k = arr.dtype.kind if arr.ndim == 1 else "O"
    return "f" if k == "f" else "i" if k in "iu" else "b" if k == "b" else "s"


def attribute_table(dets: Detections) -> dict[str, list[Any]]:
    """Per-detection attributes as columns of plain Python values (``None`` where unknown).

    Keys: ``class``, ``score``, ``length_m``, ``width_m``, ``heading_deg``, ``source``, ``px_xmin``,
    ``px_ymin``, ``px_xmax``, ``px_ymax``, then every :attr:`Detections.data` column (:func:`plain_values`);
    a data column of the same name as one of the first replaces it. See the module docstring.
    """
    n = len(dets)
    long_px, short_px = _side_lengths(dets)
    gsd = valid_gsd(dets.gsd)
    if gsd is None and dets.gsd is not None:
        logger.warning(
            "%s: GSD %r m/px is not a finite positive number: lengths in metres are left empty",
            dets.source or "the image",
            dets.gsd,
        )
    length = [None] * n if gsd is None else [round(float(v) * gsd, 2) for v in long_px]
    width = [None] * n if gsd is None else [round(float(v) * gsd, 2) for v in short_px]
    heading = [None if math.isnan(v) else round(float(v), 1) for v in headings(dets)]
    box = np.round(dets.xyxy, 2)
    table: dict[str, list[Any]] = {
        "class": dets.class_name.tolist(),
        "score": [round(float(s), 4) for s in dets.scores],
        "length_m": length,
        "width_m": width,
        "heading_deg": heading,
        "source": [source_path(dets)] * n,
        "px_xmin": box[:, 0].tolist(),
        "px_ymin": box[:, 1].tolist(),
        "px_xmax": box[:, 2].tolist(),
        "px_ymax": box[:, 3].tolist(),
    }
    for key, column in dets.data.items():
        table[key] = plain_values(column)
    return table


def _decimals(geographic: bool, pixels: bool) -> int:
    # ~1 mm on the ground for degrees and metres; a hundredth of a pixel otherwise
    return 8 if geographic else 2 if pixels else 3


def _warn_pixels(dets: Detections, path: Path) -> None:
    if dets.crs is None:
        # the same text for every format of a scene, so a log filter can show it once
        logger.warning(
            "%s has no georeferencing: outputs are in image pixels (x right, y down)",
            dets.source or "the image",
        )
        logger.debug("%s: written in image pixels", path)


@dataclass
class _Layer:
    """Footprints and attributes of one or more scenes in one output CRS (``None``: image pixels)."""

    rings: np.ndarray  # (N, 4, 2), counter-clockwise in the output axes
    attrs: dict[str, list[Any]]
    kinds: dict[str, str]  # column -> "s" (text), "f", "i" or "b"
    crs: Any
    scenes: list[Detections]

    @property
    def geographic(self) -> bool:
        return self.crs is not None and bool(getattr(self.crs, "is_geographic", False))


_TEXT_COLUMNS = ("class", "source", "scene")


def _layer(scenes: Sequence[Detections], crs: Any, *, scene_column: bool) -> _Layer:
    rings: list[np.ndarray] = []
    tables: list[dict[str, list[Any]]] = []
    kinds: dict[str, str] = {}
    for d in scenes:
        pts = footprints(d)
        if crs is not None and d.crs != crs:
            pts = reproject(pts, d.crs, crs)
        rings.append(_ccw(pts))
        table = attribute_table(d)
        if scene_column:
            table = {"scene": table.pop("source"), **table}
        tables.append(table)
        for key in table:
            kind = "s" if key in _TEXT_COLUMNS else _kind(d.data[key]) if key in d.data else "f"
            kinds[key] = kind if kinds.get(key, kind) == kind else "s" if "s" in (kind, kinds[key]) else "f"
    keys = list(dict.fromkeys(k for t in tables for k in t))
    attrs = {
        k: [v for t, d in zip(tables, scenes, strict=True) for v in t.get(k, [None] * len(d))] for k in keys
    }
    ring_array = np.concatenate(rings) if rings else np.zeros((0, 4, 2))
    return _Layer(ring_array, attrs, {k: kinds[k] for k in keys}, crs, list(scenes))


def collection_crs(scenes: Sequence[Detections]) -> Any:
    """The one CRS of a collection: the first scene's when every scene shares it, else EPSG:4326; ``None``
    when no scene is georeferenced (image pixels).

    Raises:
        WriteError: georeferenced scenes and scenes without georeferencing are mixed (the message names
            one of each).
    """
    from rasterio.crs import CRS

    _check_mixing(scenes, None)
    geo = [d for d in scenes if not _is_pixels(d)]
    if not geo:
        return None
    first = geo[0].crs
    return first if all(d.crs == first for d in geo[1:]) else CRS.from_epsg(4326)


def _check_mixing(scenes: Sequence[Detections], path: Path | None) -> None:
    pixels = [d for d in scenes if _is_pixels(d)]
    if pixels and len(pixels) < len(scenes):
        geo = next(d for d in scenes if not _is_pixels(d))
        where = f"{path}: " if path is not None else ""
        raise WriteError(
            f"{where}cannot put scenes without georeferencing ({source_path(pixels[0]) or 'an image array'}"
            f"{f' and {len(pixels) - 1} more' if len(pixels) > 1 else ''}) and georeferenced ones "
            f"({source_path(geo) or 'an image array'}) in one file; write them to separate files"
        )


# ----------------------------------------------------------------------------------------------------------
# provenance
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Provenance:
    """The run-level part of every output's provenance: what produced the detections.

    The batch code fills one per run (:meth:`from_model_file` hashes the model file) and passes it to the
    writers, which add the software version and, per scene, what :attr:`Detections.meta` and the
    georeferencing say (:func:`provenance_record`). ``model`` and ``tile`` left ``None`` are taken from
    ``Detections.meta`` (``model``, ``tile``) when it has them.

    Attributes:
        model: model name (``ModelMeta.name``).
        model_file: the model's file name.
        model_sha256: sha256 of the model file (hex).
        conf: the score threshold of the run.
        tile: tile size in pixels (the model input).
        overlap: tile overlap as the run was given it (a fraction of the tile, or pixels).
        extra: other JSON-serialisable facts of the run (runtime, classes kept, ...), written as they are.
    """

    model: str | None = None
    model_file: str | None = None
    model_sha256: str | None = None
    conf: float | None = None
    tile: int | None = None
    overlap: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_model_file(
        cls,
        path: str | Path,
        *,
        model: str | None = None,
        conf: float | None = None,
        tile: int | None = None,
        overlap: float | None = None,
        **extra: Any,
    ) -> Provenance:
        """Provenance of a run of the model file at ``path`` (hashed here, once per run).

        Raises:
            DetectorIOError: the model file cannot be read.
        """
        p = Path(path)
        return cls(
            model=model,
            model_file=p.name,
            model_sha256=file_sha256(p),
            conf=conf,
            tile=tile,
            overlap=overlap,
            extra=dict(extra),
        )


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (hex), read in 1 MiB chunks.

    Raises:
        DetectorIOError: the file cannot be read.
    """
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as e:
        raise DetectorIOError(f"{path}: cannot read the file to hash it ({_reason(e)})") from e
    return digest.hexdigest()


#: Keys of every scene entry in a provenance record (:func:`scene_record`).
SCENE_KEYS = (
    "source",
    "width",
    "height",
    "crs",
    "transform",
    "footprint_wkt",
    "gsd_m",
    "size_known",
    "tile_scale",
    "count",
)


def scene_record(dets: Detections) -> dict[str, Any]:
    """What a scene's provenance says about the scene (keys :data:`SCENE_KEYS`; ``None`` where unknown).

    ``footprint_wkt`` is the whole raster (``meta["width"]`` x ``meta["height"]`` pixels) as a polygon in the
    scene CRS, or in pixels for an image without georeferencing (``crs`` is then ``None``); ``size_known`` is
    false when the GSD is unknown or not finite (lengths were left empty) or ``meta["size_known"]`` says so.
    """
    import shapely

    meta = dets.meta
    width, height = meta.get("width"), meta.get("height")
    pixels = _is_pixels(dets)
    footprint = None
    if width and height:
        ring = scene_footprint(None if pixels else dets.transform, int(width), int(height))
        geographic = not pixels and bool(getattr(dets.crs, "is_geographic", False))
        footprint = shapely.to_wkt(
            shapely.Polygon(ring), rounding_precision=_decimals(geographic, pixels) + 2, trim=True
        )
    gsd = valid_gsd(dets.gsd)
    scale = meta.get("scale")
    return {
        "source": source_path(dets) or None,
        "width": int(width) if width else None,
        "height": int(height) if height else None,
        "crs": None if pixels else crs_name(dets.crs),
        "transform": None if pixels else [float(v) for v in tuple(dets.transform)[:6]],
        "footprint_wkt": footprint,
        "gsd_m": None if gsd is None else round(gsd, 6),
        "size_known": gsd is not None and meta.get("size_known", True) is not False,
        "tile_scale": None if scale is None else float(scale),
        "count": len(dets),
    }


def provenance_record(
    scenes: Detections | Sequence[Detections], provenance: Provenance | Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The provenance an output of ``scenes`` records (a JSON-safe dict; see the module docstring).

    Keys: ``software``, ``version``, ``model``, ``model_file``, ``model_sha256``, ``conf``, ``tile``,
    ``overlap``, the ``extra`` facts of ``provenance``, and ``scenes`` (:func:`scene_record` of each).
    ``provenance`` may also be a plain mapping of the same keys.
    """
    parts = [scenes] if isinstance(scenes, Detections) else list(scenes)
    if isinstance(provenance, Provenance):
        run = {
            k: getattr(provenance, k)
            for k in ("model", "model_file", "model_sha256", "conf", "tile", "overlap")
        }
        run.update(provenance.extra)
    else:
        run = dict(provenance or {})

    def from_meta(key: str) -> Any:
        return next((d.meta[key] for d in parts if d.meta.get(key) is not None), None)

    record: dict[str, Any] = {"software": "detector", "version": __version__}
    record["model"] = run.pop("model", None) or from_meta("model")
    record["model_file"] = run.pop("model_file", None)
    record["model_sha256"] = run.pop("model_sha256", None)
    record["conf"] = run.pop("conf", None)
    record["tile"] = run.pop("tile", None) or from_meta("tile")
    record["overlap"] = run.pop("overlap", None)
    run.pop("scenes", None)
    record.update(run)
    record["scenes"] = [scene_record(d) for d in parts]
    return _json_safe(record)


def _json_safe(value: Any) -> Any:
    """``value`` with only JSON types: non-finite floats -> ``None``, numpy -> Python, tuples -> lists."""
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_safe(v) for v in (value.tolist() if isinstance(value, np.ndarray) else value)]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def read_provenance(path: str | Path, *, layer: str | None = None) -> dict[str, Any]:
    """The provenance recorded in an output of ours (any format of :data:`COLLECTION_FORMATS`).

    Args:
        path: a ``.geojson``, ``.gpkg``, ``.fgb``, ``.parquet``, ``.csv`` or ``.coco.json``/``.json`` file.
        layer: a GeoPackage layer whose scenes to read (default: the whole file).

    Returns:
        The dict :func:`provenance_record` wrote: run-level keys and ``scenes``.

    Raises:
        DetectorIOError: the file cannot be read, or records no provenance of ours.
    """
    p = Path(path)
    name = p.name.lower()
    try:
        if name.endswith((".geojson", ".json")):
            data = json.loads(p.read_text(encoding="utf-8"))
            record = data.get(PROVENANCE_KEY) if isinstance(data, dict) else None
            if record is None and isinstance(data, dict) and isinstance(data.get("info"), dict):
                record = data["info"].get(PROVENANCE_KEY)  # COCO
        elif name.endswith(".csv"):
            record = _read_csv_provenance(p)
        elif name.endswith((".gpkg", ".fgb")):
            record = _read_ogr_provenance(p, layer)
        elif name.endswith(".parquet"):
            record = _read_parquet_provenance(p)
        else:
            raise DetectorIOError(
                f"{p}: cannot read provenance from a {p.suffix or 'suffix-less'} file; "
                f"expected one of {', '.join(sorted(set(COLLECTION_FORMATS.values()) | {'.json'}))}"
            )
    except DetectorIOError:
        raise
    except OSError as e:
        raise DetectorIOError(f"{p}: cannot read ({_reason(e)})") from e
    except (ValueError, RuntimeError) as e:  # bad JSON, or GDAL errors (pyogrio raises several types)
        raise DetectorIOError(f"{p}: cannot read its provenance ({e})") from e
    if not isinstance(record, dict) or "scenes" not in record:
        raise DetectorIOError(f"{p}: records no provenance of detector (not an output of ours?)")
    return record


def _ogr_source(path: Path) -> Any:
    """``path`` for pyogrio, or the file's bytes when pyogrio's URI parsing would change the name
    (``;``, tab, newline: ``urllib.parse`` drops or splits at them, so GDAL would open another file)."""
    text = str(path)
    if any(c in text for c in ";\t\r\n?!") or "://" in text:
        return path.read_bytes()
    return text


def _read_ogr_provenance(path: Path, layer: str | None) -> Any:
    import pyogrio

    source = _ogr_source(path)
    with warnings.catch_warnings():  # bytes are read from /vsimem/, whose name has no .gpkg ending
        warnings.filterwarnings("ignore", message=".*non conformant file extension", category=RuntimeWarning)
        names = [layer] if layer is not None else [str(n) for n, _ in pyogrio.list_layers(source)]
        records = []
        for name in names:
            text = (pyogrio.read_info(source, layer=name).get("layer_metadata") or {}).get(PROVENANCE_KEY)
            if text:
                records.append(json.loads(text))
    if not records:
        return None
    merged = dict(records[0])  # one run: the run-level keys agree; the scenes are spread over the layers
    merged["scenes"] = [s for r in records for s in r.get("scenes", [])]
    return merged


def _read_parquet_provenance(path: Path) -> Any:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise DetectorIOError(
            f"{path}: reading GeoParquet needs pyarrow: pip install 'overhead-detector[geo]'"
        ) from e
    meta = pq.read_schema(path).metadata or {}
    if b"PANDAS_ATTRS" in meta:  # pandas >= 2.2 / 3
        attrs = json.loads(meta[b"PANDAS_ATTRS"])
    else:  # pandas 2.1 keeps attrs inside its own metadata
        attrs = json.loads(meta.get(b"pandas", b"{}")).get("attrs", {})
    return attrs.get(PROVENANCE_KEY)


# ----------------------------------------------------------------------------------------------------------
# atomic writing
# ----------------------------------------------------------------------------------------------------------

_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
#: Files GDAL may leave beside a dataset (SQLite journals, PAM metadata), removed with a failed temporary.
_SIDECARS = ("-journal", "-wal", "-shm", ".aux.xml")


def layer_name(text: str) -> str:
    """A GeoPackage layer / table name from any text: letters, digits, ``_``, ``.``, ``-`` (others -> ``_``).

    A scene name with ``;``, tabs or newlines keeps its real spelling in the ``source``/``scene`` field.
    """
    name = _UNSAFE_NAME.sub("_", str(text)).strip("_.")
    return name[:64] or GPKG_LAYER


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` when the block ends without error.

    The temporary name holds only letters, digits and ``_.-`` (GDAL's path parsing cuts names at ``;`` and
    drops tabs and newlines), and keeps ``path``'s suffix for the drivers. The data are flushed to disk
    (``fsync``) before the rename, so a full disk shows here. The parent folder is created when missing. On
    error the temporary file (and any GDAL side-car of it) is removed and ``path`` is left as it was.
    ``OSError`` (permissions, missing folder, full disk, ...) becomes :class:`WriteError`.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(f"{target}: cannot create the output folder {target.parent} ({_reason(e)})") from e
    if target.is_dir():
        raise WriteError(f"{target}: is a directory, expected a file name")
    stem = _UNSAFE_NAME.sub("_", target.stem)[:48]
    suffix = _UNSAFE_NAME.sub("_", target.suffix)
    tmp = target.with_name(f".{stem}.{uuid.uuid4().hex[:8]}.tmp{suffix}")
    try:
        yield tmp
        if tmp.is_file():
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, target)
    except WriteError:
        raise
    except OSError as e:
        raise WriteError(f"{target}: cannot write ({_reason(e)})") from e
    finally:
        for extra in ("", *_SIDECARS):
            with contextlib.suppress(OSError):
                Path(f"{tmp}{extra}").unlink(missing_ok=True)


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return str(e) or type(e).__name__


def write_json(path: Path, obj: Any) -> None:
    """``obj`` as compact JSON, atomically; a ``NaN``/infinity that slipped through is an error, not text.

    ``json.dumps``, not ``json.dump``: only the one-shot encoder is the C one (a 610-feature GeoJSON: 0.03 s
    vs 0.11 s).
    """
    try:
        text = json.dumps(obj, separators=(",", ":"), allow_nan=False)
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.write("\n")
    except ValueError as e:
        raise WriteError(f"{path}: cannot write ({e})") from e


# ----------------------------------------------------------------------------------------------------------
# GeoJSON
# ----------------------------------------------------------------------------------------------------------


def to_geojson(
    dets: Detections, *, keep_crs: bool = False, provenance: Provenance | Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The detections as a GeoJSON ``FeatureCollection`` (a dict ready for :func:`json.dump`).

    Args:
        dets: detections of one scene.
        keep_crs: write coordinates in the scene CRS with a ``"crs"`` member (GeoJSON 2008, which GDAL/QGIS
            read) instead of RFC 7946 longitude/latitude.
        provenance: run-level provenance (:class:`Provenance`) for the ``"detector"`` member.

    Returns:
        The collection. Top-level foreign members: ``source``, ``gsd_m``, ``count``, ``detector``
        (provenance), plus ``crs`` and ``coordinates`` (with ``keep_crs``, and for images without
        georeferencing, see the module docstring).
    """
    return _geojson([dets], keep_crs=keep_crs, provenance=provenance, collection=False)


def polygon_features(
    rings: np.ndarray, attrs: Mapping[str, Sequence[Any]], fields: Sequence[str]
) -> list[dict[str, Any]]:
    """GeoJSON Polygon features from 4-corner rings ``(N, 4, 2)`` (already oriented and rounded), ``id`` ``0..N-1``,
    properties ``fields`` of the column table ``attrs``; each ring is closed by repeating its first corner."""
    features = []
    for i in range(len(rings)):
        ring = rings[i].tolist()
        features.append(
            {
                "type": "Feature",
                "id": i,
                "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
                "properties": {k: attrs[k][i] for k in fields},
            }
        )
    return features


def _geojson(
    scenes: Sequence[Detections],
    *,
    keep_crs: bool,
    provenance: Provenance | Mapping[str, Any] | None,
    collection: bool,
) -> dict[str, Any]:
    from rasterio.crs import CRS

    wgs84 = CRS.from_epsg(4326)
    target = collection_crs(scenes)  # None: image pixels
    pixels = target is None
    if not pixels and not keep_crs:
        target = wgs84
    lay = _layer(scenes, target, scene_column=collection)
    features = polygon_features(
        np.round(lay.rings, _decimals(lay.geographic, pixels)), lay.attrs, list(lay.attrs)
    )
    out: dict[str, Any] = {"type": "FeatureCollection"}
    if pixels:
        out["crs"] = {"type": "name", "properties": {"name": PIXEL_CRS_WKT}}
        out["coordinates"] = PIXEL_COORDINATES
    elif target != wgs84:
        epsg = target.to_epsg()
        name = f"urn:ogc:def:crs:EPSG::{epsg}" if epsg else target.to_wkt()
        out["crs"] = {"type": "name", "properties": {"name": name}}
        whose = "the scenes' common CRS" if collection else "scene CRS"
        out["coordinates"] = f"{crs_name(target)} ({whose}; not RFC 7946, which requires EPSG:4326 lon/lat)"
    if not collection:
        out["source"] = source_path(scenes[0])
        gsd = valid_gsd(scenes[0].gsd)
        out["gsd_m"] = None if gsd is None else round(gsd, 4)
    out["count"] = len(features)
    out[PROVENANCE_KEY] = provenance_record(scenes, provenance)
    out["features"] = features
    return out


def write_geojson(
    dets: Detections,
    path: str | Path,
    *,
    keep_crs: bool = False,
    provenance: Provenance | Mapping[str, Any] | None = None,
) -> Path:
    """Write :func:`to_geojson` to ``path`` atomically and return the path.

    ``path`` is used as given; callers name the file with :func:`output_name` (``.px.geojson`` for an image
    without georeferencing).

    Raises:
        WriteError: the file cannot be written.
        ValueError: footprints cannot be reprojected to EPSG:4326.
    """
    path = Path(path)
    collection = to_geojson(dets, keep_crs=keep_crs, provenance=provenance)
    _warn_pixels(dets, path)
    write_json(path, collection)
    return path


# ----------------------------------------------------------------------------------------------------------
# GeoPackage, FlatGeobuf, GeoParquet
# ----------------------------------------------------------------------------------------------------------


def _ogr_backend() -> str:
    try:
        import pyogrio  # noqa: F401

        return "pyogrio"
    except ImportError:
        pass
    try:
        import fiona  # noqa: F401

        return "fiona"
    except ImportError:
        pass
    raise WriteError("writing GeoPackage needs pyogrio (or fiona): pip install pyogrio")


def write_gpkg(
    dets: Detections,
    path: str | Path,
    *,
    layer: str = GPKG_LAYER,
    provenance: Provenance | Mapping[str, Any] | None = None,
) -> Path:
    """Write the footprints as polygons with :func:`attribute_table` fields to a GeoPackage layer.

    Coordinates are in the scene CRS, which the layer records (no CRS and pixel coordinates for images
    without georeferencing). ``layer`` goes through :func:`layer_name`. The provenance is the ``detector``
    metadata item of the layer. Uses pyogrio, or fiona when pyogrio is not installed.

    Raises:
        WriteError: the file cannot be written, or neither pyogrio nor fiona is installed.
    """
    path = Path(path)
    backend = _ogr_backend()
    lay = _layer([dets], None if _is_pixels(dets) else dets.crs, scene_column=False)
    record = _json_text(provenance_record([dets], provenance))
    _warn_pixels(dets, path)
    with atomic_path(path) as tmp:
        _write_ogr(tmp, path, backend, "GPKG", [(layer_name(layer), lay, record)])
    return path


def _json_text(record: dict[str, Any]) -> str:
    return json.dumps(record, separators=(",", ":"), allow_nan=False)


def _layer_metadata(lay: _Layer, record: str) -> dict[str, str]:
    sources = [source_path(d) for d in lay.scenes]
    return {
        "source": sources[0] if len(sources) == 1 else f"{len(sources)} scenes",
        "coordinates": PIXEL_COORDINATES if lay.crs is None else crs_name(lay.crs),
        PROVENANCE_KEY: record,
    }


def _write_ogr(
    tmp: Path,
    path: Path,
    backend: str,
    driver: str,
    layers: Sequence[tuple[str, _Layer, str]],
) -> None:
    # Provenance is layer metadata only: with dataset-level metadata, GDAL 3.12 leaves a .aux.xml beside
    # a GeoPackage whenever it is opened to list its layers.
    try:
        for name, lay, record in layers:
            if backend == "pyogrio":
                _ogr_pyogrio(tmp, lay, name, driver, _layer_metadata(lay, record))
            else:
                _ogr_fiona(tmp, lay, name, driver)
    except WriteError:
        raise
    except Exception as e:  # noqa: BLE001 - GDAL errors come in several types; name the file
        raise WriteError(f"{path}: cannot write ({e})") from e


def _field_array(values: list[Any], kind: str) -> np.ndarray:
    missing = any(v is None for v in values)
    if kind == "s":
        return np.asarray([None if v is None else str(v) for v in values], dtype=object)
    if kind == "i" and not missing:
        return np.asarray(values, dtype=np.int64).reshape(-1)
    if kind == "b" and not missing:
        return np.asarray(values, dtype=bool).reshape(-1)
    return np.asarray([np.nan if v is None else float(v) for v in values], dtype=np.float64).reshape(-1)


def _ogr_pyogrio(tmp: Path, lay: _Layer, name: str, driver: str, meta: dict[str, str]) -> None:
    import shapely
    from pyogrio.raw import write

    polys = shapely.polygons(lay.rings) if len(lay.rings) else np.empty(0, dtype=object)
    names = list(lay.attrs)
    with warnings.catch_warnings():  # no CRS is deliberate for images without georeferencing (logged above)
        warnings.filterwarnings("ignore", message=".*crs.*was not provided", category=UserWarning)
        write(
            str(tmp),
            geometry=shapely.to_wkb(polys) if len(polys) else np.empty(0, dtype=object),
            field_data=[_field_array(lay.attrs[k], lay.kinds[k]) for k in names],
            fields=names,
            layer=name,
            driver=driver,
            geometry_type="Polygon",
            crs=None if lay.crs is None else lay.crs.to_wkt(),
            nan_as_null=True,
            layer_metadata=meta,
        )


_FIONA_TYPES = {"s": "str", "f": "float", "i": "int", "b": "bool"}


def _ogr_fiona(tmp: Path, lay: _Layer, name: str, driver: str) -> None:
    import fiona
    import shapely

    names = list(lay.attrs)
    schema = {"geometry": "Polygon", "properties": {k: _FIONA_TYPES[lay.kinds[k]] for k in names}}
    crs_wkt = None if lay.crs is None else lay.crs.to_wkt()
    mode = "a" if tmp.exists() else "w"
    with fiona.open(str(tmp), mode, driver=driver, layer=name, schema=schema, crs_wkt=crs_wkt) as dst:
        for i, poly in enumerate(shapely.polygons(lay.rings) if len(lay.rings) else []):
            dst.write(
                {
                    "geometry": shapely.geometry.mapping(poly),
                    "properties": {k: lay.attrs[k][i] for k in names},
                }
            )


def _write_parquet(tmp: Path, lay: _Layer, record: dict[str, Any]) -> None:
    import geopandas
    import shapely

    polys = shapely.polygons(lay.rings) if len(lay.rings) else []
    columns = {k: _field_array(v, lay.kinds[k]) for k, v in lay.attrs.items()}
    crs = None if lay.crs is None else lay.crs.to_wkt()
    df = geopandas.GeoDataFrame(columns, geometry=geopandas.GeoSeries(list(polys), crs=crs), crs=crs)
    df.attrs[PROVENANCE_KEY] = record
    df.to_parquet(tmp, index=False)


def to_geodataframe(dets: Detections) -> Any:
    """The detections as a ``geopandas.GeoDataFrame`` (needs the ``geo`` extra).

    Columns: ``class``, ``class_id``, ``score``, ``length_m``, ``width_m`` (``NaN`` when the GSD is
    unknown), ``heading_deg`` (``NaN`` when none), ``source`` (the scene path as given), the pixel box
    ``px_xmin .. px_ymax``, every :attr:`Detections.data` column as it is (replacing a column of the same
    name), and ``geometry``: the footprint polygons in the scene CRS (``crs`` set), or in image pixels with no
    CRS for an image without georeferencing. One row per detection, in order.

    Raises:
        ImportError: geopandas is not installed (the message names the extra).
    """
    try:
        import geopandas
    except ImportError as e:
        raise ImportError(
            "Detections.to_geodataframe needs geopandas: pip install 'overhead-detector[geo]'"
        ) from e
    import shapely

    n = len(dets)
    length, width = lengths_m(dets)
    columns: dict[str, Any] = {
        "class": dets.class_name,
        "class_id": dets.class_ids,
        "score": dets.scores,
        "length_m": length,
        "width_m": width,
        "heading_deg": headings(dets),
        "source": np.full(n, source_path(dets), dtype=object),
        "px_xmin": dets.xyxy[:, 0],
        "px_ymin": dets.xyxy[:, 1],
        "px_xmax": dets.xyxy[:, 2],
        "px_ymax": dets.xyxy[:, 3],
    }
    for key, column in dets.data.items():
        columns[key] = column if column.ndim == 1 else list(column)
    crs = None if _is_pixels(dets) else crs_name(dets.crs)
    polys = shapely.polygons(_ccw(footprints(dets))) if n else []
    return geopandas.GeoDataFrame(columns, geometry=geopandas.GeoSeries(list(polys), crs=crs), crs=crs)


# ----------------------------------------------------------------------------------------------------------
# CSV
# ----------------------------------------------------------------------------------------------------------

#: Columns of CSV outputs, in order (then any :attr:`Detections.data` column not among them).
CSV_COLUMNS = (
    "source",
    "class",
    "score",
    "cx",
    "cy",
    "crs",
    "wkt",
    "length_m",
    "width_m",
    "heading_deg",
    "px_xmin",
    "px_ymin",
    "px_xmax",
    "px_ymax",
)

_HEADER_LINE = re.compile(r"^# ([A-Za-z_][\w.-]*): ?(.*)$")


def write_csv(
    dets: Detections, path: str | Path, *, provenance: Provenance | Mapping[str, Any] | None = None
) -> Path:
    """One row per detection (:data:`CSV_COLUMNS`), coordinates in the scene CRS or in pixels.

    ``cx``/``cy`` is the footprint centre, ``wkt`` the footprint polygon, ``crs`` the scene CRS
    (``EPSG:n`` or WKT) or ``"pixels"`` for images without georeferencing; empty cells for unknown values.
    The provenance comes first as ``# key: value`` lines (``pandas.read_csv(path, comment="#")`` skips them;
    text cells are quoted, so a ``#`` inside one survives).

    Raises:
        WriteError: the file cannot be written.
    """
    path = Path(path)
    _write_csv(path, [dets], provenance, collection=False)
    return path


def _write_csv(
    path: Path,
    scenes: Sequence[Detections],
    provenance: Provenance | Mapping[str, Any] | None,
    *,
    collection: bool,
) -> None:
    target = collection_crs(scenes)
    pixels = target is None
    lay = _layer(scenes, target, scene_column=collection)
    nd = _decimals(lay.geographic, pixels)
    centre = lay.rings.mean(axis=1) if len(lay.rings) else np.zeros((0, 2))
    crs_text = "pixels" if pixels else crs_name(target)
    base = [("scene" if c == "source" else c) for c in CSV_COLUMNS] if collection else list(CSV_COLUMNS)
    columns = base + [k for k in lay.attrs if k not in base]
    header = _csv_header(provenance_record(scenes, provenance))
    for d in scenes:
        _warn_pixels(d, path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write(header)
        w = csv.writer(fh, quoting=csv.QUOTE_NONNUMERIC)
        w.writerow(columns)
        for i in range(len(lay.rings)):
            ring = [*lay.rings[i], lay.rings[i][0]]
            row = {k: lay.attrs[k][i] for k in lay.attrs}
            row["cx"] = round(float(centre[i, 0]), nd)
            row["cy"] = round(float(centre[i, 1]), nd)
            row["crs"] = crs_text
            row["wkt"] = "POLYGON ((" + ", ".join(f"{x:.{nd}f} {y:.{nd}f}" for x, y in ring) + "))"
            w.writerow(["" if row.get(k) is None else row[k] for k in columns])


def _csv_header(record: dict[str, Any]) -> str:
    lines = [
        f"# written by detector {__version__}; the table: pandas.read_csv(path, comment='#'); "
        "these lines: detector.writers.read_provenance(path)"
    ]
    for key, value in record.items():
        if key == "scenes" and len(value) == 1:
            lines += [f"# scene.{_csv_key(k)}: {_csv_value(v)}" for k, v in value[0].items()]
        else:
            lines.append(f"# {_csv_key(key)}: {_csv_value(value)}")
    return "\n".join(lines) + "\n"


def _csv_key(key: str) -> str:
    key = re.sub(r"[^\w.-]", "_", key)
    return key if re.match(r"[A-Za-z_]", key) else f"_{key}"


def _csv_value(value: Any) -> str:
    """Plain text when it reads back as the same string, else JSON (numbers, lists, odd strings)."""
    if isinstance(value, str) and value == value.strip() and "\n" not in value and "\r" not in value:
        try:
            json.loads(value)
        except ValueError:
            return value
    return json.dumps(value, separators=(",", ":"), allow_nan=False)


def _read_csv_provenance(path: Path) -> dict[str, Any] | None:
    record: dict[str, Any] = {}
    scene: dict[str, Any] = {}
    with open(path, encoding="utf-8", newline="") as fh:
        for line in fh:
            if not line.startswith("#"):
                break
            m = _HEADER_LINE.match(line.rstrip("\r\n"))
            if not m:
                continue
            key, text = m.groups()
            try:
                value = json.loads(text)
            except ValueError:
                value = text
            if key.startswith("scene."):
                scene[key[len("scene.") :]] = value
            else:
                record[key] = value
    if scene:
        record["scenes"] = [scene]
    return record or None


# ----------------------------------------------------------------------------------------------------------
# COCO results
# ----------------------------------------------------------------------------------------------------------


def category_id(name: str, class_names: Sequence[str] | None = None) -> int:
    """COCO category id of a class: its position in ``class_names`` + 1 (the detections' class names, i.e. the
    model's ``meta.names``; default: the classes of ``configs/taxonomy.yaml``)."""
    names = tuple(class_names) if class_names is not None else default_classes()
    if name not in names:
        raise ValueError(f"unknown class {name!r}: not one of {names}")
    return names.index(name) + 1


def coco_categories(class_names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """The ``categories`` list matching :func:`category_id` (for a COCO ground-truth file)."""
    names = tuple(class_names) if class_names is not None else default_classes()
    return [{"id": i + 1, "name": n} for i, n in enumerate(names)]


def coco_results(
    dets: Detections, *, image_id: int | str = 1, category_ids: Mapping[str, int] | None = None
) -> list[dict[str, Any]]:
    """COCO results entries ``{image_id, category_id, bbox, score}`` (+ ``segmentation`` for rotated boxes)
    of one image: the list ``pycocotools``' ``COCO.loadRes`` reads.

    ``bbox`` is ``[x, y, width, height]`` in scene pixels (the box enclosing a rotated footprint);
    ``segmentation`` is the rotated footprint as one flat polygon ``[[x1, y1, ..., x4, y4]]``.
    ``category_ids`` maps class names to ids (default :func:`category_id`); classes it lacks are left out.
    """
    box = dets.xyxy
    rings = corners(dets) if dets.is_rotated else None
    out = []
    for i in range(len(dets)):
        name = dets.class_names[dets.class_ids[i]]
        if category_ids is None:
            cat = category_id(name, dets.class_names)
        elif name in category_ids:
            cat = category_ids[name]
        else:
            continue
        x1, y1, x2, y2 = (float(v) for v in box[i])
        entry: dict[str, Any] = {
            "image_id": image_id,
            "category_id": cat,
            "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
            "score": round(float(dets.scores[i]), 5),
        }
        if rings is not None:
            entry["segmentation"] = [np.round(rings[i], 2).reshape(-1).tolist()]
        out.append(entry)
    return out


def to_coco(
    dets: Detections | Sequence[Detections],
    *,
    image_id: int | str | None = None,
    coco_images: str | Path | Mapping[str, Any] | None = None,
    provenance: Provenance | Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """One COCO file for one scene or a batch: ``info``, ``images``, ``categories``, ``annotations``.

    ``images`` has ``id``, ``file_name``, ``width``, ``height`` per scene. Without a dataset the ids are
    ``1..N`` in batch order (``image_id`` sets the one id of a single scene) and ``file_name`` is the scene's
    file name; ``categories`` are the detections' classes (:func:`coco_categories`). Given the COCO dataset
    the detections are to be scored against (``coco_images``: its file, or the loaded dict), every scene
    takes the ``id``, ``file_name`` and size of the dataset image with its file name (the path as given, else
    its file name), and categories are the dataset's, matched by name (detections of a class the dataset
    does not have are left out, with a warning). ``annotations`` are :func:`coco_results` with unique
    ``id`` s ``1..K``, ``area`` and ``iscrowd`` added: score them with
    ``COCO(dataset).loadRes(results["annotations"])``. ``info["detector"]`` is the provenance.

    Raises:
        LabelError: ``coco_images`` cannot be read, or a scene is not in it (the message names the scene).
        ValueError: no scenes, or ``image_id`` given for more than one scene.
    """
    scenes = [dets] if isinstance(dets, Detections) else list(dets)
    if not scenes:
        raise ValueError("to_coco needs at least one scene, got none")
    if image_id is not None and len(scenes) != 1:
        raise ValueError(f"image_id is for a single scene; got {len(scenes)} scenes (they are numbered 1..N)")
    dataset, where = _coco_dataset(coco_images)
    images: list[dict[str, Any]] = []
    if dataset is not None:
        cat_ids = _dataset_category_ids(dataset, {n for d in scenes for n in d.class_names})
        categories: list[dict[str, Any]] = [
            {"id": int(c["id"]), "name": str(c["name"])} for c in dataset.get("categories", [])
        ]
        for d in scenes:
            images.append(_dataset_image(dataset, d, where))
        seen: dict[Any, str] = {}
        for d, im in zip(scenes, images, strict=True):
            if im["id"] in seen:
                raise LabelError(
                    f"{where}: scenes {seen[im['id']]} and {source_path(d)} are both image id {im['id']}"
                )
            seen[im["id"]] = source_path(d)
        missing = sorted({n for d in scenes for n in d.class_name.tolist()} - set(cat_ids))
        if missing:
            logger.warning(
                "%s has no category %s: those detections are left out of the COCO results",
                where,
                ", ".join(repr(m) for m in missing),
            )
    else:
        names = tuple(dict.fromkeys(n for d in scenes for n in d.class_names))
        categories = coco_categories(names)
        cat_ids = {str(c["name"]): int(c["id"]) for c in categories}
        for k, d in enumerate(scenes):
            images.append(
                {
                    "id": image_id if image_id is not None else k + 1,
                    "file_name": source_name(d) or f"image-{k + 1}",
                    "width": d.meta.get("width"),
                    "height": d.meta.get("height"),
                }
            )
    annotations: list[dict[str, Any]] = []
    for d, im in zip(scenes, images, strict=True):
        for entry in coco_results(d, image_id=im["id"], category_ids=cat_ids):
            w, h = entry["bbox"][2], entry["bbox"][3]
            annotations.append({"id": len(annotations) + 1, **entry, "area": round(w * h, 2), "iscrowd": 0})
    return {
        "info": {
            "description": "detections (COCO results) written by detector",
            "version": __version__,
            PROVENANCE_KEY: provenance_record(scenes, provenance),
        },
        "images": images,
        "categories": categories,
        "annotations": annotations,
    }


def _dataset_category_ids(dataset: dict[str, Any], names: set[str]) -> dict[str, int]:
    """Our class name -> the dataset's category id: by name (spelling of case, spaces, ``_`` aside), else
    through the taxonomy's source tables (HRPlanes' category ``"0"`` is ``aircraft``); when several categories
    map to one class, the one most used by the dataset's annotations (not its supercategory)."""
    from collections import Counter

    from detector.taxonomy import normalize_class

    cats = [c for c in dataset.get("categories") or [] if isinstance(c, dict) and "id" in c and "name" in c]
    by_name = {normalize_class(str(c["name"])): int(c["id"]) for c in cats}
    used = Counter(a.get("category_id") for a in dataset.get("annotations") or [] if isinstance(a, dict))
    tables = default_taxonomy().table
    out: dict[str, int] = {}
    for name in sorted(names):
        key = normalize_class(name)
        if key in by_name:
            out[name] = by_name[key]
            continue
        mapped = [
            int(c["id"])
            for c in cats
            if any(t.get(normalize_class(str(c["name"]))) == key for t in tables.values())
        ]
        if mapped:
            out[name] = max(mapped, key=lambda i: (used[i], -i))
    return out


def _coco_dataset(coco_images: str | Path | Mapping[str, Any] | None) -> tuple[dict[str, Any] | None, str]:
    if coco_images is None:
        return None, ""
    if isinstance(coco_images, Mapping):
        data, where = dict(coco_images), "the COCO dataset"
    else:
        where = str(coco_images)
        try:
            data = json.loads(Path(coco_images).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise LabelError(f"{where}: cannot read the COCO dataset ({_reason(e)})") from e
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise LabelError(f"{where}: not a COCO dataset (needs an `images` list)")
    return data, where


def _dataset_image(dataset: dict[str, Any], dets: Detections, where: str) -> dict[str, Any]:
    src = source_path(dets)
    records = dataset["images"]
    found = [r for r in records if str(r.get("file_name", "")) == src]
    if not found:
        base = Path(src).name
        found = [r for r in records if Path(str(r.get("file_name", ""))).name == base]
        if len(found) > 1:
            raise LabelError(
                f"{where}: {len(found)} images are named {base!r}; scene {src} matches none of them exactly"
            )
    if not found:
        raise LabelError(
            f"{where}: scene {src or '(no path)'} is not in the dataset (no image named {Path(src).name!r})"
        )
    rec = found[0]
    w, h = dets.meta.get("width"), dets.meta.get("height")
    if w and rec.get("width") and (int(rec["width"]), int(rec.get("height") or 0)) != (int(w), int(h or 0)):
        logger.warning(
            "%s: image %s is %sx%s px in the dataset but the scene is %sx%s px",
            where,
            rec.get("file_name"),
            rec.get("width"),
            rec.get("height"),
            w,
            h,
        )
    return {
        "id": rec["id"],
        "file_name": rec.get("file_name"),
        "width": rec.get("width", w),
        "height": rec.get("height", h),
    }


def write_coco(
    dets: Detections | Sequence[Detections],
    path: str | Path,
    *,
    image_id: int | str | None = None,
    coco_images: str | Path | Mapping[str, Any] | None = None,
    provenance: Provenance | Mapping[str, Any] | None = None,
) -> Path:
    """Write :func:`to_coco` of one scene or a batch atomically and return the path.

    Raises:
        WriteError: the file cannot be written.
        LabelError: ``coco_images`` cannot be read or lacks a scene.
    """
    path = Path(path)
    write_json(path, to_coco(dets, image_id=image_id, coco_images=coco_images, provenance=provenance))
    return path


# ----------------------------------------------------------------------------------------------------------
# quicklook
# ----------------------------------------------------------------------------------------------------------


def class_colour(name: str, class_names: Sequence[str] | None = None) -> tuple[int, int, int]:
    """Outline colour of a class in quicklooks: its ``colour`` in ``configs/taxonomy.yaml``, else a colour of
    :data:`detector.taxonomy.FALLBACK_PALETTE` picked by a stable hash of the name (``class_names`` is
    accepted for older callers and not needed)."""
    return default_taxonomy().colour(name)


@dataclass(frozen=True)
class QuicklookView:
    """A scene read for its quicklook: ``rgb`` ``(rows, cols, 3)`` uint8 at reduced resolution, and the scale
    from scene pixels to its pixels (``sx``, ``sy``)."""

    rgb: np.ndarray
    sx: float
    sy: float


def quicklook_view(scene: Scene, max_size: int = QUICKLOOK_MAX_SIZE) -> QuicklookView:
    """Read an open scene at reduced resolution (longest side at most ``max_size``) for its quicklook.

    Raises:
        RasterError: the scene cannot be read.
    """
    from rasterio.windows import Window

    if max_size < 16:
        raise ValueError(f"max_size must be at least 16 pixels, got {max_size!r}")
    scale = min(1.0, max_size / max(scene.width, scene.height))
    rows, cols = max(1, round(scene.height * scale)), max(1, round(scene.width * scale))
    rgb, _ = scene.read(Window(0, 0, scene.width, scene.height), out_shape=(rows, cols))
    return QuicklookView(rgb, cols / scene.width, rows / scene.height)


def write_quicklook(
    dets: Detections,
    path: str | Path,
    *,
    source: str | Path | None = None,
    image: np.ndarray | None = None,
    bands: tuple[int, ...] | None = None,
    max_size: int = QUICKLOOK_MAX_SIZE,
    quality: int = 90,
    view: QuicklookView | None = None,
) -> Path:
    """Draw the footprints over a reduced-resolution view of the scene and save it as PNG or JPEG.

    The scene is read once at reduced resolution (longest side at most ``max_size``) through
    :func:`detector.raster.open_scene`, with the same per-scene stretch the model saw. Outlines are coloured
    per class (:func:`class_colour`: the taxonomy's colours); a legend in the top-left corner gives the count per class. Nodata is
    black.

    Args:
        dets: detections in scene pixels.
        path: output file; ``.png`` or ``.jpg``/``.jpeg``.
        source: the raster to draw on (default ``dets.source``).
        image: an in-memory image (rows, cols, channels) instead of a file.
        bands: bands to read as RGB (as in ``open_scene``).
        max_size: longest side of the quicklook in pixels.
        quality: JPEG quality.
        view: the scene already read by :func:`quicklook_view` (then ``source``, ``image``, ``bands`` and
            ``max_size`` are not used).

    Raises:
        WriteError: the file cannot be written or its extension is not PNG/JPEG.
        RasterError: the scene cannot be read.
    """
    from PIL import Image, ImageDraw, ImageFont

    from detector.raster import Scene, open_scene

    path = Path(path)
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower())
    if fmt is None:
        raise WriteError(f"{path}: quicklook must be .png, .jpg or .jpeg, got {path.suffix!r}")
    if view is None:
        if image is not None:
            scene = Scene.from_array(image, bands=bands)
        else:
            src = source if source is not None else dets.source
            if not src or str(src) == "<array>":
                raise ValueError(
                    "write_quicklook needs the scene: pass source= or image= (dets.source is not a file)"
                )
            scene = open_scene(src, bands=bands)
        with scene:
            view = quicklook_view(scene, max_size)
    canvas = Image.fromarray(view.rgb, "RGB")
    draw = ImageDraw.Draw(canvas)
    rings = corners(dets) * np.array([view.sx, view.sy])
    width = 1 if max(canvas.size) < 768 else 2
    names = dets.class_names
    for i in np.argsort(dets.scores, kind="stable"):  # best scores drawn last, on top
        colour = class_colour(names[dets.class_ids[i]], names)
        pts = [(float(x), float(y)) for x, y in rings[i]]
        draw.line([*pts, pts[0]], fill=colour, width=width)
    _legend(draw, ImageFont.load_default(), dets)
    with atomic_path(path) as tmp:
        if fmt == "JPEG":
            canvas.save(tmp, format=fmt, quality=quality)
        else:
            canvas.save(tmp, format=fmt, optimize=True)
        _verify_image(tmp, path, fmt, canvas.size)
    return path


def _verify_image(tmp: Path, path: Path, fmt: str, size: tuple[int, int]) -> None:
    """Decode the written image in full and check its end marker: a short write (full disk) is an error."""
    from PIL import Image

    try:
        with Image.open(tmp) as im:
            im.load()
            ok = im.format == fmt and im.size == size
        with open(tmp, "rb") as fh:
            fh.seek(max(0, tmp.stat().st_size - 16))
            tail = fh.read()
    except (OSError, SyntaxError, ValueError) as e:  # PIL: "image file is truncated", unidentified image
        raise WriteError(
            f"{path}: the quicklook on disk is incomplete ({_reason(e)}); nothing was written"
        ) from e
    ended = tail.endswith(b"\xff\xd9") if fmt == "JPEG" else tail.endswith(b"IEND\xaeB`\x82")
    if not (ok and ended):
        raise WriteError(
            f"{path}: the quicklook on disk is incomplete (no end of image); nothing was written"
        )


def _legend(draw: Any, font: Any, dets: Detections) -> None:
    counts = np.bincount(dets.class_ids, minlength=len(dets.class_names))
    lines = [(n, int(c)) for n, c in zip(dets.class_names, counts, strict=True) if c] or [
        ("no detections", 0)
    ]
    texts = [f"{n}: {c}" if c else n for n, c in lines]
    line_h = max(draw.textbbox((0, 0), t, font=font)[3] for t in texts) + 4
    text_w = max(draw.textlength(t, font=font) for t in texts)
    pad, swatch = 4, 10
    draw.rectangle([0, 0, pad * 3 + swatch + text_w, pad * 2 + line_h * len(lines)], fill=(0, 0, 0))
    for k, ((name, count), text) in enumerate(zip(lines, texts, strict=True)):
        y = pad + k * line_h
        if count:
            draw.rectangle(
                [pad, y + 1, pad + swatch, y + 1 + swatch], fill=class_colour(name, dets.class_names)
            )
        draw.text((pad * 2 + swatch, y), text, fill=(255, 255, 255), font=font)


# ----------------------------------------------------------------------------------------------------------
# dispatch
# ----------------------------------------------------------------------------------------------------------


def write(
    dets: Detections,
    path: str | Path,
    fmt: str,
    *,
    keep_crs: bool = False,
    provenance: Provenance | Mapping[str, Any] | None = None,
    coco_images: str | Path | Mapping[str, Any] | None = None,
) -> Path:
    """Write ``dets`` to ``path`` in format ``fmt`` (a key of :data:`FORMATS`; name the file with
    :func:`output_name`).

    Raises:
        ValueError: unknown format.
        WriteError: the file cannot be written.
    """
    if fmt == "geojson":
        return write_geojson(dets, path, keep_crs=keep_crs, provenance=provenance)
    if fmt == "gpkg":
        return write_gpkg(dets, path, provenance=provenance)
    if fmt == "csv":
        return write_csv(dets, path, provenance=provenance)
    if fmt == "coco":
        return write_coco(dets, path, coco_images=coco_images, provenance=provenance)
    raise ValueError(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}")


def collection_format(path: str | Path) -> str:
    """The :data:`COLLECTION_FORMATS` key of an output file name (``.coco.json`` -> ``coco``, ...).

    Raises:
        ValueError: the ending is none of them.
    """
    name = Path(path).name.lower()
    for fmt, ending in sorted(COLLECTION_FORMATS.items(), key=lambda kv: -len(kv[1])):
        if name.endswith(ending):
            return fmt
    raise ValueError(
        f"{path}: cannot tell the output format from the file name; "
        f"expected one of {', '.join(COLLECTION_FORMATS.values())}"
    )


def write_collection(
    dets_list: Sequence[Detections],
    path: str | Path,
    fmt: str | None = None,
    *,
    keep_crs: bool = False,
    layer_per_crs: bool = False,
    provenance: Provenance | Mapping[str, Any] | None = None,
    coco_images: str | Path | Mapping[str, Any] | None = None,
) -> Path:
    """Write the detections of many scenes to one file, atomically (see the module docstring).

    Args:
        dets_list: one :class:`Detections` per scene, in batch order.
        path: the output file.
        fmt: a key of :data:`COLLECTION_FORMATS` (default: from the file name, :func:`collection_format`).
        keep_crs: GeoJSON only: write :func:`collection_crs` (with a ``"crs"`` member) instead of lon/lat.
        layer_per_crs: GeoPackage only: one layer per scene CRS (``detections_epsg_32633``, ...) instead of
            one layer in :func:`collection_crs`.
        provenance: run-level provenance (:class:`Provenance`); the file records every scene's too.
        coco_images: COCO only: the dataset to take image and category ids from (see :func:`to_coco`).

    Every detection carries a ``scene`` attribute: its scene's path as given.

    Raises:
        ValueError: no scenes, an unknown format, or ``layer_per_crs`` for another format than GeoPackage.
        WriteError: the file cannot be written, a needed library is missing, or georeferenced scenes and
            scenes without georeferencing are mixed.
    """
    path = Path(path)
    scenes = list(dets_list)
    if not scenes:
        raise ValueError(f"{path}: write_collection needs at least one scene, got none")
    fmt = fmt or collection_format(path)
    if fmt not in COLLECTION_FORMATS:
        raise ValueError(
            f"unknown collection format {fmt!r}; expected one of {', '.join(COLLECTION_FORMATS)}"
        )
    if layer_per_crs and fmt != "gpkg":
        raise ValueError(f"layer_per_crs needs the gpkg format, got {fmt!r}")
    if fmt == "coco":
        return write_coco(scenes, path, coco_images=coco_images, provenance=provenance)
    _check_mixing(scenes, path)
    if fmt == "geojson":
        collection = _geojson(scenes, keep_crs=keep_crs, provenance=provenance, collection=True)
        for d in scenes:
            _warn_pixels(d, path)
        write_json(path, collection)
    elif fmt == "csv":
        _write_csv(path, scenes, provenance, collection=True)
    elif fmt in ("gpkg", "fgb"):
        backend = _ogr_backend()
        groups = _crs_groups(scenes) if layer_per_crs else [(GPKG_LAYER, scenes)]
        layers = []
        for name, group in groups:
            lay = _layer(group, collection_crs(group), scene_column=True)
            layers.append((name, lay, _json_text(provenance_record(group, provenance))))
        for d in scenes:
            _warn_pixels(d, path)
        driver = "GPKG" if fmt == "gpkg" else "FlatGeobuf"
        with atomic_path(path) as tmp:
            _write_ogr(tmp, path, backend, driver, layers)
    else:  # parquet
        try:
            import geopandas  # noqa: F401
            import pyarrow  # noqa: F401
        except ImportError as e:
            raise WriteError(
                f"{path}: writing GeoParquet needs geopandas and pyarrow: pip install 'overhead-detector[geo]'"
            ) from e
        lay = _layer(scenes, collection_crs(scenes), scene_column=True)
        record = provenance_record(scenes, provenance)
        for d in scenes:
            _warn_pixels(d, path)
        with atomic_path(path) as tmp:
            try:
                _write_parquet(tmp, lay, record)
            except OSError:
                raise
            except Exception as e:  # noqa: BLE001 - pyarrow errors come in several types; name the file
                raise WriteError(f"{path}: cannot write ({e})") from e
    return path


def _crs_groups(scenes: Sequence[Detections]) -> list[tuple[str, list[Detections]]]:
    """Scenes grouped by CRS in first-seen order, each with its layer name."""
    groups: list[tuple[Any, list[Detections]]] = []
    for d in scenes:
        crs = None if _is_pixels(d) else d.crs
        for key, members in groups:
            if key == crs:
                members.append(d)
                break
        else:
            groups.append((crs, [d]))
    out = []
    for k, (crs, members) in enumerate(groups):
        epsg = None if crs is None else crs.to_epsg()
        suffix = "pixels" if crs is None else f"epsg_{epsg}" if epsg else f"crs_{k + 1}"
        out.append((layer_name(f"{GPKG_LAYER}_{suffix}"), members))
    return out
