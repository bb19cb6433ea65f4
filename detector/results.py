"""Read our own earlier outputs (GeoPackage or GeoJSON written by :mod:`detector.writers`) back into
:class:`~detector.detections.Detections`.

What comes back:

* ``class_names``/``class_ids``/``scores`` from the ``class`` and ``score`` attributes.
* ``xyxy``: the enclosing box in scene pixels (the ``px_xmin .. px_ymax`` attributes).
* ``crs``/``transform``: the scene CRS and the pixel -> CRS affine, *recovered* from the footprints: each
  footprint's centre is the affine image of its pixel box's centre, so three detections or more give the
  transform by least squares (exact for GeoPackage and ``--keep-crs`` GeoJSON; RFC 7946 lon/lat GeoJSON is
  first taken to the local UTM zone, where the affine holds to well under a pixel over a scene). With fewer
  detections a north-up transform comes from the boxes' extents. The scene CRS and transform recorded in the
  file's provenance (:func:`detector.writers.read_provenance`) win over all of this.
* ``xywhr`` for rotated footprints (when a ``heading_deg`` is recorded), from the footprints mapped back to
  pixels.
* ``gsd`` from the file (GeoJSON ``gsd_m``, provenance) or from ``length_m`` over the long side in pixels.
* ``meta``: ``model``, ``model_hash`` (sha256), ``conf``, ``width``/``height``, ``footprint`` (the whole
  scene as a shapely geometry in the CRS, when recorded: no nodata mask), ``provenance`` (everything the file
  recorded, :func:`detector.writers.read_provenance`) and ``results_file``.

Bad input raises :class:`~detector.errors.ChangeError` (not our output, no georeferencing, ...) or
:class:`~detector.errors.RasterError` (missing or unreadable file), naming the file.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np

from detector.detections import Detections
from detector.errors import ChangeError, RasterError

logger = logging.getLogger(__name__)

#: File endings read as earlier outputs rather than scenes.
RESULT_SUFFIXES = (".gpkg", ".geojson", ".json")
_REQUIRED = ("class", "score", "px_xmin", "px_ymin", "px_xmax", "px_ymax")


def is_results_file(path: str | Path) -> bool:
    """True for a path that names one of our outputs (``.gpkg``, ``.geojson``, ``.json``)."""
    return Path(str(path)).suffix.lower() in RESULT_SUFFIXES


def read_results(path: str | Path) -> Detections:
    """Read a GeoPackage (layer ``detections``) or GeoJSON file written by ``detector predict``.

    Raises:
        RasterError: the file is missing or cannot be read at all (corrupt).
        ChangeError: the file is not one of our outputs (attributes missing), or holds no georeferencing.
    """
    p = Path(str(path))
    if not p.is_file():
        raise RasterError(f"{p}: file not found")
    if p.suffix.lower() == ".gpkg":
        rows, crs, rings, info = _read_gpkg(p)
    elif p.suffix.lower() in (".geojson", ".json"):
        rows, crs, rings, info = _read_geojson(p)
    else:
        raise ChangeError(f"{p}: not an output of ours (expected .gpkg or .geojson)")
    missing = [k for k in _REQUIRED if k not in rows]
    if missing:
        raise ChangeError(f"{p}: not an output of detector predict (no {', '.join(missing)} attributes)")
    prov = _provenance(p)
    scene = _scene_entry(prov, rows, p)
    info.update({k: v for k, v in prov.items() if v is not None and k != "scenes"})
    n = len(rows["class"])
    present = list(dict.fromkeys(str(c) for c in rows["class"]))
    known = list(info.get("class_names") or _default_classes())
    names = tuple(known) + tuple(c for c in present if c not in known)
    class_ids = np.array([names.index(str(c)) for c in rows["class"]], np.int64)
    scores = np.asarray(rows["score"], np.float64)
    xyxy = np.stack([np.asarray(rows[k], np.float64) for k in _REQUIRED[2:]], axis=1).reshape(-1, 4)
    if n and not (np.isfinite(xyxy).all() and np.isfinite(scores).all()):
        raise ChangeError(
            f"{p}: some detections have no pixel box or score (not written by detector predict?)"
        )
    if crs is None:
        raise ChangeError(f"{p}: holds image pixels, no georeferencing")
    if scene and scene.get("crs") and scene.get("transform"):
        # the writers recorded the scene's own CRS and transform: exact, nothing to recover
        from affine import Affine
        from rasterio.crs import CRS

        work_crs = CRS.from_user_input(scene["crs"])
        transform = Affine(*[float(v) for v in scene["transform"]][:6])
        pts = _to(rings, crs, work_crs, p)
    else:
        work_crs, pts = _metric(crs, rings, p)
        transform = _fit_transform(xyxy, pts, p)
    if scene:
        info.setdefault("gsd", scene.get("gsd_m"))
        info["width"], info["height"] = scene.get("width"), scene.get("height")
        info["footprint_wkt"] = scene.get("footprint_wkt")
        info["footprint_crs"] = scene.get("crs")
        if scene.get("source"):
            info["source"] = scene["source"]
    headings = np.asarray([np.nan if v is None else float(v) for v in rows.get("heading_deg", [None] * n)])
    xywhr = None
    if n and np.isfinite(headings).any():
        xywhr = _xywhr(pts, transform)
    gsd = info.get("gsd")
    if gsd is None and n:
        length = np.asarray([np.nan if v is None else float(v) for v in rows.get("length_m", [None] * n)])
        long_px = np.maximum(xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1])
        if xywhr is not None:
            long_px = np.maximum(xywhr[:, 2], xywhr[:, 3])
        ok = np.isfinite(length) & (long_px > 0)
        if ok.any():
            gsd = float(np.median(length[ok] / long_px[ok]))
    meta: dict[str, Any] = {
        "model": str(info.get("model") or ""),
        "model_hash": str(info.get("model_sha256") or ""),
        "conf": info.get("conf"),
        "results_file": str(p),
        "provenance": prov,
    }
    if info.get("width") and info.get("height"):
        meta["width"], meta["height"] = int(info["width"]), int(info["height"])
    area = _footprint(info, work_crs, p)
    if area is not None:
        meta["footprint"] = area
    source = info.get("source") or (str(rows["source"][0]) if rows.get("source") else None)
    return Detections(
        xyxy=xyxy,
        scores=scores.astype(np.float32),
        class_ids=class_ids,
        class_names=names,
        xywhr=xywhr,
        crs=work_crs,
        transform=transform,
        gsd=None if gsd is None else float(gsd),
        source=str(source) if source else str(p),
        meta=meta,
    )


def _default_classes() -> tuple[str, ...]:
    from detector.taxonomy import default_classes

    try:
        return tuple(default_classes())
    except Exception:  # noqa: BLE001 - a broken table must not stop reading results; names come from the file
        return ()


# ----------------------------------------------------------------------------------------------------------
# the two formats
# ----------------------------------------------------------------------------------------------------------


def _read_gpkg(p: Path) -> tuple[dict[str, list[Any]], Any, np.ndarray, dict[str, Any]]:
    import shapely
    from pyogrio import list_layers, read_info
    from pyogrio.raw import read
    from rasterio.crs import CRS

    try:
        layers = [str(name) for name, _ in list_layers(str(p))]
        layer = "detections" if "detections" in layers else (layers[0] if layers else None)
        if layer is None:
            raise ChangeError(f"{p}: holds no layer")
        meta, _, geometry, field_data = read(str(p), layer=layer)
        info = read_info(str(p), layer=layer)
    except ChangeError:
        raise
    except Exception as e:  # noqa: BLE001 - GDAL errors come as several types
        raise RasterError(f"{p}: cannot read the GeoPackage, the file may be corrupt ({e})") from e
    rows = {str(k): list(v) for k, v in zip(meta["fields"], field_data, strict=True)}
    rows = {k: [None if (isinstance(x, float) and math.isnan(x)) else x for x in v] for k, v in rows.items()}
    crs = CRS.from_user_input(meta["crs"]) if meta.get("crs") else None
    geoms = shapely.from_wkb(geometry) if geometry is not None and len(geometry) else np.empty(0, object)
    rings = _rings(geoms, p)
    extra = dict(info.get("layer_metadata") or {})
    out: dict[str, Any] = {}
    if extra.get("source"):
        out["source"] = extra["source"]
    return rows, crs, rings, out


def _read_geojson(p: Path) -> tuple[dict[str, list[Any]], Any, np.ndarray, dict[str, Any]]:
    import shapely
    from rasterio.crs import CRS

    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise RasterError(f"{p}: cannot read the GeoJSON, the file may be corrupt ({e})") from e
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        raise ChangeError(f"{p}: not a GeoJSON FeatureCollection")
    features = doc.get("features") or []
    keys: list[str] = []
    for f in features:
        keys += [k for k in (f.get("properties") or {}) if k not in keys]
    rows = {k: [(f.get("properties") or {}).get(k) for f in features] for k in keys}
    if not features:
        rows = {k: [] for k in _REQUIRED}
    coords = str(doc.get("coordinates", ""))
    if coords.startswith("image pixels"):
        crs = None
    elif isinstance(doc.get("crs"), dict):
        try:
            crs = CRS.from_user_input(doc["crs"]["properties"]["name"])
        except Exception as e:  # noqa: BLE001
            raise ChangeError(f"{p}: its 'crs' member is not a CRS ({e})") from e
    else:
        crs = CRS.from_epsg(4326)
    try:
        geoms = np.array([shapely.geometry.shape(f["geometry"]) for f in features], dtype=object)
    except Exception as e:  # noqa: BLE001
        raise ChangeError(f"{p}: a feature has no valid geometry ({e})") from e
    out: dict[str, Any] = {}
    if doc.get("gsd_m") is not None:
        out["gsd"] = float(doc["gsd_m"])
    if doc.get("source"):
        out["source"] = doc["source"]
    return rows, crs, _rings(geoms, p), out


def _rings(geoms: np.ndarray, p: Path) -> np.ndarray:
    """4-corner exterior rings ``(N, 4, 2)`` of the footprint polygons."""
    import shapely

    out = np.zeros((len(geoms), 4, 2))
    for k, g in enumerate(geoms):
        if g is None or g.geom_type != "Polygon":
            raise ChangeError(f"{p}: feature {k} is not a polygon")
        xy = np.asarray(shapely.get_coordinates(g.exterior))
        if len(xy) != 5:
            raise ChangeError(f"{p}: feature {k} is not a 4-corner footprint")
        out[k] = xy[:4]
    return out


# ----------------------------------------------------------------------------------------------------------
# georeferencing recovered from the footprints
# ----------------------------------------------------------------------------------------------------------


def _metric(crs: Any, rings: np.ndarray, p: Path) -> tuple[Any, np.ndarray]:
    """Geographic footprints go to their UTM zone (where the pixel -> CRS map is affine); others stay."""
    from rasterio.crs import CRS
    from rasterio.warp import transform as warp_transform

    if not crs.is_geographic or len(rings) == 0:
        return crs, rings
    lon, lat = rings[..., 0].mean(), rings[..., 1].mean()
    zone = int((lon + 180) // 6) % 60 + 1
    utm = CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)
    flat = rings.reshape(-1, 2)
    xs, ys = warp_transform(crs, utm, flat[:, 0].tolist(), flat[:, 1].tolist())
    return utm, np.stack([xs, ys], -1).reshape(rings.shape)


def _fit_transform(xyxy: np.ndarray, rings: np.ndarray, p: Path) -> Any:
    """The pixel -> CRS affine from box centres (pixels) and footprint centres (CRS)."""
    from affine import Affine

    n = len(xyxy)
    if n == 0:
        return None
    px = np.stack([(xyxy[:, 0] + xyxy[:, 2]) / 2, (xyxy[:, 1] + xyxy[:, 3]) / 2], 1)
    world = rings.mean(axis=1)
    design = np.column_stack([px, np.ones(n)])
    if n >= 3 and np.linalg.matrix_rank(design - design.mean(axis=0) * [1, 1, 0]) >= 3:
        (a, b, c), *_ = np.linalg.lstsq(design, world[:, 0], rcond=None)
        (d, e, f), *_ = np.linalg.lstsq(design, world[:, 1], rcond=None)
        return Affine(a, b, c, d, e, f)
    # north-up from the extents of the boxes
    lo, hi = rings.min(axis=1), rings.max(axis=1)
    wpx, hpx = xyxy[:, 2] - xyxy[:, 0], xyxy[:, 3] - xyxy[:, 1]
    if not ((wpx > 0) & (hpx > 0)).all():
        raise ChangeError(f"{p}: cannot recover the georeferencing (degenerate boxes)")
    a = float(np.mean((hi[:, 0] - lo[:, 0]) / wpx))
    e = -float(np.mean((hi[:, 1] - lo[:, 1]) / hpx))
    c = float(np.mean(lo[:, 0] - a * xyxy[:, 0]))
    f = float(np.mean(hi[:, 1] - e * xyxy[:, 1]))
    return Affine(a, 0.0, c, 0.0, e, f)


def _xywhr(rings: np.ndarray, transform: Any) -> np.ndarray:
    """Rotated boxes in pixels from CRS footprints (through the inverse affine)."""
    inv = ~transform
    a, b, c, d, e, f = (float(v) for v in tuple(inv)[:6])
    x, y = rings[..., 0], rings[..., 1]
    px = np.stack([a * x + b * y + c, d * x + e * y + f], axis=-1)
    ctr = px.mean(axis=1)
    s1 = px[:, 1] - px[:, 0]
    s2 = px[:, 2] - px[:, 1]
    w, h = np.linalg.norm(s1, axis=1), np.linalg.norm(s2, axis=1)
    r = np.arctan2(s1[:, 1], s1[:, 0])
    return np.column_stack([ctr, w, h, r])


# ----------------------------------------------------------------------------------------------------------
# provenance (written by detector.writers where it records it)
# ----------------------------------------------------------------------------------------------------------


def _provenance(p: Path) -> dict[str, Any]:
    """What the writers recorded about the run (:func:`detector.writers.read_provenance`), or ``{}``."""
    try:
        from detector.writers import read_provenance
    except ImportError:  # writers of an older version record none
        return {}
    try:
        return dict(read_provenance(p))
    except OSError as e:  # no provenance (an older output): the detections are still usable
        logger.info("%s: %s", p, e)
        return {}


def _scene_entry(prov: dict[str, Any], rows: dict[str, list[Any]], p: Path) -> dict[str, Any]:
    """The one scene a per-scene output records (``{}`` when none is recorded)."""
    scenes = [s for s in prov.get("scenes") or [] if isinstance(s, dict)]
    if len(scenes) > 1:
        raise ChangeError(
            f"{p}: holds {len(scenes)} scenes; compare the outputs of one scene each (detector predict writes "
            f"one file per scene)"
        )
    return scenes[0] if scenes else {}


def _to(rings: np.ndarray, src: Any, dst: Any, p: Path) -> np.ndarray:
    from rasterio.warp import transform as warp_transform

    if src == dst or len(rings) == 0:
        return rings
    flat = rings.reshape(-1, 2)
    xs, ys = warp_transform(src, dst, flat[:, 0].tolist(), flat[:, 1].tolist())
    out = np.stack([xs, ys], -1).reshape(rings.shape)
    if not np.isfinite(out).all():
        raise ChangeError(f"{p}: its footprints cannot be transformed to the recorded scene CRS")
    return out


def _footprint(info: dict[str, Any], work: Any, p: Path) -> Any:
    """The recorded scene footprint (WKT in the scene CRS) as a shapely geometry in ``work``."""
    wkt = info.get("footprint_wkt")
    if not wkt:
        return None
    import shapely
    from rasterio.crs import CRS
    from rasterio.warp import transform_geom

    try:
        geom = shapely.from_wkt(str(wkt))
    except Exception as e:  # noqa: BLE001 - shapely raises GEOSException
        raise ChangeError(f"{p}: its recorded scene footprint is not WKT ({e})") from e
    src = info.get("footprint_crs")
    if src:
        src = CRS.from_user_input(src)
        if src != work:
            geom = shapely.geometry.shape(transform_geom(src, work, shapely.geometry.mapping(geom)))
    return shapely.make_valid(geom)
