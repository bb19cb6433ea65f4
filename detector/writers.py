"""Write :class:`~detector.detections.Detections` to files: GeoJSON, GeoPackage, CSV, COCO results, quicklook.

Every writer takes the detections of one scene (scene pixels plus the scene's ``crs``/``transform``, see
:mod:`detector.detections`) and writes one file, **atomically**: the data go to a hidden temporary file in
the same folder, which replaces the target with :func:`os.replace` only once it is complete, so a reader
never sees half a file and a failed write leaves the previous file (or nothing) behind. A file that cannot
be written raises :class:`WriteError` naming the path.

Coordinates:

* Footprints are the 4 corners of each box (:func:`detector.geometry.corners`): the rotated rectangle for
  OBB models, the axis-aligned box otherwise. Pixel corners go through the affine ``transform`` into the
  scene CRS (pixel ``(0, 0)`` is the top-left corner of the top-left pixel, as in GDAL).
* GeoJSON follows RFC 7946 by default: longitude/latitude on WGS 84 (EPSG:4326), in that order, exterior
  rings counter-clockwise. ``keep_crs=True`` keeps the scene CRS and writes the (pre-RFC 7946) ``"crs"``
  member instead. GeoPackage and CSV keep the scene CRS (the GeoPackage records it).
* An image without georeferencing (``crs is None``) is written in **image pixels** (x right, y down): the
  files say so (a top-level GeoJSON member, a ``crs`` column in CSV, no CRS in the GeoPackage) and a warning
  is logged.

Attributes written per detection (:func:`attribute_table`): ``class``, ``score``; ``length_m`` and
``width_m`` (long and short side of the footprint, when the GSD is known); ``heading_deg``, the azimuth of the
long side in degrees clockwise from grid north of the scene CRS (from image up when not georeferenced),
in ``[0, 180)`` because front and back are not told apart, only for rotated boxes that are not nearly square
(``None`` otherwise); ``source`` (scene file name); the enclosing pixel box ``px_xmin .. px_ymax``.
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import math
import os
import uuid
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from detector.backends.base import TAXONOMY
from detector.detections import Detections
from detector.errors import WriteError  # noqa: F401  (re-exported)
from detector.geometry import corners
from detector.georef import (  # noqa: F401  (re-exported for older callers)
    SQUARE_TOLERANCE,
    crs_name,
    footprints,
    headings,
)
from detector.georef import (
    ccw as _ccw,
)
from detector.georef import (
    side_lengths as _side_lengths,
)
from detector.georef import (
    to_lonlat as _to_lonlat,
)

logger = logging.getLogger(__name__)

#: Output formats and the file name ending each one gets from the CLI.
FORMATS: dict[str, str] = {"geojson": ".geojson", "gpkg": ".gpkg", "csv": ".csv", "coco": ".coco.json"}
#: Layer name inside GeoPackage outputs.
GPKG_LAYER = "detections"
#: Longest side of a quicklook image in pixels.
QUICKLOOK_MAX_SIZE = 2048
#: Outline colour per class of our taxonomy (RGB); other names cycle through ``_EXTRA_COLOURS``.
CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "aircraft": (255, 64, 64),
    "helicopter": (255, 200, 0),
    "small-vehicle": (0, 230, 255),
    "large-vehicle": (200, 80, 255),
}
_EXTRA_COLOURS = ((80, 255, 80), (255, 128, 0), (255, 255, 255), (0, 128, 255))
#: What the files say about coordinates of images without georeferencing.
PIXEL_COORDINATES = (
    "image pixels (x right, y down, origin at the top-left corner of the image); not georeferenced"
)


# ----------------------------------------------------------------------------------------------------------
# geometry and attributes shared by the writers
# ----------------------------------------------------------------------------------------------------------


def source_name(dets: Detections) -> str:
    """The scene's file name (``""`` when unknown)."""
    if not dets.source:
        return ""
    return Path(str(dets.source)).name


