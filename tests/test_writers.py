"""Writers: GeoJSON (RFC 7946 lon/lat), GeoPackage, CSV, COCO, quicklook, atomic writes.

Known points are computed independently of rasterio (spherical Web Mercator formulas), so a wrong axis order or
a wrong affine shows up as a wrong number, not as agreement with the same library call.
"""

from __future__ import annotations

import builtins
import csv
import io
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
from detector.detections import Detections
from detector.geometry import corners
from detector.taxonomy import default_classes, default_taxonomy

TAXONOMY = default_classes()

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


def table_lines(path: Path) -> list[str]:
    """The lines of a CSV output after its ``# key: value`` provenance header."""
    with path.open(encoding="utf-8", newline="") as fh:
        return [line for line in fh if not line.startswith("#")]


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
    assert p0["source"] == "/data/scene.tif"  # the scene path as the caller gave it
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
    assert gj["crs"]["properties"]["name"] == writers.PIXEL_CRS_WKT  # never read as EPSG:4326, see below
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
    rows = list(csv.reader(table_lines(writers.write_csv(d, tmp_path / "e.csv"))))
    assert rows == [list(writers.CSV_COLUMNS)]
    coco = json.loads(writers.write_coco(d, tmp_path / "e.json").read_text())
    assert coco["annotations"] == [] and len(coco["images"]) == 1


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
    rows = list(csv.DictReader(table_lines(writers.write_csv(d, tmp_path / "out.csv"))))
    assert list(rows[0]) == list(writers.CSV_COLUMNS)
    assert len(rows) == 2
    r = rows[0]
    assert r["source"] == "/data/scene.tif" and r["class"] == "aircraft" and r["crs"] == "EPSG:3857"
    assert float(r["score"]) == pytest.approx(0.9, abs=1e-4)
    cx, cy = t @ (50, 50)
    assert float(r["cx"]) == pytest.approx(cx, abs=1e-3) and float(r["cy"]) == pytest.approx(cy, abs=1e-3)
    poly = shapely.from_wkt(r["wkt"])
    assert poly.is_valid and poly.area == pytest.approx(75.0, rel=1e-4)
    assert (float(r["length_m"]), float(r["width_m"]), float(r["heading_deg"])) == (15.0, 5.0, 90.0)


def test_csv_empty_cells_for_unknowns_and_pixels(tmp_path: Path) -> None:
    d = dets_of(xyxy=[[0, 0, 20, 10]], crs=None, transform=None, gsd=None)
    r = next(csv.DictReader(table_lines(writers.write_csv(d, tmp_path / "p.csv"))))
    assert r["crs"] == "pixels" and r["length_m"] == "" and r["heading_deg"] == ""
    assert (float(r["cx"]), float(r["cy"])) == (10.0, 5.0)


def test_coco_schema(tmp_path: Path) -> None:
    d = dets_of(xywhr=[[50, 50, 30, 10, 0.0], [90, 90, 10, 40, 0.2]], classes=[1, 3])
    coco = json.loads(writers.write_coco(d, tmp_path / "r.json", image_id=7).read_text())
    assert set(coco) == {"info", "images", "categories", "annotations"}
    assert coco["images"] == [{"id": 7, "file_name": "scene.tif", "width": None, "height": None}]
    assert coco["categories"] == [{"id": i + 1, "name": n} for i, n in enumerate(TAXONOMY)]
    entries = coco["annotations"]
    assert len(entries) == 2 and [e["id"] for e in entries] == [1, 2]
    e = entries[0]
    assert set(e) == {"id", "image_id", "category_id", "bbox", "score", "segmentation", "area", "iscrowd"}
    assert e["image_id"] == 7 and e["area"] == 300.0 and e["iscrowd"] == 0
    assert e["category_id"] == TAXONOMY.index("helicopter") + 1 and entries[1]["category_id"] == 4
    assert e["bbox"] == [35.0, 45.0, 30.0, 10.0]  # x, y, w, h in pixels
    seg = np.asarray(e["segmentation"][0]).reshape(4, 2)
    assert seg.min(0).tolist() == [35.0, 45.0] and seg.max(0).tolist() == [65.0, 55.0]
    # axis-aligned detections carry no segmentation
    aa = writers.coco_results(dets_of(xyxy=[[1, 2, 4, 8]]))
    assert aa == [
        {"image_id": 1, "category_id": 1, "bbox": [1.0, 2.0, 3.0, 6.0], "score": pytest.approx(0.9)}
    ]
    assert writers.coco_categories() == [{"id": i + 1, "name": n} for i, n in enumerate(TAXONOMY)]


