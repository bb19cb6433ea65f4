"""``detector info``: a model's metadata or a raster's layout."""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import click

#: File endings ``info`` reads as models (anything else is opened as a raster).
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


def georeferencing(crs: Any, transform: Any, gcps: bool = False) -> str:
    """How a raster is georeferenced, in words: ``"CRS and geotransform"``, ``"has a geotransform but no CRS"``,
    ``"ground control points"`` or ``"none (image pixels)"``."""
    has_transform = transform is not None and not transform.is_identity
    if crs is not None and has_transform:
        return "CRS and geotransform"
    if has_transform:
        return "has a geotransform but no CRS"
    if gcps:
        return "ground control points (no geotransform)"
    if crs is not None:
        return "has a CRS but no geotransform"
    return "none (image pixels)"


def raster_info(path: str | Path) -> dict[str, Any]:
    """Size, bands, data type, georeferencing, CRS, GSD, nodata, block layout and overviews of a raster.

    That a PNG is not georeferenced is the ``georeferencing`` entry, not rasterio's warning.
    """
    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    from detector.raster import open_scene

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with open_scene(path) as scene:
            gsd, rgb_bands = scene.gsd, scene.bands
        ds = rasterio.open(path)
    with ds:
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
            "georeferencing": georeferencing(crs, t, bool(ds.gcps[0])),
            "size": f"{ds.width}x{ds.height} px (columns x rows)",
            "bands": ds.count,
            "dtype": ", ".join(dict.fromkeys(ds.dtypes)),
            "colorinterp": [ci.name for ci in ds.colorinterp],
            "rgb_bands": list(rgb_bands),
            "crs": "none" if crs is None else (f"EPSG:{crs.to_epsg()}" if crs.to_epsg() else crs.to_wkt()),
            "crs_name": "none" if crs is None else _crs_title(crs),
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


@click.command()
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of text.")
def info(path: str, as_json: bool) -> None:
    """Describe a model file (metadata) or a raster (size, bands, CRS, GSD, layout, overviews)."""
    data = model_info(path) if Path(path).suffix.lower() in MODEL_SUFFIXES else raster_info(path)
    if as_json:
        click.echo(json.dumps(data, indent=2, default=str))
    else:
        _print_info(data)
