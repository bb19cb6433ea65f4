"""Sizes in metres and the transport / small split (detector/sizes.py, configs/aircraft-sizes.yaml)."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from affine import Affine

from detector.detections import Detections
from detector.errors import ConfigError
from detector.geometry import corners_to_xyxy, xywhr_to_corners
from detector.pipeline import Detector
from detector.sizes import (
    LENGTH,
    SPAN,
    SizeRules,
    derived_names,
    load_size_rules,
    measure,
    rules_from_dict,
    split_aircraft,
)
from detector.tiling import TileConfig
from detector.writers import attribute_table
from tests._fixtures import TAXONOMY, BrightObjectPredictor, paint_box, write_geotiff

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import size_check  # noqa: E402

#: The issue's types (the threshold must sort every one of them by its category).
ISSUE_TYPES = {
    "transport": ["An-124", "Il-76MD", "An-12BK", "An-26", "An-32", "An-72", "C-17A", "C-130H", "A400M"],
    "small": ["Su-24M", "Su-25", "Su-27", "Su-34", "Su-35S", "MiG-29", "MiG-31"],
    "helicopter": ["Ka-52", "Mi-8", "Mi-24", "Mi-26"],
}


def rotated(
    sides_m: list[tuple[float, float]], gsd: float | None, angles: list[float], cls: str = "aircraft"
):
    """Rotated detections of the given sides (metres) at ``gsd``, turned by ``angles`` (radians)."""
    scale = gsd or 0.5
    xywhr = np.array(
        [
            [500.0 + 100 * k, 500.0, w / scale, h / scale, r]
            for k, ((w, h), r) in enumerate(zip(sides_m, angles, strict=True))
        ]
    )
    n = len(xywhr)
    return Detections(
        xyxy=corners_to_xyxy(xywhr_to_corners(xywhr)),
        scores=np.full(n, 0.9, np.float32),
        class_ids=np.full(n, TAXONOMY.index(cls)),
        class_names=TAXONOMY,
        xywhr=xywhr,
        gsd=gsd,
    )


@pytest.fixture(scope="module")
def rules() -> SizeRules:
    return load_size_rules()


@pytest.mark.parametrize("gsd", [0.3, 0.5, 1.0])
@pytest.mark.parametrize("angle", [0.0, 0.4, math.pi / 4, 2.0])
def test_measure_rotated_sides_in_metres(gsd: float, angle: float) -> None:
    # w along the angle shorter than h: length_m is the longer side whichever side it is
    dets = measure(rotated([(30.0, 44.0), (20.0, 12.0)], gsd, [angle, angle]))
    np.testing.assert_allclose(dets.data[LENGTH], [44.0, 20.0])
    np.testing.assert_allclose(dets.data[SPAN], [30.0, 12.0])
    assert dets.meta["size_known"] is True


def test_measure_axis_aligned_box_sides() -> None:
    dets = Detections(
        xyxy=[[0, 0, 40, 10], [5, 5, 25, 65]],
        scores=[0.9, 0.8],
        class_ids=[0, 1],
        class_names=TAXONOMY,
        gsd=0.5,
    )
    out = measure(dets)
    np.testing.assert_allclose(out.data[LENGTH], [20.0, 30.0])
    np.testing.assert_allclose(out.data[SPAN], [5.0, 10.0])


@pytest.mark.parametrize("gsd", [0.3, 0.5, 1.2])
def test_split_sorts_the_issue_types_at_known_gsds(rules: SizeRules, gsd: float) -> None:
    types = {t.name: t for t in rules.types}
    rng = np.random.default_rng(int(gsd * 10))
    for category, names in ISSUE_TYPES.items():
        # footprint sides (length, span) in a random order, the box at a random heading
        sides = [tuple(rng.permutation([types[n].length_m, types[n].span_m])) for n in names]
        cls = "helicopter" if category == "helicopter" else "aircraft"
        out = split_aircraft(rotated(sides, gsd, list(rng.uniform(0, np.pi, len(names))), cls), rules)
        want = {"transport": rules.large, "small": rules.small, "helicopter": "helicopter"}[category]
        assert out.class_name.tolist() == [want] * len(names), (category, out.data[LENGTH])
        np.testing.assert_allclose(out.data[LENGTH], [types[n].larger_m for n in names])


def test_threshold_lies_between_the_issue_types(rules: SizeRules) -> None:
    types = {t.name: t for t in rules.types}
    smallest_transport = min(types[n].larger_m for n in ISSUE_TYPES["transport"])
    largest_small = max(types[n].larger_m for n in ISSUE_TYPES["small"])
    assert largest_small < rules.threshold_m < smallest_transport
    # neither dimension alone would separate them as well: An-26 is barely longer than a Su-34
    assert types["An-26"].length_m - types["Su-34"].length_m < 1.0
    assert {"Boeing 737-800", "Boeing 747-400", "C-130J-30"} <= set(types)


def test_ids_stay_and_derived_names_are_appended(rules: SizeRules) -> None:
    dets = rotated([(40.0, 38.0), (15.0, 12.0)], 0.5, [0.1, 0.2])
    heli = rotated([(18.0, 21.0)], 0.5, [0.0], "helicopter")
    both = split_aircraft(Detections.concatenate([dets, heli]), rules)
    assert both.class_names == (*TAXONOMY, "transport-aircraft", "small-aircraft")
    assert both.class_name.tolist() == ["transport-aircraft", "small-aircraft", "helicopter"]
    assert both.class_ids[2] == TAXONOMY.index("helicopter")
    # a model without the parent class is measured but keeps its names
    other = Detections(xyxy=[[0, 0, 9, 9]], scores=[1], class_ids=[0], class_names=("ship",), gsd=0.5)
    kept = split_aircraft(other, rules)
    assert kept.class_names == ("ship",) and LENGTH in kept.data
    assert derived_names(("ship",), rules) == () and derived_names(TAXONOMY, None) == ()


@pytest.mark.parametrize("gsd", [None, math.inf, 0.0])
def test_unknown_gsd_keeps_aircraft_and_says_so(rules: SizeRules, gsd: float | None) -> None:
    out = split_aircraft(rotated([(40.0, 38.0), (15.0, 12.0)], gsd, [0.1, 0.2]), rules)
    assert out.class_name.tolist() == ["aircraft", "aircraft"]
    assert np.isnan(out.data[LENGTH]).all() and np.isnan(out.data[SPAN]).all()
    assert out.meta["size_known"] is False
    assert "transport-aircraft" in out.class_names  # same class list as a scene with a GSD


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("threshold_m: -3\n", "positive"),
        ("threshold_m: 25\nlarge: aircraft\n", "different class names"),
        ("threshold_m: 25\ntypes: [{name: X, category: bomber, length_m: 1, span_m: 1}]\n", "category"),
        ("threshold_m: 25\ntypes: [{name: X, category: small, length_m: 1}]\n", "needs name"),
        ("threshold: 25\n", "threshold_m"),
        ("threshold_m: [25\n", "cannot read"),
    ],
)
def test_bad_rules_file_names_the_file(tmp_path: Path, text: str, problem: str) -> None:
    p = tmp_path / "sizes.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=problem) as e:
        load_size_rules(p)
    assert str(p) in str(e.value)
    with pytest.raises(ConfigError, match="not found"):
        load_size_rules(tmp_path / "missing.yaml")


def test_rules_from_dict_classifies_at_the_threshold() -> None:
    r = rules_from_dict({"threshold_m": 20})
    assert r.classify(np.array([19.99, 20.0, np.nan])).tolist() == [
        "small-aircraft",
        "transport-aircraft",
        "aircraft",
    ]


def _scene(tmp_path: Path, gsd: float = 0.5) -> Path:
    image = np.zeros((3, 400, 400), np.uint8)
    paint_box(image, 40, 40, 120, 110)  # 40 x 35 m at 0.5 m: transport
    paint_box(image, 250, 250, 280, 276)  # 15 x 13 m: small
    return write_geotiff(tmp_path / "airport.tif", image, transform=Affine(gsd, 0, 500000, 0, -gsd, 4000000))


def test_pipeline_splits_filters_and_writes(tmp_path: Path) -> None:
    path = _scene(tmp_path)
    det = Detector(BrightObjectPredictor(imgsz=256))
    assert det.class_names[-2:] == ("transport-aircraft", "small-aircraft")
    dets = det.predict(path, tile=TileConfig(tile=256, overlap=0.2, resample=False))
    assert sorted(dets.class_name.tolist()) == ["small-aircraft", "transport-aircraft"]
    big = dets[dets.class_name == "transport-aircraft"]
    np.testing.assert_allclose(big.data[LENGTH], [40.0], atol=0.6)
    np.testing.assert_allclose(big.data[SPAN], [35.0], atol=0.6)
    table = attribute_table(dets)
    assert set(table["class"]) == {"small-aircraft", "transport-aircraft"}
    assert all(v is not None for v in table[SPAN])
    only = det.predict(
        path, tile=TileConfig(tile=256, overlap=0.2, resample=False), classes=["transport-aircraft"]
    )
    assert only.class_name.tolist() == ["transport-aircraft"]
    off = Detector(BrightObjectPredictor(imgsz=256), sizes=False)
    assert (
        off.predict(path, tile=TileConfig(tile=256, resample=False)).class_name.tolist() == ["aircraft"] * 2
    )
    with pytest.raises(ValueError, match="unknown class 'transport-aircraft'"):
        off.predict(path, classes=["transport-aircraft"])


def test_pipeline_without_gsd_keeps_aircraft(tmp_path: Path) -> None:
    image = np.zeros((200, 200, 3), np.uint8)
    image[40:120, 40:110] = 255
    dets = Detector(BrightObjectPredictor(imgsz=256)).predict(image, tile=TileConfig(tile=256))
    assert dets.class_name.tolist() == ["aircraft"]
    assert dets.meta["size_known"] is False and np.isnan(dets.data[LENGTH]).all()


def test_cross_shaped_aircraft_at_half_metre_agree_with_size(rules: SizeRules) -> None:
    """The acceptance measure on generated aircraft: tight axis-aligned boxes (a detect model) of thin
    crosses, the worst shape for a box, at every heading: clearly large (>= 35 m) ones are transport and
    clearly small (<= 18 m) ones small on >= 90 % (here all) of the calls."""
    rng = np.random.default_rng(7)
    large = [(rng.uniform(35, 76), rng.uniform(30, 74)) for _ in range(40)]
    small = [(rng.uniform(8, 18), rng.uniform(7, 18)) for _ in range(40)]
    heading = rng.uniform(0, np.pi, 80)
    boxes = np.stack(
        [size_check.cross_box(max(lw), min(lw), a, 0.5) for lw, a in zip(large + small, heading, strict=True)]
    )
    dets = Detections(xyxy=boxes, scores=np.ones(80), class_ids=np.zeros(80), class_names=TAXONOMY, gsd=0.5)
    called = split_aircraft(dets, rules).class_name
    agree = np.r_[called[:40] == rules.large, called[40:] == rules.small]
    assert agree.mean() >= 0.9


def test_table_check_on_generated_shapes(rules: SizeRules) -> None:
    square = [np.array([[-0.35, -0.35], [0.35, -0.35], [0.35, 0.35], [-0.35, 0.35]]) / 0.99]
    result = size_check.table_check(rules, square)
    assert result["types"]["An-124"]["called_large"] == 1.0
    assert result["types"]["MiG-29"]["called_large"] == 0.0
    assert result["types"]["Mi-26"]["called_large"] is None  # helicopters are not split
    assert result["agreement_clear"] == 1.0


def test_label_lengths_on_real_scenes(shared_data: Path) -> None:
    """Box vs rotated label length on the DOTA demo scenes (GSD headers)."""
    from detector.evaluate import load_eval_set

    demo, _ = load_eval_set("dota/demo", shared_data)
    errors = size_check.label_errors(demo, ["small-vehicle", "large-vehicle"])
    for cls in ("small-vehicle", "large-vehicle"):
        assert errors[cls]["box"]["n"] > 100
        # the box of a rotated rectangle is never shorter than its long side, and mostly close to it
        assert errors[cls]["box"]["p10"] >= -0.01 and 0 <= errors[cls]["box"]["median"] < 0.1


def test_aircraft_outlines_box_and_split(shared_data: Path) -> None:
    """On real aircraft outlines (iSAID test polygons; ratios, no GSD needed) the tight box reads the larger
    dimension within a few percent, and the split holds for the reference types drawn as those outlines."""
    from detector.evaluate import load_eval_set

    isaid, _ = load_eval_set("isaid-512/test", shared_data)
    planes = size_check.label_errors(isaid, ["aircraft"])["aircraft"]
    # a tight box reads a real aircraft's larger dimension within a few percent; the diagonal / sqrt(2) does not
    assert planes["box"]["median_abs"] < 0.05 < planes["diag_sqrt2"]["median_abs"]
    agreement = size_check.table_check(load_size_rules(), size_check.unit_shapes(isaid))["agreement_clear"]
    assert agreement >= 0.9


@pytest.mark.slow
def test_model_lengths_on_dota_demo(shared_data: Path) -> None:
    """The shipped model's length_m against the rotated labels of the DOTA demo scenes (header GSD)."""
    from detector.evaluate import load_eval_set

    demo, _ = load_eval_set("dota/demo", shared_data)
    errors = size_check.model_errors(Detector.load(), demo, ["small-vehicle", "large-vehicle"])
    for cls in ("small-vehicle", "large-vehicle"):
        assert errors[cls]["n"] >= 20
        assert errors[cls]["median_abs"] < 0.25