# ------------------------------------------------------------------------------------------------ atomic writes


def test_failed_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "out.geojson"
    target.write_text("previous")
    d = dets_of(xyxy=[[0, 0, 20, 10]])

    class FullDisk(io.StringIO):  # takes part of the first write, then the disk is full
        def __init__(self, path: object, *args: object, **kw: object) -> None:
            super().__init__()
            self.real = builtins.open(path, *args, **kw)  # type: ignore[call-overload]

        def write(self, text: str) -> int:
            self.real.write(text[:20])
            self.real.flush()
            raise OSError(28, "No space left on device")

        def close(self) -> None:
            self.real.close()
            super().close()

    monkeypatch.setattr(writers, "open", FullDisk, raising=False)
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
        assert (edge == default_taxonomy().colour("aircraft")).all()
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


def _break_save(monkeypatch: pytest.MonkeyPatch, *, raise_enospc: bool) -> None:
    """Make PIL write only the first half of every image (a full disk), raising ENOSPC or silently."""
    from PIL import Image

    real_save = Image.Image.save

    def half_save(self: Image.Image, fp: object, format: str | None = None, **params: object) -> None:
        import io

        buf = io.BytesIO()
        real_save(self, buf, format=format, **params)
        data = buf.getvalue()
        Path(str(fp)).write_bytes(data[: len(data) // 2])
        if raise_enospc:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(Image.Image, "save", half_save)


@pytest.mark.parametrize("raise_enospc", [True, False], ids=["enospc", "silent-short-write"])
@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_quicklook_on_a_full_disk_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str, raise_enospc: bool
) -> None:
    scene = _scene(tmp_path)
    d = dets_of(xyxy=[[200, 100, 300, 160]], source=str(scene))
    out = tmp_path / "out"
    _break_save(monkeypatch, raise_enospc=raise_enospc)
    name = f"scene.quicklook{suffix}"
    with pytest.raises(writers.WriteError, match=rf"{name.replace('.', r'.')}: "):
        writers.write_quicklook(d, out / name, max_size=200)
    assert list(out.iterdir()) == []  # no short image at its final name, no temporary either


# ------------------------------------------------------------------------------------------------ helpers

UTM33 = CRS.from_epsg(32633)
UTM34 = CRS.from_epsg(32634)


def scene_dets(
    source: str,
    *,
    crs: CRS | None = UTM33,
    transform: Affine | None = None,
    gsd: float | None = 0.5,
    width: int = 200,
    height: int = 100,
    boxes: list[list[float]] | None = None,
    classes: list[int] | None = None,
    data: dict | None = None,
) -> Detections:
    """Detections of a ``width`` x ``height`` scene with the pipeline's ``meta``."""
    xyxy = np.asarray(boxes if boxes is not None else [[10, 10, 30, 20], [50, 40, 60, 70]], float)
    n = len(xyxy)
    if transform is None and crs is not None:
        transform = Affine(gsd or 1.0, 0, 500000.0, 0, -(gsd or 1.0), 4000000.0)
    return Detections(
        xyxy=xyxy,
        scores=np.linspace(0.9, 0.6, n),
        class_ids=classes if classes is not None else [i % 3 for i in range(n)],
        class_names=TAXONOMY,
        crs=crs,
        transform=transform,
        gsd=gsd,
        source=source,
        meta={"width": width, "height": height, "tile": 64, "scale": 1.0, "model": "fake-detect"},
        data=data or {},
    )


def read_layer(path: Path, layer: str | None = None) -> tuple[dict, list, dict]:
    """pyogrio metadata, shapely geometries and ``{field: values}`` of a layer."""
    meta, _, geom, fields = ogr_read(path, layer=layer)
    return meta, list(shapely.from_wkb(geom)), dict(zip(meta["fields"], fields, strict=True))


# ------------------------------------------------------------------------------------------------ collections


def test_collection_of_scenes_sharing_a_crs_keeps_it(tmp_path: Path) -> None:
    a = scene_dets("in/a.tif")
    b = scene_dets("other/b.tif", boxes=[[0, 0, 8, 8]])
    path = writers.write_collection([a, b], tmp_path / "all.gpkg", "gpkg")
    info = pyogrio.read_info(path)
    assert info["features"] == 3 and CRS.from_user_input(info["crs"]).to_epsg() == 32633
    _, geoms, fields = read_layer(path)
    assert list(fields["scene"]) == ["in/a.tif", "in/a.tif", "other/b.tif"]  # the paths as given
    assert "source" not in fields
    # same coordinates as the per-scene file of b
    _, single, _ = read_layer(writers.write_gpkg(b, tmp_path / "b.gpkg"))
    assert geoms[2].equals_exact(single[0], 1e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.gpkg", "b.gpkg"]


@pytest.mark.parametrize("fmt", ["gpkg", "fgb", "parquet", "csv", "geojson"])
def test_collection_of_several_crss_goes_to_epsg4326(tmp_path: Path, fmt: str) -> None:
    import geopandas

    # UTM 33N at easting 500000 is lon 15; UTM 34N at easting 500000 is lon 21
    a = scene_dets("a.tif")
    b = scene_dets("b.tif", crs=UTM34)
    path = writers.write_collection([a, b], tmp_path / f"all{writers.COLLECTION_FORMATS[fmt]}", fmt)
    if fmt == "csv":
        import pandas

        df = pandas.read_csv(path, comment="#")
        assert set(df["crs"]) == {"EPSG:4326"}
        xs = [shapely.from_wkt(w).centroid.x for w in df["wkt"]]
        scenes = list(df["scene"])
    else:
        df = geopandas.read_file(path) if fmt != "parquet" else geopandas.read_parquet(path)
        assert df.crs.to_epsg() == 4326
        xs = list(df.geometry.bounds["minx"])
        scenes = list(df["scene"])
    if fmt == "fgb":  # FlatGeobuf stores features in the order of its spatial index
        xs, scenes = zip(*sorted(zip(xs, scenes, strict=True)), strict=True)
    assert list(scenes) == ["a.tif", "a.tif", "b.tif", "b.tif"]
    assert all(15.0 < x < 15.001 for x in xs[:2]) and all(21.0 < x < 21.001 for x in xs[2:])
    assert list(tmp_path.iterdir()) == [path]


def test_collection_layer_per_crs(tmp_path: Path) -> None:
    scenes = [scene_dets("a.tif"), scene_dets("b.tif", crs=UTM34), scene_dets("c.tif", boxes=[[1, 1, 5, 5]])]
    path = writers.write_collection(scenes, tmp_path / "all.gpkg", layer_per_crs=True)
    layers = [str(n) for n, _ in pyogrio.list_layers(path)]
    assert layers == ["detections_epsg_32633", "detections_epsg_32634"]
    info = pyogrio.read_info(path, layer="detections_epsg_32634")
    assert CRS.from_user_input(info["crs"]).to_epsg() == 32634 and info["features"] == 2
    _, _, fields = read_layer(path, "detections_epsg_32633")
    assert list(fields["scene"]) == ["a.tif", "a.tif", "c.tif"]
    prov = writers.read_provenance(path)
    assert [s["source"] for s in prov["scenes"]] == ["a.tif", "c.tif", "b.tif"]
    assert [s["source"] for s in writers.read_provenance(path, layer="detections_epsg_32634")["scenes"]] == [
        "b.tif"
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.gpkg"]  # no .aux.xml beside it
    with pytest.raises(ValueError, match="layer_per_crs needs the gpkg format"):
        writers.write_collection(scenes, tmp_path / "all.csv", layer_per_crs=True)


@pytest.mark.parametrize("fmt", ["gpkg", "geojson", "fgb", "parquet", "csv"])
def test_collection_cannot_mix_pixels_and_georeferenced(tmp_path: Path, fmt: str) -> None:
    scenes = [scene_dets("geo.tif"), scene_dets("photo.png", crs=None, gsd=None)]
    with pytest.raises(writers.WriteError, match=r"cannot put scenes without georeferencing \(photo\.png\)"):
        writers.write_collection(scenes, tmp_path / f"all{writers.COLLECTION_FORMATS[fmt]}", fmt)
    assert list(tmp_path.iterdir()) == []


def test_collection_of_pixel_scenes(tmp_path: Path) -> None:
    scenes = [scene_dets("p1.png", crs=None, gsd=None), scene_dets("p2.png", crs=None, gsd=None)]
    info = pyogrio.read_info(writers.write_collection(scenes, tmp_path / "all.gpkg"))
    assert info["crs"] is None and info["features"] == 4
    gj = json.loads(writers.write_collection(scenes, tmp_path / "all.geojson").read_text())
    assert gj["crs"]["properties"]["name"] == writers.PIXEL_CRS_WKT and "image pixels" in gj["coordinates"]


def test_collection_parquet_without_geopandas_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import builtins

    real_import = builtins.__import__

    def fake_import(name: str, *args: object, **kwargs: object) -> object:
        if name.split(".")[0] in ("geopandas", "pyarrow"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(writers.WriteError, match=r"all\.parquet: .*pip install 'overhead-detector\[geo\]'"):
        writers.write_collection([scene_dets("a.tif")], tmp_path / "all.parquet")
    assert list(tmp_path.iterdir()) == []


def test_collection_format_from_the_name() -> None:
    assert writers.collection_format("x/all.coco.json") == "coco"
    assert writers.collection_format("ALL.GPKG") == "gpkg"
    assert writers.collection_format("a.fgb") == "fgb"
    with pytest.raises(ValueError, match="cannot tell the output format"):
        writers.collection_format("a.shp")
    with pytest.raises(ValueError, match="at least one scene"):
        writers.write_collection([], "a.gpkg")


def test_failed_collection_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import pyogrio.raw

    def broken(path: str, **kw: object) -> None:
        Path(path).write_bytes(b"SQLite format 3\x00 half")
        Path(f"{path}-journal").write_bytes(b"journal")
        raise RuntimeError("disk I/O error")

    monkeypatch.setattr(pyogrio.raw, "write", broken)
    with pytest.raises(writers.WriteError, match=r"all\.gpkg: cannot write \(disk I/O error\)"):
        writers.write_collection([scene_dets("a.tif")], tmp_path / "all.gpkg")
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ provenance


@pytest.fixture()
def model_file(tmp_path: Path) -> Path:
    p = tmp_path / "model.onnx"
    p.write_bytes(b"not really a model, but bytes to hash" * 1000)
    return p


def _check_provenance(prov: dict, model_file: Path, scenes: list[Detections]) -> None:
    import hashlib

    import detector

    assert prov["software"] == "detector" and prov["version"] == detector.__version__
    assert prov["model"] == "yolov8n-obb" and prov["model_file"] == "model.onnx"
    assert prov["model_sha256"] == hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert (prov["conf"], prov["tile"], prov["overlap"], prov["runtime"]) == (0.3, 512, 0.2, "onnxruntime")
    assert len(prov["scenes"]) == len(scenes)
    for s, d in zip(prov["scenes"], scenes, strict=True):
        assert s["source"] == d.source and s["gsd_m"] == d.gsd and s["count"] == len(d)
        assert (s["width"], s["height"]) == (d.meta["width"], d.meta["height"])
        poly = shapely.from_wkt(s["footprint_wkt"])
        if d.crs is None:
            assert s["crs"] is None and poly.bounds == (0, 0, d.meta["width"], d.meta["height"])
        else:
            assert s["crs"] == f"EPSG:{d.crs.to_epsg()}"
            x0, y0 = d.transform.c, d.transform.f
            w, h = d.meta["width"] * d.gsd, d.meta["height"] * d.gsd
            assert poly.bounds == pytest.approx((x0, y0 - h, x0 + w, y0))


@pytest.mark.parametrize("fmt", ["geojson", "gpkg", "csv", "coco"])
def test_provenance_round_trip_per_scene(tmp_path: Path, model_file: Path, fmt: str) -> None:
    prov = writers.Provenance.from_model_file(
        model_file, model="yolov8n-obb", conf=0.3, tile=512, overlap=0.2, runtime="onnxruntime"
    )
    for d in (scene_dets("/in/a#1.tif", gsd=0.3), scene_dets("photo.png", crs=None, gsd=None)):
        path = writers.write(d, tmp_path / f"x{writers.output_name(d, fmt)}", fmt, provenance=prov)
        _check_provenance(writers.read_provenance(path), model_file, [d])


@pytest.mark.parametrize("fmt", list(writers.COLLECTION_FORMATS))
def test_provenance_round_trip_collection(tmp_path: Path, model_file: Path, fmt: str) -> None:
    prov = writers.Provenance.from_model_file(
        model_file, model="yolov8n-obb", conf=0.3, tile=512, overlap=0.2, runtime="onnxruntime"
    )
    scenes = [scene_dets("a.tif", width=300), scene_dets("b\nc;d.tif", crs=UTM34, gsd=0.25)]
    path = writers.write_collection(
        scenes, tmp_path / f"all{writers.COLLECTION_FORMATS[fmt]}", provenance=prov
    )
    _check_provenance(writers.read_provenance(path), model_file, scenes)


def test_provenance_defaults_from_meta(tmp_path: Path) -> None:
    gj = writers.to_geojson(scene_dets("a.tif"))
    prov = gj["detector"]
    assert prov["model"] == "fake-detect" and prov["tile"] == 64 and prov["model_sha256"] is None
    assert prov["scenes"][0]["size_known"] is True and prov["scenes"][0]["transform"][0] == 0.5


def test_read_provenance_errors(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.geojson"
    foreign.write_text('{"type": "FeatureCollection", "features": []}')
    with pytest.raises(writers.DetectorIOError, match=r"foreign\.geojson: records no provenance"):
        writers.read_provenance(foreign)
    with pytest.raises(writers.DetectorIOError, match=r"missing\.gpkg: cannot read"):
        writers.read_provenance(tmp_path / "missing.gpkg")
    with pytest.raises(writers.DetectorIOError, match=r"x\.shp: cannot read provenance from a \.shp file"):
        writers.read_provenance(tmp_path / "x.shp")
    with pytest.raises(writers.DetectorIOError, match=r"nope\.onnx: cannot read the file to hash it"):
        writers.Provenance.from_model_file(tmp_path / "nope.onnx")


def test_csv_reads_back_with_pandas_comment(tmp_path: Path) -> None:
    import pandas

    d = scene_dets("/in/site #4/a.tif", data={"note": np.array(["x#y", "plain"])})
    path = writers.write_csv(d, tmp_path / "a.csv", provenance={"conf": 0.25})
    assert path.read_text().startswith("# written by detector")
    assert "# conf: 0.25\n" in path.read_text() and "# scene.source: /in/site #4/a.tif\n" in path.read_text()
    df = pandas.read_csv(path, comment="#")
    assert list(df.columns) == [*writers.CSV_COLUMNS, "note"]
    assert list(df["source"]) == ["/in/site #4/a.tif"] * 2 and list(df["note"]) == ["x#y", "plain"]
    assert df["score"].tolist() == pytest.approx([0.9, 0.6])


# ------------------------------------------------------------------------------------------------ COCO


def test_coco_batch_has_unique_image_and_annotation_ids(tmp_path: Path) -> None:
    scenes = [scene_dets("in/a.png", crs=None), scene_dets("in/b.png", crs=None, boxes=[[1, 1, 4, 4]])]
    coco = json.loads(writers.write_collection(scenes, tmp_path / "all.coco.json").read_text())
    assert coco["images"] == [
        {"id": 1, "file_name": "a.png", "width": 200, "height": 100},
        {"id": 2, "file_name": "b.png", "width": 200, "height": 100},
    ]
    assert [a["image_id"] for a in coco["annotations"]] == [1, 1, 2]
    assert [a["id"] for a in coco["annotations"]] == [1, 2, 3]
    assert coco["categories"] == [{"id": i + 1, "name": n} for i, n in enumerate(TAXONOMY)]
    assert coco["info"]["detector"]["scenes"][1]["source"] == "in/b.png"


def _gt_dataset(tmp_path: Path) -> Path:
    gt = {
        "images": [
            {"id": 42, "file_name": "b.png", "width": 200, "height": 100},
            {"id": 7, "file_name": "sub/a.png", "width": 200, "height": 100},
        ],
        "categories": [{"id": 5, "name": "small-vehicle"}, {"id": 9, "name": "aircraft"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 9, "bbox": [10, 10, 20, 10], "area": 200, "iscrowd": 0},
            {"id": 2, "image_id": 42, "category_id": 5, "bbox": [50, 40, 10, 30], "area": 300, "iscrowd": 0},
        ],
    }
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(gt))
    return path


def _gt_scenes() -> list[Detections]:
    a = scene_dets("/data/sub/a.png", crs=None, boxes=[[10, 10, 30, 20]], classes=[0])
    b = scene_dets("b.png", crs=None, boxes=[[50, 40, 60, 70], [0, 0, 5, 5]], classes=[2, 1])
    return [a, b]


def test_coco_ids_come_from_the_dataset(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gt = _gt_dataset(tmp_path)
    with caplog.at_level(logging.WARNING, logger="detector.writers"):
        coco = writers.to_coco(_gt_scenes(), coco_images=gt)
    assert [(im["id"], im["file_name"]) for im in coco["images"]] == [(7, "sub/a.png"), (42, "b.png")]
    assert coco["categories"] == [{"id": 5, "name": "small-vehicle"}, {"id": 9, "name": "aircraft"}]
    got = [(a["image_id"], a["category_id"], a["bbox"]) for a in coco["annotations"]]
    assert got == [(7, 9, [10.0, 10.0, 20.0, 10.0]), (42, 5, [50.0, 40.0, 10.0, 30.0])]
    assert any("no category 'helicopter'" in r.getMessage() for r in caplog.records)  # left out, said so
    # every result lands on the ground-truth image of its scene, in its category, as our COCO reader sees it
    from detector.labels import read_coco

    truth = {im.image.name: im for im in read_coco(gt)}
    by_id = {im["id"]: Path(im["file_name"]).name for im in coco["images"]}
    names = {c["id"]: c["name"] for c in coco["categories"]}
    for ann in coco["annotations"]:
        labels = truth[by_id[ann["image_id"]]].annotations
        x, y, w, h = ann["bbox"]
        assert any(a.cls == names[ann["category_id"]] and a.polygon.min(0).tolist() == [x, y] for a in labels)


def test_coco_scene_not_in_the_dataset_is_named(tmp_path: Path) -> None:
    gt = _gt_dataset(tmp_path)
    with pytest.raises(writers.LabelError, match=r"gt\.json: scene /x/zzz\.png is not in the dataset"):
        writers.to_coco([scene_dets("/x/zzz.png", crs=None)], coco_images=gt)
    with pytest.raises(ValueError, match="image_id is for a single scene"):
        writers.to_coco(_gt_scenes(), image_id=3)


def test_coco_results_score_with_pycocotools(tmp_path: Path) -> None:
    pytest.importorskip("pycocotools", reason="pycocotools is not installed (optional: scores COCO files)")
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = _gt_dataset(tmp_path)
    path = writers.write_coco(_gt_scenes(), tmp_path / "res.coco.json", coco_images=gt)
    coco_gt = COCO(str(gt))
    coco_dt = coco_gt.loadRes(json.loads(path.read_text())["annotations"])
    ev = COCOeval(coco_gt, coco_dt, "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[1] == pytest.approx(1.0)  # AP50: every ground-truth box found in the right image


# ------------------------------------------------------------------------------------------------ pixel outputs


def test_pixel_geojson_is_named_and_never_read_as_lonlat(tmp_path: Path) -> None:
    import geopandas

    px = scene_dets("photo.png", crs=None, gsd=None)
    assert writers.output_name(px, "geojson") == ".px.geojson"
    assert writers.output_name(scene_dets("a.tif"), "geojson") == ".geojson"
    assert writers.output_name(px, "gpkg") == ".gpkg"
    assert writers.output_suffixes("geojson") == (".geojson", ".px.geojson")
    path = writers.write_geojson(px, tmp_path / f"photo{writers.output_name(px, 'geojson')}")
    crs = CRS.from_user_input(pyogrio.read_info(path)["crs"])
    assert crs.to_epsg() is None and not crs.is_geographic and "image pixels" in crs.to_wkt()
    assert not geopandas.read_file(path).crs.is_geographic
    # why not "crs": null: GDAL reads that (and no crs member at all) as EPSG:4326
    gj = json.loads(path.read_text())
    gj["crs"] = None
    (tmp_path / "null.geojson").write_text(json.dumps(gj))
    assert pyogrio.read_info(tmp_path / "null.geojson")["crs"] == "EPSG:4326"


# ------------------------------------------------------------------------------------------------ odd scene names


@pytest.mark.filterwarnings("ignore:.*non conformant file extension:RuntimeWarning")  # read from bytes
@pytest.mark.parametrize("name", ["a;b", "tab\there", "new\nline"])
def test_gpkg_of_a_scene_with_an_odd_name(tmp_path: Path, name: str) -> None:
    d = scene_dets(f"/in/{name}.tif")
    path = writers.write_gpkg(d, tmp_path / f"{name}.gpkg", layer=f"{name}.tif")
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.gpkg"]  # nothing else, nothing stray
    with path.open("rb") as fh:  # pyogrio's URI parsing cuts paths at ";" and drops tabs/newlines
        meta, _, _, fields = ogr_read(fh)
    assert list(fields[list(meta["fields"]).index("source")]) == [f"/in/{name}.tif"] * 2
    with path.open("rb") as fh:
        assert [str(n) for n, _ in pyogrio.list_layers(fh)] == [writers.layer_name(f"{name}.tif")]
    assert writers.read_provenance(path)["scenes"][0]["source"] == f"/in/{name}.tif"


@pytest.mark.parametrize("name", ["a;b", "new\nline"])
def test_failed_gpkg_of_an_odd_name_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    import pyogrio.raw

    def broken(path: str, **kw: object) -> None:
        Path(path).write_bytes(b"SQLite format 3\x00 half")
        raise RuntimeError("disk I/O error")

    monkeypatch.setattr(pyogrio.raw, "write", broken)
    with pytest.raises(writers.WriteError, match="cannot write"):
        writers.write_gpkg(scene_dets(f"{name}.tif"), tmp_path / f"{name}.gpkg")
    assert list(tmp_path.iterdir()) == []


def test_layer_name() -> None:
    assert writers.layer_name("scene;1\t\n.tif") == "scene_1_.tif"
    assert writers.layer_name(";;;") == writers.GPKG_LAYER


# ------------------------------------------------------------------------------------------------ non-finite GSD


@pytest.mark.parametrize("gsd", [math.inf, math.nan, -1.0, 0.0])
def test_non_finite_gsd_writes_null_lengths(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, gsd: float
) -> None:
    d = dets_of(xywhr=[[50, 50, 30, 10, 0.0]], gsd=gsd)
    with caplog.at_level(logging.WARNING, logger="detector.writers"):
        path = writers.write_geojson(d, tmp_path / "a.geojson")
        csv_text = writers.write_csv(d, tmp_path / "a.csv").read_text()
        writers.write_gpkg(d, tmp_path / "a.gpkg")
    text = path.read_text()
    assert "Infinity" not in text and "NaN" not in text
    gj = json.loads(text)  # strict JSON
    props = gj["features"][0]["properties"]
    assert props["length_m"] is None and props["width_m"] is None and gj["gsd_m"] is None
    assert gj["detector"]["scenes"][0]["gsd_m"] is None and gj["detector"]["scenes"][0]["size_known"] is False
    row = next(csv.DictReader(line for line in csv_text.splitlines() if not line.startswith("#")))
    assert row["length_m"] == "" and row["width_m"] == ""
    assert not {"inf", "nan", "infinity"} & {v.lower() for v in row.values()}
    assert "# scene.gsd_m: null" in csv_text.splitlines()
    assert any("not a finite positive number" in r.getMessage() for r in caplog.records)


def test_json_writers_refuse_to_write_nan(tmp_path: Path) -> None:
    with pytest.raises(writers.WriteError, match=r"x\.json: cannot write \(Out of range float"):
        writers.write_json(tmp_path / "x.json", {"a": math.nan})
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------------------------------ data columns


def test_data_columns_reach_every_writer(tmp_path: Path) -> None:
    import geopandas

    data = {
        "length_m": np.array([12.3456789, np.nan]),  # wins over the box-derived length
        "runner_up_class": np.array(["helicopter", ""]),
        "runner_up_score": np.array([0.31234567, np.nan], np.float32),
        "n_parts": np.array([3, 1]),
    }
    d = scene_dets("a.tif", data=data)
    table = writers.attribute_table(d)
    assert table["length_m"] == [12.3457, None] and table["width_m"] == [5.0, 5.0]
    assert table["runner_up_class"] == ["helicopter", ""] and table["runner_up_score"] == [0.3123, None]
    assert table["n_parts"] == [3, 1] and list(table)[-3:] == [
        "runner_up_class",
        "runner_up_score",
        "n_parts",
    ]
    props = writers.to_geojson(d)["features"][0]["properties"]
    assert (props["length_m"], props["runner_up_class"], props["n_parts"]) == (12.3457, "helicopter", 3)
    r = next(csv.DictReader(table_lines(writers.write_csv(d, tmp_path / "a.csv"))))
    assert (r["length_m"], r["runner_up_class"], r["runner_up_score"], r["n_parts"]) == (
        "12.3457",
        "helicopter",
        "0.3123",
        "3",
    )
    _, _, fields = read_layer(writers.write_gpkg(d, tmp_path / "a.gpkg"))
    assert list(fields["runner_up_class"]) == ["helicopter", ""] and fields["n_parts"].dtype.kind == "i"
    assert fields["length_m"][0] == pytest.approx(12.3457) and np.isnan(fields["length_m"][1])
    df = geopandas.read_parquet(writers.write_collection([d], tmp_path / "a.parquet"))
    assert list(df["runner_up_class"]) == ["helicopter", ""] and df["n_parts"].tolist() == [3, 1]