def attribute_table(dets: Detections) -> dict[str, list[Any]]:
    """Per-detection attributes as columns of plain Python values (``None`` where unknown).

    Keys: ``class``, ``score``, ``length_m``, ``width_m``, ``heading_deg``, ``source``, ``px_xmin``,
    ``px_ymin``, ``px_xmax``, ``px_ymax``. See the module docstring.
    """
    n = len(dets)
    long_px, short_px = _side_lengths(dets)
    gsd = dets.gsd
    length = [None] * n if gsd is None else [round(float(v) * gsd, 2) for v in long_px]
    width = [None] * n if gsd is None else [round(float(v) * gsd, 2) for v in short_px]
    heading = [None if math.isnan(v) else round(float(v), 1) for v in headings(dets)]
    box = np.round(dets.xyxy, 2)
    return {
        "class": [dets.class_names[i] for i in dets.class_ids],
        "score": [round(float(s), 4) for s in dets.scores],
        "length_m": length,
        "width_m": width,
        "heading_deg": heading,
        "source": [source_name(dets)] * n,
        "px_xmin": box[:, 0].tolist(),
        "px_ymin": box[:, 1].tolist(),
        "px_xmax": box[:, 2].tolist(),
        "px_ymax": box[:, 3].tolist(),
    }


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


