"""Writers: GeoJSON (RFC 7946 lon/lat), GeoPackage, CSV, COCO, quicklook, atomic writes.

Known points are computed independently of rasterio (spherical Web Mercator formulas), so a wrong axis order or
a wrong affine shows up as a wrong number, not as agreement with the same library call.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.crs import CRS

from detector import writers
from detector.backends.base import TAXONOMY
from detector.detections import Detections
from detector.geometry import corners

pyogrio = pytest.importorskip("pyogrio")
from pyogrio.raw import read as ogr_read  # noqa: E402

R = 6378137.0  # Web Mercator sphere radius
MERCATOR = CRS.from_epsg(3857)


def mercator(lon: float, lat: float) -> tuple[float, float]:
    """EPSG:3857 metres of a lon/lat point, by the textbook formula."""
    return R * math.radians(lon), R * math.log(math.tan(math.pi / 4 + math.radians(lat) / 2))


def north_up(lon: float, lat: float, res: float = 0.5) -> Affine:
    """A north-up EPSG:3857 transform whose pixel (0, 0) corner sits at ``(lon, lat)``."""
    x, y = mercator(lon, lat)
    return Affine(res, 0.0, x, 0.0, -res, y)


def rotated(lon: float, lat: float, phi_deg: float, res: float = 0.5) -> Affine:
    """A non-north-up transform: pixel +x runs at ``phi`` degrees counter-clockwise from east."""
    x, y = mercator(lon, lat)
    p = math.radians(phi_deg)
    # column axis -> (cos p, sin p), row axis -> (sin p, -cos p): north-up when p == 0
    return Affine(res * math.cos(p), res * math.sin(p), x, res * math.sin(p), -res * math.cos(p), y)


def dets_of(
    xywhr: list[list[float]] | None = None,
    xyxy: list[list[float]] | None = None,
    classes: list[int] | None = None,
    crs: CRS | None = MERCATOR,
    transform: Affine | None = None,
    gsd: float | None = 0.5,
    source: str | None = "/data/scene.tif",
) -> Detections:
    if xywhr is not None:
        rb = np.asarray(xywhr, float)
        xyxy_arr = np.concatenate([corners_of(rb).min(1), corners_of(rb).max(1)], 1)
    else:
        rb = None
        xyxy_arr = np.asarray(xyxy, float)
    n = len(xyxy_arr)
    return Detections(
        xyxy=xyxy_arr,
        scores=np.linspace(0.9, 0.5, n),
        class_ids=classes if classes is not None else [0] * n,
        class_names=TAXONOMY,
        xywhr=rb,
        crs=crs,
        transform=transform if transform is not None or crs is None else north_up(10.0, 50.0),
        gsd=gsd,
        source=source,
    )


def corners_of(xywhr: np.ndarray) -> np.ndarray:
    from detector.geometry import xywhr_to_corners

    return xywhr_to_corners(xywhr)


def lonlat_of_point(geojson: dict, feature: int = 0) -> np.ndarray:
    return np.asarray(geojson["features"][feature]["geometry"]["coordinates"][0], float)


# ------------------------------------------------------------------------------------------------ GeoJSON


def test_geojson_is_lonlat_at_a_known_point() -> None:
    # pixel (0, 0) corner is at lon 10, lat 50; a 20x10 px box with its top-left corner there
    d = dets_of(xyxy=[[0, 0, 20, 10]], transform=north_up(10.0, 50.0))
    gj = writers.to_geojson(d)
    ring = lonlat_of_point(gj)
    assert ring.shape == (5, 2) and np.allclose(ring[0], ring[-1])
    assert "crs" not in gj
    # the corner nearest lon 10, lat 50 is exactly there (lon first)
    i = np.argmin(np.hypot(ring[:-1, 0] - 10.0, ring[:-1, 1] - 50.0))
    assert ring[i] == pytest.approx([10.0, 50.0], abs=1e-7)
    # the box spans 10 m east and 5 m south of it
    xs, ys = mercator(10.0, 50.0)
    lon_e = math.degrees((xs + 10.0) / R)
    lat_s = math.degrees(2 * math.atan(math.exp((ys - 5.0) / R)) - math.pi / 2)
    assert ring[:, 0].max() == pytest.approx(lon_e, abs=1e-8)
    assert ring[:, 1].min() == pytest.approx(lat_s, abs=1e-8)


def test_geojson_rings_are_counter_clockwise_and_closed() -> None:
    d = dets_of(xywhr=[[50, 50, 30, 10, 0.3], [100, 80, 12, 40, -1.0]])
    for f in writers.to_geojson(d)["features"]:
        ring = np.asarray(f["geometry"]["coordinates"][0])
        assert ring[0].tolist() == ring[-1].tolist()
        x, y = ring[:-1, 0], ring[:-1, 1]
        assert (x * np.roll(y, -1) - np.roll(x, -1) * y).sum() > 0  # CCW (RFC 7946 right-hand rule)


def test_geojson_non_north_up_transform() -> None:
    phi = 30.0
    t = rotated(10.0, 50.0, phi)
    d = dets_of(xywhr=[[40.0, 20.0, 30.0, 8.0, 0.0]], transform=t)
    ring = lonlat_of_point(writers.to_geojson(d))[:-1]
    # every corner is the affine of the pixel corner, then the spherical Mercator inverse
    px = corners(d)[0]
    want = []
    for cx, cy in px:
        x, y = t @ (cx, cy)
        want.append([math.degrees(x / R), math.degrees(2 * math.atan(math.exp(y / R)) - math.pi / 2)])
    for p in want:
        assert np.min(np.hypot(*(ring - p).T)) < 1e-8
    # the long side runs along pixel +x, which points phi degrees north of east: azimuth 90 - phi
    props = writers.to_geojson(d)["features"][0]["properties"]
    assert props["heading_deg"] == pytest.approx(90.0 - phi, abs=0.1)


def test_geojson_properties() -> None:
    d = dets_of(
        xywhr=[[50, 50, 30, 10, 0.0], [90, 90, 10, 40, 0.0], [20, 20, 10, 10.2, 0.5]], classes=[0, 3, 2]
    )
    feats = writers.to_geojson(d)["features"]
    p0, p1, p2 = (f["properties"] for f in feats)
    assert p0["class"] == "aircraft" and p1["class"] == "large-vehicle" and p2["class"] == "small-vehicle"
    assert p0["score"] == pytest.approx(0.9, abs=1e-4)
    assert (p0["length_m"], p0["width_m"]) == (15.0, 5.0)  # 30 x 10 px at 0.5 m
    assert (p1["length_m"], p1["width_m"]) == (20.0, 5.0)
    assert p0["heading_deg"] == pytest.approx(90.0)  # long side along +x = east on a north-up raster
    assert p1["heading_deg"] == pytest.approx(0.0)  # long side along y = north-south
    assert p2["heading_deg"] is None  # nearly square: no meaningful long side
    assert p0["source"] == "scene.tif"
    assert [p0[k] for k in ("px_xmin", "px_ymin", "px_xmax", "px_ymax")] == [35.0, 45.0, 65.0, 55.0]


def test_heading_is_folded_into_0_180() -> None:
    # r = 3 pi / 4: w side points down-right on screen on a north-up raster: south-east, i.e. 135 (== 315)
    d = dets_of(xywhr=[[50, 50, 40, 10, 3 * math.pi / 4], [50, 50, 40, 10, -math.pi / 4]])
    h = writers.headings(d)
    assert h[0] == pytest.approx(45.0) and h[1] == pytest.approx(45.0)


def test_axis_aligned_boxes_have_no_heading_and_no_lengths_without_gsd() -> None:
    d = dets_of(xyxy=[[0, 0, 30, 10]], gsd=None)
    p = writers.to_geojson(d)["features"][0]["properties"]
    assert p["heading_deg"] is None and p["length_m"] is None and p["width_m"] is None
    d = dets_of(xyxy=[[0, 0, 30, 10]], gsd=2.0)
    p = writers.to_geojson(d)["features"][0]["properties"]
    assert (p["length_m"], p["width_m"], p["heading_deg"]) == (60.0, 20.0, None)


def test_geojson_read_back_with_its_crs(tmp_path: Path) -> None:
    d = dets_of(xyxy=[[0, 0, 20, 10], [30, 30, 40, 50]], classes=[1, 2])
    path = writers.write_geojson(d, tmp_path / "out.geojson")
    meta, _, geom, fields = ogr_read(path)
    assert CRS.from_user_input(meta["crs"]).to_epsg() == 4326
    assert list(fields[list(meta["fields"]).index("class")]) == ["helicopter", "small-vehicle"]
    x0, y0 = shapely.from_wkb(geom[0]).exterior.coords[0]
    assert 9.99 < x0 < 10.01 and 49.99 < y0 < 50.01  # GDAL reads lon, lat


def test_geojson_keep_crs(tmp_path: Path) -> None:
    t = north_up(10.0, 50.0)
    d = dets_of(xyxy=[[0, 0, 20, 10]], crs=CRS.from_epsg(3857), transform=t)
    path = writers.write_geojson(d, tmp_path / "out.geojson", keep_crs=True)
    gj = json.loads(path.read_text())
    assert gj["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::3857"
    assert "not RFC 7946" in gj["coordinates"]
    meta, _, geom, _ = ogr_read(path)
    assert CRS.from_user_input(meta["crs"]).to_epsg() == 3857
    assert shapely.from_wkb(geom[0]).bounds == pytest.approx((t.c, t.f - 5.0, t.c + 10.0, t.f), abs=1e-3)


def test_geojson_without_georeferencing_is_in_pixels(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    d = dets_of(xywhr=[[50, 40, 30, 10, 0.0]], crs=None, transform=None, gsd=None, source="photo.png")
    with caplog.at_level(logging.WARNING, logger="detector.writers"):
        path = writers.write_geojson(d, tmp_path / "photo.geojson")
    gj = json.loads(path.read_text())
    assert "image pixels (x right, y down" in gj["coordinates"]
    assert "crs" not in gj
    ring = np.asarray(gj["features"][0]["geometry"]["coordinates"][0])
    assert ring[:, 0].min() == pytest.approx(35) and ring[:, 1].max() == pytest.approx(45)
    assert gj["features"][0]["properties"]["heading_deg"] == pytest.approx(90.0)  # from image up
    assert any("image pixels" in r.getMessage() and "photo.png" in r.getMessage() for r in caplog.records)


def test_geojson_from_a_real_geotiff_roundtrip(tmp_path: Path) -> None:
    """Detections carrying a GeoTIFF's own CRS/transform: the written corner is the GeoTIFF's corner."""
    tif = tmp_path / "utm.tif"
    # UTM 33N: easting 500000 is the central meridian (lon 15 exactly), northing 0 the equator
    t = Affine(2.0, 0.0, 500000.0, 0.0, -2.0, 0.0)
    with rasterio.open(
        tif, "w", driver="GTiff", width=8, height=8, count=1, dtype="uint8", crs="EPSG:32633", transform=t
    ) as dst:
        dst.write(np.zeros((1, 8, 8), np.uint8))
    with rasterio.open(tif) as ds:
        d = dets_of(xyxy=[[0, 0, 4, 4]], crs=ds.crs, transform=ds.transform)
    ring = lonlat_of_point(writers.to_geojson(d))
    assert ring[:, 0].min() == pytest.approx(15.0, abs=1e-9)  # west edge on the central meridian
    assert ring[:, 1].max() == pytest.approx(0.0, abs=1e-9)  # north edge on the equator
    assert ring[:, 1].min() < 0 and ring[:, 0].max() > 15.0


def test_empty_detections_give_valid_empty_files(tmp_path: Path) -> None:
    d = Detections.empty(TAXONOMY, rotated=True, crs=CRS.from_epsg(3857), transform=north_up(1, 1), gsd=1.0)
    gj = json.loads(writers.write_geojson(d, tmp_path / "e.geojson").read_text())
    assert gj["features"] == [] and gj["count"] == 0
    info = pyogrio.read_info(writers.write_gpkg(d, tmp_path / "e.gpkg"))
    assert info["features"] == 0 and CRS.from_user_input(info["crs"]).to_epsg() == 3857
    rows = list(csv.reader(writers.write_csv(d, tmp_path / "e.csv").open()))
    assert rows == [list(writers.CSV_COLUMNS)]
    assert json.loads(writers.write_coco(d, tmp_path / "e.json").read_text()) == []


# ------------------------------------------------------------------------------------------------ GeoPackage


def test_gpkg_read_back(tmp_path: Path) -> None:
    t = north_up(10.0, 50.0)
    d = dets_of(xywhr=[[50, 50, 30, 10, 0.0], [90, 90, 10, 40, 0.2]], classes=[0, 3], transform=t)
    path = writers.write_gpkg(d, tmp_path / "out.gpkg")
    info = pyogrio.read_info(path)
    assert info["layer_name"] == writers.GPKG_LAYER
    assert info["geometry_type"] == "Polygon" and info["features"] == 2
    assert CRS.from_user_input(info["crs"]).to_epsg() == 3857
    meta, _, geom, fields = ogr_read(path, layer="detections")
    names = list(meta["fields"])
    assert {"class", "score", "length_m", "width_m", "heading_deg", "source"} <= set(names)
    assert list(fields[names.index("class")]) == ["aircraft", "large-vehicle"]
    poly = shapely.from_wkb(geom[0])
    # 30 x 10 px box centred on pixel (50, 50): 15 m x 5 m around the mapped centre
    cx, cy = t @ (50, 50)
    assert poly.centroid.x == pytest.approx(cx) and poly.centroid.y == pytest.approx(cy)
    assert poly.area == pytest.approx(15.0 * 5.0)


def test_gpkg_without_georeferencing(tmp_path: Path) -> None:
    d = dets_of(xyxy=[[0, 0, 20, 10]], crs=None, transform=None)
    info = pyogrio.read_info(writers.write_gpkg(d, tmp_path / "p.gpkg"))
    assert info["crs"] is None and info["features"] == 1


def test_gpkg_without_pyogrio_or_fiona(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import builtins

    real_import = builtins.__import__

    def fake_import(name: str, *args: object, **kwargs: object) -> object:
        if name.split(".")[0] in ("pyogrio", "fiona"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(writers.WriteError, match="pip install pyogrio"):
        writers.write_gpkg(dets_of(xyxy=[[0, 0, 1, 1]]), tmp_path / "x.gpkg")
    assert not (tmp_path / "x.gpkg").exists()


# ------------------------------------------------------------------------------------------------ CSV, COCO


def test_csv_schema(tmp_path: Path) -> None:
    t = north_up(10.0, 50.0)
    d = dets_of(xywhr=[[50, 50, 30, 10, 0.0], [90, 90, 10, 40, 0.2]], classes=[0, 3], transform=t)
    with writers.write_csv(d, tmp_path / "out.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == list(writers.CSV_COLUMNS)
    assert len(rows) == 2
    r = rows[0]
    assert r["source"] == "scene.tif" and r["class"] == "aircraft" and r["crs"] == "EPSG:3857"
    assert float(r["score"]) == pytest.approx(0.9, abs=1e-4)
    cx, cy = t @ (50, 50)
    assert float(r["cx"]) == pytest.approx(cx, abs=1e-3) and float(r["cy"]) == pytest.approx(cy, abs=1e-3)
    poly = shapely.from_wkt(r["wkt"])
    assert poly.is_valid and poly.area == pytest.approx(75.0, rel=1e-4)
    assert (float(r["length_m"]), float(r["width_m"]), float(r["heading_deg"])) == (15.0, 5.0, 90.0)


def test_csv_empty_cells_for_unknowns_and_pixels(tmp_path: Path) -> None:
    d = dets_of(xyxy=[[0, 0, 20, 10]], crs=None, transform=None, gsd=None)
    with writers.write_csv(d, tmp_path / "p.csv").open(newline="") as fh:
        r = next(csv.DictReader(fh))
    assert r["crs"] == "pixels" and r["length_m"] == "" and r["heading_deg"] == ""
    assert (float(r["cx"]), float(r["cy"])) == (10.0, 5.0)


def test_coco_schema(tmp_path: Path) -> None:
    d = dets_of(xywhr=[[50, 50, 30, 10, 0.0], [90, 90, 10, 40, 0.2]], classes=[1, 3])
    entries = json.loads(writers.write_coco(d, tmp_path / "r.json", image_id=7).read_text())
    assert isinstance(entries, list) and len(entries) == 2
    e = entries[0]
    assert set(e) == {"image_id", "category_id", "bbox", "score", "segmentation"}
    assert e["image_id"] == 7
    assert e["category_id"] == TAXONOMY.index("helicopter") + 1 and entries[1]["category_id"] == 4
    assert e["bbox"] == [35.0, 45.0, 30.0, 10.0]  # x, y, w, h in pixels
    seg = np.asarray(e["segmentation"][0]).reshape(4, 2)
    assert seg.min(0).tolist() == [35.0, 45.0] and seg.max(0).tolist() == [65.0, 55.0]
    # axis-aligned detections carry no segmentation
    aa = writers.to_coco(dets_of(xyxy=[[1, 2, 4, 8]]))
    assert aa == [
        {"image_id": 1, "category_id": 1, "bbox": [1.0, 2.0, 3.0, 6.0], "score": pytest.approx(0.9)}
    ]
    assert writers.coco_categories() == [{"id": i + 1, "name": n} for i, n in enumerate(TAXONOMY)]


# ------------------------------------------------------------------------------------------------ atomic writes


def test_failed_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.geojson"
    target.write_text("previous")
    d = dets_of(xyxy=[[0, 0, 20, 10]])

    def broken_dump(obj: object, fh: object, **kw: object) -> None:
        fh.write('{"type": "FeatureColl')  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writers.json, "dump", broken_dump)
    with pytest.raises(writers.WriteError, match=r"out\.geojson: cannot write \(no space left on device\)"):
        writers.write_geojson(d, target)
    assert target.read_text() == "previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.geojson"]


def test_failed_gpkg_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyogrio.raw

    def broken(path: str, **kw: object) -> None:
        Path(path).write_bytes(b"SQLite format 3\x00 half")
        raise RuntimeError("disk I/O error")

    monkeypatch.setattr(pyogrio.raw, "write", broken)
    with pytest.raises(writers.WriteError, match=r"x\.gpkg: cannot write \(disk I/O error\)"):
        writers.write_gpkg(dets_of(xyxy=[[0, 0, 1, 1]]), tmp_path / "x.gpkg")
    assert list(tmp_path.iterdir()) == []


def test_missing_parent_is_created_and_impossible_parent_is_named(tmp_path: Path) -> None:
    d = dets_of(xyxy=[[0, 0, 20, 10]])
    assert writers.write_csv(d, tmp_path / "a" / "b" / "out.csv").is_file()
    blocker = tmp_path / "file"
    blocker.write_text("x")
    for fmt, ext in writers.FORMATS.items():
        with pytest.raises(writers.WriteError, match=rf"file/sub/out{ext.replace('.', r'.')}: cannot create"):
            writers.write(d, blocker / "sub" / f"out{ext}", fmt)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
def test_read_only_folder(tmp_path: Path) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(writers.WriteError, match="ro/out.geojson: cannot write"):
            writers.write_geojson(dets_of(xyxy=[[0, 0, 1, 1]]), ro / "out.geojson")
    finally:
        ro.chmod(0o755)


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown output format 'shp'"):
        writers.write(dets_of(xyxy=[[0, 0, 1, 1]]), "x.shp", "shp")


# ------------------------------------------------------------------------------------------------ quicklook


def _scene(tmp_path: Path, width: int = 400, height: int = 200) -> Path:
    path = tmp_path / "scene.tif"
    data = np.full((3, height, width), 60, np.uint8)
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=width,
        height=height,
        count=3,
        dtype="uint8",
        crs="EPSG:3857",
        transform=north_up(10, 50),
    ) as dst:
        dst.write(data)
    return path


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_quicklook_draws_class_colours(tmp_path: Path, suffix: str) -> None:
    from PIL import Image

    scene = _scene(tmp_path)
    d = dets_of(xyxy=[[200, 100, 300, 160], [40, 120, 100, 180]], classes=[0, 2], source=str(scene))
    path = writers.write_quicklook(d, tmp_path / f"ql{suffix}", max_size=200)
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    assert img.shape == (100, 200, 3)  # 400 x 200 scene, longest side 200
    # the aircraft box's left edge is at x = 100 (scene 200 / 2), rows 50..80: drawn in the aircraft colour
    edge = img[55:75, 100]
    if suffix == ".png":
        assert (edge == writers.CLASS_COLOURS["aircraft"]).all()
    else:  # JPEG blurs a 1 px line into the gray: still clearly red
        assert (edge[:, 0] - edge[:, 1:].max(axis=1) > 50).all()
    # the small vehicle's top edge (scene y 120 -> 60) is cyan
    assert (img[60, 25:45, 2] - img[60, 25:45, 0] > 50).all()
    # the background away from boxes and legend keeps the scene's gray
    assert np.abs(img[95, 190] - 60).max() <= (0 if suffix == ".png" else 8)


def test_quicklook_errors(tmp_path: Path) -> None:
    d = dets_of(xyxy=[[0, 0, 1, 1]], source=str(_scene(tmp_path)))
    with pytest.raises(writers.WriteError, match=r"ql\.tif: quicklook must be"):
        writers.write_quicklook(d, tmp_path / "ql.tif")
    with pytest.raises(ValueError, match="needs the scene"):
        writers.write_quicklook(dets_of(xyxy=[[0, 0, 1, 1]], source=None), tmp_path / "ql.png")
    img = np.zeros((30, 40, 3), np.uint8)
    p = writers.write_quicklook(dets_of(xyxy=[[0, 0, 10, 10]], source=None), tmp_path / "a.png", image=img)
    assert p.is_file()