@pytest.fixture
def fake_load(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``Detector.load`` builds a detector around :class:`BrightObjectPredictor`, honouring ``sizes``."""

    def load(cls: type, path: object = None, **kwargs: object) -> Detector:
        return Detector(BrightObjectPredictor(imgsz=256), sizes=kwargs.get("sizes", True))

    from detector import batch

    monkeypatch.setattr(Detector, "load", classmethod(load))
    batch._load_cached.cache_clear()  # a model spec loaded earlier in the session must not be reused
    yield
    batch._load_cached.cache_clear()


def test_cli_predict_classes_summary_and_writers(tmp_path: Path, fake_load: None) -> None:
    import json

    import pandas as pd
    from click.testing import CliRunner

    from detector import cli

    src = tmp_path / "in"
    src.mkdir()
    _scene(src)
    out = tmp_path / "out"
    args = ["predict", str(src), "-o", str(out), "-f", "geojson,csv", "--no-quicklook", "--tile", "256"]
    r = CliRunner().invoke(cli.cli, [*args, "--classes", "transport-aircraft"])
    assert r.exit_code == 0, r.output
    header = next(line for line in r.output.splitlines() if line.startswith("scene"))
    assert header.split() == ["scene", "transport-aircraft", "total"]
    props = [f["properties"] for f in json.loads((out / "airport.geojson").read_text())["features"]]
    assert [(p["class"], p["length_m"], p["span_m"]) for p in props] == [("transport-aircraft", 40.0, 35.0)]
    table = pd.read_csv(out / "airport.csv", comment="#")
    assert table["class"].tolist() == ["transport-aircraft"] and table["span_m"].tolist() == [35.0]
    r = CliRunner().invoke(cli.cli, [*args, "--overwrite"])
    assert r.exit_code == 0, r.output
    assert {"transport-aircraft", "small-aircraft"} <= set(r.output.split())
    r = CliRunner().invoke(
        cli.cli, [*args, "--overwrite", "--no-size-classes", "--classes", "small-aircraft"]
    )
    assert r.exit_code != 0 and "unknown class 'small-aircraft'" in r.output