# ----------------------------------------------------------------------------------------------------------
# atomic writing
# ----------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; it replaces ``path`` when the block ends without error.

    The parent folder is created when missing. On error the temporary file is removed and ``path`` is left
    as it was. ``OSError`` (permissions, missing folder, full disk, ...) becomes :class:`WriteError`.
    """
    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise WriteError(f"{target}: cannot create the output folder {target.parent} ({_reason(e)})") from e
    if target.is_dir():
        raise WriteError(f"{target}: is a directory, expected a file name")
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp{target.suffix}")
    try:
        yield tmp
        os.replace(tmp, target)
    except OSError as e:
        raise WriteError(f"{target}: cannot write ({_reason(e)})") from e
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return str(e) or type(e).__name__


# ----------------------------------------------------------------------------------------------------------
# GeoJSON
# ----------------------------------------------------------------------------------------------------------


def to_geojson(dets: Detections, *, keep_crs: bool = False) -> dict[str, Any]:
    """The detections as a GeoJSON ``FeatureCollection`` (a dict ready for :func:`json.dump`).

    Args:
        dets: detections of one scene.
        keep_crs: write coordinates in the scene CRS with a ``"crs"`` member (GeoJSON 2008, which GDAL/QGIS
            read) instead of RFC 7946 longitude/latitude.

    Returns:
        The collection. Top-level foreign members: ``source``, ``gsd_m``, ``count``, plus ``crs`` (with
        ``keep_crs``) or ``coordinates`` (images without georeferencing).
    """
    pixels = dets.crs is None or dets.transform is None
    pts = footprints(dets)
    geographic = False
    if not pixels and not keep_crs:
        pts = _to_lonlat(dets.crs, pts)
        geographic = True
    elif not pixels:
        geographic = bool(getattr(dets.crs, "is_geographic", False))
    pts = np.round(_ccw(pts), _decimals(geographic, pixels))
    attrs = attribute_table(dets)
    names = list(attrs)
    features = []
    for i in range(len(dets)):
        ring = pts[i].tolist()
        features.append(
            {
                "type": "Feature",
                "id": i,
                "geometry": {"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
                "properties": {k: attrs[k][i] for k in names},
            }
        )
    out: dict[str, Any] = {"type": "FeatureCollection"}
    if pixels:
        out["coordinates"] = PIXEL_COORDINATES
    elif keep_crs:
        epsg = dets.crs.to_epsg()
        name = f"urn:ogc:def:crs:EPSG::{epsg}" if epsg else dets.crs.to_wkt()
        out["crs"] = {"type": "name", "properties": {"name": name}}
        out["coordinates"] = (
            f"{crs_name(dets.crs)} (scene CRS; not RFC 7946, which requires EPSG:4326 lon/lat)"
        )
    out["source"] = source_name(dets)
    out["gsd_m"] = None if dets.gsd is None else round(float(dets.gsd), 4)
    out["count"] = len(dets)
    out["features"] = features
    return out


def write_geojson(dets: Detections, path: str | Path, *, keep_crs: bool = False) -> Path:
    """Write :func:`to_geojson` to ``path`` atomically and return the path.

    Raises:
        WriteError: the file cannot be written.
        ValueError: footprints cannot be reprojected to EPSG:4326.
    """
    path = Path(path)
    collection = to_geojson(dets, keep_crs=keep_crs)
    _warn_pixels(dets, path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(collection, fh, separators=(",", ":"))
        fh.write("\n")
    return path


# ----------------------------------------------------------------------------------------------------------
# GeoPackage
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


def write_gpkg(dets: Detections, path: str | Path, *, layer: str = GPKG_LAYER) -> Path:
    """Write the footprints as polygons with :func:`attribute_table` fields to a GeoPackage layer.

    Coordinates are in the scene CRS, which the layer records (no CRS and pixel coordinates for images
    without georeferencing). Uses pyogrio, or fiona when pyogrio is not installed.

    Raises:
        WriteError: the file cannot be written, or neither pyogrio nor fiona is installed.
    """
    import shapely

    path = Path(path)
    backend = _ogr_backend()
    pixels = dets.crs is None or dets.transform is None
    pts = _ccw(footprints(dets))
    polys = shapely.polygons(pts) if len(pts) else np.empty(0, dtype=object)
    attrs = attribute_table(dets)
    crs_wkt = None if pixels else dets.crs.to_wkt()
    _warn_pixels(dets, path)
    with atomic_path(path) as tmp:
        try:
            if backend == "pyogrio":
                _gpkg_pyogrio(tmp, polys, attrs, layer, crs_wkt, dets)
            else:
                _gpkg_fiona(tmp, polys, attrs, layer, crs_wkt)
        except WriteError:
            raise
        except Exception as e:  # noqa: BLE001 - GDAL errors come in several types; name the file
            raise WriteError(f"{path}: cannot write ({e})") from e
    return path


_GPKG_TYPES = {
    "class": "str",
    "score": "float",
    "length_m": "float",
    "width_m": "float",
    "heading_deg": "float",
    "source": "str",
    "px_xmin": "float",
    "px_ymin": "float",
    "px_xmax": "float",
    "px_ymax": "float",
}


def _field_array(name: str, values: list[Any]) -> np.ndarray:
    if _GPKG_TYPES[name] == "str":
        return np.asarray(values, dtype=object)
    return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64)


def _gpkg_pyogrio(
    tmp: Path,
    polys: np.ndarray,
    attrs: dict[str, list[Any]],
    layer: str,
    crs_wkt: str | None,
    dets: Detections,
) -> None:
    import shapely
    from pyogrio.raw import write

    names = list(attrs)
    with warnings.catch_warnings():  # no CRS is deliberate for images without georeferencing (logged above)
        warnings.filterwarnings("ignore", message=".*crs.*was not provided", category=UserWarning)
        write(
            str(tmp),
            geometry=shapely.to_wkb(polys) if len(polys) else np.empty(0, dtype=object),
            field_data=[_field_array(k, attrs[k]) for k in names],
            fields=names,
            layer=layer,
            driver="GPKG",
            geometry_type="Polygon",
            crs=crs_wkt,
            nan_as_null=True,
            layer_metadata={
                "source": source_name(dets),
                "coordinates": "scene CRS" if crs_wkt else PIXEL_COORDINATES,
            },
        )


def _gpkg_fiona(
    tmp: Path, polys: np.ndarray, attrs: dict[str, list[Any]], layer: str, crs_wkt: str | None
) -> None:
    import fiona
    import shapely

    names = list(attrs)
    schema = {"geometry": "Polygon", "properties": {k: _GPKG_TYPES[k] for k in names}}
    with fiona.open(str(tmp), "w", driver="GPKG", layer=layer, schema=schema, crs_wkt=crs_wkt) as dst:
        for i, poly in enumerate(polys):
            dst.write(
                {"geometry": shapely.geometry.mapping(poly), "properties": {k: attrs[k][i] for k in names}}
            )


# ----------------------------------------------------------------------------------------------------------
# CSV
# ----------------------------------------------------------------------------------------------------------

#: Columns of CSV outputs, in order.
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


def write_csv(dets: Detections, path: str | Path) -> Path:
    """One row per detection (:data:`CSV_COLUMNS`), coordinates in the scene CRS or in pixels.

    ``cx``/``cy`` is the footprint centre, ``wkt`` the footprint polygon, ``crs`` the scene CRS
    (``EPSG:n`` or WKT) or ``"pixels"`` for images without georeferencing; empty cells for unknown values.

    Raises:
        WriteError: the file cannot be written.
    """
    path = Path(path)
    pixels = dets.crs is None or dets.transform is None
    geographic = not pixels and bool(getattr(dets.crs, "is_geographic", False))
    nd = _decimals(geographic, pixels)
    pts = _ccw(footprints(dets))
    centre = pts.mean(axis=1) if len(pts) else np.zeros((0, 2))
    attrs = attribute_table(dets)
    crs_text = "pixels" if pixels else crs_name(dets.crs)
    _warn_pixels(dets, path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_COLUMNS)
        for i in range(len(dets)):
            ring = [*pts[i], pts[i][0]]
            wkt = "POLYGON ((" + ", ".join(f"{x:.{nd}f} {y:.{nd}f}" for x, y in ring) + "))"
            row = {
                **{k: attrs[k][i] for k in attrs},
                "cx": f"{centre[i, 0]:.{nd}f}",
                "cy": f"{centre[i, 1]:.{nd}f}",
                "crs": crs_text,
                "wkt": wkt,
            }
            w.writerow(["" if row[k] is None else row[k] for k in CSV_COLUMNS])
    return path


# ----------------------------------------------------------------------------------------------------------
# COCO results
# ----------------------------------------------------------------------------------------------------------


def category_id(name: str, class_names: Sequence[str] = TAXONOMY) -> int:
    """Stable COCO category id: position in :data:`TAXONOMY` + 1 (other names follow, in ``class_names`` order)."""
    if name in TAXONOMY:
        return TAXONOMY.index(name) + 1
    extra = [n for n in class_names if n not in TAXONOMY]
    if name not in extra:
        raise ValueError(f"unknown class {name!r}: not in {TAXONOMY} nor in {tuple(class_names)}")
    return len(TAXONOMY) + extra.index(name) + 1


def coco_categories(class_names: Sequence[str] = TAXONOMY) -> list[dict[str, Any]]:
    """The ``categories`` list matching :func:`category_id` (for a COCO ground-truth file)."""
    names = list(TAXONOMY) + [n for n in class_names if n not in TAXONOMY]
    return [{"id": category_id(n, class_names), "name": n} for n in names]


def to_coco(dets: Detections, *, image_id: int | str = 1) -> list[dict[str, Any]]:
    """COCO results entries ``{image_id, category_id, bbox, score}`` (+ ``segmentation`` for rotated boxes).

    ``bbox`` is ``[x, y, width, height]`` in scene pixels (the box enclosing a rotated footprint);
    ``segmentation`` is the rotated footprint as one flat polygon ``[[x1, y1, ..., x4, y4]]``.
    """
    box = dets.xyxy
    rings = corners(dets) if dets.is_rotated else None
    out = []
    for i in range(len(dets)):
        x1, y1, x2, y2 = (float(v) for v in box[i])
        entry: dict[str, Any] = {
            "image_id": image_id,
            "category_id": category_id(dets.class_names[dets.class_ids[i]], dets.class_names),
            "bbox": [round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)],
            "score": round(float(dets.scores[i]), 5),
        }
        if rings is not None:
            entry["segmentation"] = [np.round(rings[i], 2).reshape(-1).tolist()]
        out.append(entry)
    return out


def write_coco(dets: Detections, path: str | Path, *, image_id: int | str = 1) -> Path:
    """Write :func:`to_coco` (a JSON list, the format ``pycocotools``' ``loadRes`` reads) atomically.

    Raises:
        WriteError: the file cannot be written.
    """
    path = Path(path)
    entries = to_coco(dets, image_id=image_id)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(entries, fh, separators=(",", ":"))
        fh.write("\n")
    return path


# ----------------------------------------------------------------------------------------------------------
# quicklook
# ----------------------------------------------------------------------------------------------------------


def class_colour(name: str, class_names: Sequence[str] = TAXONOMY) -> tuple[int, int, int]:
    """Outline colour of a class in quicklooks."""
    if name in CLASS_COLOURS:
        return CLASS_COLOURS[name]
    extra = [n for n in class_names if n not in CLASS_COLOURS]
    i = extra.index(name) if name in extra else 0
    return _EXTRA_COLOURS[i % len(_EXTRA_COLOURS)]


def write_quicklook(
    dets: Detections,
    path: str | Path,
    *,
    source: str | Path | None = None,
    image: np.ndarray | None = None,
    bands: tuple[int, ...] | None = None,
    max_size: int = QUICKLOOK_MAX_SIZE,
    quality: int = 90,
) -> Path:
    """Draw the footprints over a reduced-resolution view of the scene and save it as PNG or JPEG.

    The scene is read once at reduced resolution (longest side at most ``max_size``) through
    :func:`detector.raster.open_scene`, with the same per-scene stretch the model saw. Outlines are coloured
    per class (:data:`CLASS_COLOURS`); a legend in the top-left corner gives the count per class. Nodata is
    black.

    Args:
        dets: detections in scene pixels.
        path: output file; ``.png`` or ``.jpg``/``.jpeg``.
        source: the raster to draw on (default ``dets.source``).
        image: an in-memory image (rows, cols, channels) instead of a file.
        bands: bands to read as RGB (as in ``open_scene``).
        max_size: longest side of the quicklook in pixels.
        quality: JPEG quality.

    Raises:
        WriteError: the file cannot be written or its extension is not PNG/JPEG.
        RasterError: the scene cannot be read.
    """
    from PIL import Image, ImageDraw, ImageFont
    from rasterio.windows import Window

    from detector.raster import Scene, open_scene

    path = Path(path)
    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}.get(path.suffix.lower())
    if fmt is None:
        raise WriteError(f"{path}: quicklook must be .png, .jpg or .jpeg, got {path.suffix!r}")
    if max_size < 16:
        raise ValueError(f"max_size must be at least 16 pixels, got {max_size!r}")
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
        scale = min(1.0, max_size / max(scene.width, scene.height))
        rows, cols = max(1, round(scene.height * scale)), max(1, round(scene.width * scale))
        rgb, _ = scene.read(Window(0, 0, scene.width, scene.height), out_shape=(rows, cols))
        sx, sy = cols / scene.width, rows / scene.height
    canvas = Image.fromarray(rgb, "RGB")
    draw = ImageDraw.Draw(canvas)
    rings = corners(dets) * np.array([sx, sy])
    width = 1 if max(rows, cols) < 768 else 2
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
    return path


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


def write(dets: Detections, path: str | Path, fmt: str, *, keep_crs: bool = False) -> Path:
    """Write ``dets`` to ``path`` in format ``fmt`` (a key of :data:`FORMATS`).

    Raises:
        ValueError: unknown format.
        WriteError: the file cannot be written.
    """
    if fmt == "geojson":
        return write_geojson(dets, path, keep_crs=keep_crs)
    if fmt == "gpkg":
        return write_gpkg(dets, path)
    if fmt == "csv":
        return write_csv(dets, path)
    if fmt == "coco":
        return write_coco(dets, path)
    raise ValueError(f"unknown output format {fmt!r}; expected one of {', '.join(FORMATS)}")
