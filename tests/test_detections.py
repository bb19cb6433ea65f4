"""The Detections container: data columns, the short repr, and its doors to GeoJSON and GeoDataFrames."""

from __future__ import annotations

import builtins

import numpy as np
import pytest
from affine import Affine
from rasterio.crs import CRS

from detector import writers
from detector.detections import Detections

NAMES = ("aircraft", "helicopter", "small-vehicle", "large-vehicle")
UTM33 = CRS.from_epsg(32633)


def make(crs: CRS | None = UTM33, gsd: float | None = 0.5, **kw: object) -> Detections:
    return Detections(
        xyxy=[[10, 10, 30, 20], [50, 40, 60, 70], [0, 0, 4, 4]],
        scores=[0.9, 0.7, 0.5],
        class_ids=[0, 2, 2],
        class_names=NAMES,
        crs=crs,
        transform=None if crs is None else Affine(0.5, 0, 500000.0, 0, -0.5, 4000000.0),
        gsd=gsd,
        source="in/a.tif",
        data={
            "runner_up_class": np.array(["helicopter", "", ""]),
            "runner_up_score": np.array([0.2, np.nan, 0.1]),
        },
        **kw,
    )


def test_to_geodataframe_columns_and_crs() -> None:
    pytest.importorskip("geopandas")
    d = make()
    df = d.to_geodataframe()
    assert list(df.columns) == [
        "class",
        "class_id",
        "score",
        "length_m",
        "width_m",
        "heading_deg",
        "source",
        "px_xmin",
        "px_ymin",
        "px_xmax",
        "px_ymax",
        "runner_up_class",
        "runner_up_score",
        "geometry",
    ]
    assert df["class"].tolist() == ["aircraft", "small-vehicle", "small-vehicle"]
    assert df["class_id"].tolist() == [0, 2, 2]
    assert df["length_m"].tolist() == [10.0, 15.0, 2.0] and df["width_m"].tolist() == [5.0, 5.0, 2.0]
    assert df["heading_deg"].isna().all()  # axis-aligned boxes have no heading
    assert df["runner_up_class"].tolist() == ["helicopter", "", ""]
    assert np.isnan(df["runner_up_score"][1]) and df["runner_up_score"][0] == pytest.approx(0.2)
    assert df.crs.to_epsg() == 32633
    # 20 x 10 px at 0.5 m, top-left at pixel (10, 10)
    assert df.geometry[0].bounds == pytest.approx((500005.0, 3999990.0, 500015.0, 3999995.0))
    assert df.geometry[0].area == pytest.approx(50.0)


def test_to_geodataframe_of_pixels_has_no_crs_and_empty_works() -> None:
    pytest.importorskip("geopandas")
    df = make(crs=None, gsd=None).to_geodataframe()
    assert df.crs is None and df["length_m"].isna().all()
    assert df.geometry[0].bounds == (10.0, 10.0, 30.0, 20.0)
    empty = Detections.empty(NAMES, crs=CRS.from_epsg(32633), transform=Affine.identity()).to_geodataframe()
    assert len(empty) == 0 and empty.crs.to_epsg() == 32633


def test_to_geodataframe_without_geopandas_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real_import = builtins.__import__

    def fake_import(name: str, *args: object, **kwargs: object) -> object:
        if name.split(".")[0] == "geopandas":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"pip install 'overhead-detector\[geo\]'"):
        make().to_geodataframe()


def test_to_geojson_is_the_writers_collection() -> None:
    d = make()
    assert d.to_geojson() == writers.to_geojson(d)
    assert d.to_geojson(keep_crs=True)["crs"]["properties"]["name"] == "urn:ogc:def:crs:EPSG::32633"
    props = d.to_geojson()["features"][0]["properties"]
    assert props["runner_up_class"] == "helicopter" and props["runner_up_score"] == 0.2


def test_repr_stays_short() -> None:
    d = make()
    assert repr(d) == (
        "Detections(n=3, axis-aligned, aircraft=1, small-vehicle=2, source='in/a.tif', crs=EPSG:32633, "
        "gsd=0.5 m, data=['runner_up_class', 'runner_up_score'])"
    )
    custom = CRS.from_wkt(
        'PROJCS["custom",GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],'
        'PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]],PROJECTION["Transverse_Mercator"],'
        'PARAMETER["latitude_of_origin",0],PARAMETER["central_meridian",13.3],PARAMETER["scale_factor",1],'
        'PARAMETER["false_easting",0],PARAMETER["false_northing",0],UNIT["metre",1]]'
    )
    text = repr(make(crs=custom))
    assert len(text) < 200 and "crs=" in text and "PARAMETER" not in text


def test_class_name_and_data_follow_slicing_and_concatenation() -> None:
    d = make()
    assert d.class_name.tolist() == ["aircraft", "small-vehicle", "small-vehicle"]
    part = d[d.scores > 0.6]
    assert part.class_name.tolist() == ["aircraft", "small-vehicle"]
    assert part.data["runner_up_class"].tolist() == ["helicopter", ""]
    both = Detections.concatenate([part, d[2]])
    assert both.data["runner_up_score"][2] == pytest.approx(0.1) and len(both) == 3
    with pytest.raises(ValueError, match=r"data\['x'\] has 2 rows, expected 3"):
        Detections(xyxy=d.xyxy, scores=d.scores, class_ids=d.class_ids, class_names=NAMES, data={"x": [1, 2]})
