"""The class table: loading, validation, lookups, colours, the DOTA v1 table, and coverage of the real data."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from detector.labels import load_names
from detector.taxonomy import (
    FALLBACK_PALETTE,
    IGNORE,
    TaxonomyError,
    default_classes,
    default_taxonomy,
    default_taxonomy_path,
    fallback_colour,
    load_taxonomy,
    normalize_class,
    taxonomy_from_dict,
)

OURS = ("aircraft", "helicopter", "small-vehicle", "large-vehicle")

ISAID_NAMES = [
    "small-vehicle",
    "large-vehicle",
    "baseball-diamond",
    "bridge",
    "basketball-court",
    "roundabout",
    "helicopter",
    "plane",
    "storage-tank",
    "ship",
    "harbor",
    "swimming-pool",
    "soccer-ball-field",
    "tennis-court",
    "ground-track-field",
]


@pytest.mark.parametrize(
    ("raw", "norm"),
    [
        ("small vehicle", "small-vehicle"),
        ("Small_Vehicle", "small-vehicle"),
        (" plane ", "plane"),
        ("0", "0"),
    ],
)
def test_normalize_class(raw: str, norm: str) -> None:
    assert normalize_class(raw) == norm


def test_default_table_maps_the_agreed_classes() -> None:
    tax = load_taxonomy()
    assert tax.classes == OURS == default_classes()
    assert tax.path == default_taxonomy_path() and tax.path.name == "taxonomy.yaml"
    assert tax is default_taxonomy() is load_taxonomy(default_taxonomy_path())  # read once
    assert tax.map("hrplanes", "0") == "aircraft"
    assert tax.map("gdit-airport", "airplane") == "aircraft"
    assert tax.map("dota", "plane") == "aircraft"
    assert tax.map("dota8", "small vehicle") == "small-vehicle"
    assert tax.map("dota8", "large vehicle") == "large-vehicle"
    assert tax.map("isaid", "helicopter") == "helicopter"
    assert tax.map("isaid", "ship") == IGNORE
    assert tax.map("kit-aerial-cars", "car") == "small-vehicle"
    assert tax.map("kit-aerial-cars", "bus") == "large-vehicle"
    assert tax.map("kit-aerial-cars", "minibus") == "large-vehicle"
    assert tax.map("kit-aerial-cars", "cyclist") == IGNORE


def test_unknown_class_names_class_and_file() -> None:
    tax = load_taxonomy()
    with pytest.raises(TaxonomyError, match=r"'submarine'.*taxonomy\.yaml"):
        tax.map("dota", "submarine")
    with pytest.raises(TaxonomyError, match=r"dataset 'mystery'.*taxonomy\.yaml"):
        tax.map("mystery", "plane")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"classes": list(OURS), "datasets": {"x": {"ship": "boat"}}}, r"dataset 'x' maps 'ship' to 'boat'"),
        ({"datasets": {}}, "expected a mapping with `classes` and `datasets`"),
        ({"classes": [], "datasets": {}}, "non-empty list"),
        ({"classes": ["car", "Car"], "datasets": {}}, "'car' is listed twice"),
        ({"classes": ["ignore"], "datasets": {}}, "cannot be a class name"),
        ({"classes": [{"colour": [1, 2, 3]}], "datasets": {}}, "needs a `name`"),
        ({"classes": [{"name": "car", "colour": [1, 2]}], "datasets": {}}, "three integers 0-255"),
        ({"classes": [{"name": "car", "colour": [1, 2, 256]}], "datasets": {}}, "three integers 0-255"),
        ({"classes": [{"name": "car", "size": 3}], "datasets": {}}, r"unknown keys \['size'\]"),
        (
            {"classes": ["car", {"name": "van", "derived_from": "truck"}], "datasets": {}},
            "derived_from 'truck'",
        ),
        (
            {"classes": ["car", {"name": "van", "derived_from": "car"}], "datasets": {"x": {"a": "van"}}},
            "maps 'a' to 'van'",  # no source class maps to a derived class
        ),
        ({"classes": ["car"], "datasets": {"x": ["car"]}}, "dataset 'x' must map source classes"),
        (
            {"classes": ["car"], "datasets": {}, "dota_v1": {"plane": "jet"}},
            "`dota_v1` maps 'plane' to 'jet'",
        ),
        ({"classes": ["car"], "datasets": {}, "dota_v1": {"a b": "car", "a_b": "car"}}, "DOTA class twice"),
    ],
)
def test_invalid_tables_are_rejected(data: dict, message: str) -> None:
    with pytest.raises(TaxonomyError, match=message):
        taxonomy_from_dict(data)


def test_invalid_files_are_rejected(tmp_path: Path) -> None:
    bad = tmp_path / "tax.yaml"
    bad.write_text("classes: [aircraft\n")
    with pytest.raises(TaxonomyError, match="tax.yaml"):
        load_taxonomy(bad)
    with pytest.raises(TaxonomyError, match="not found"):
        load_taxonomy(tmp_path / "missing.yaml")


def test_every_class_of_the_real_data_is_mapped(shared_data: Path) -> None:
    tax = load_taxonomy()
    dota8 = yaml.safe_load((shared_data / "dota" / "dota8" / "dota8.yaml").read_text())["names"]
    kit = load_names(shared_data / "kit-aerial-cars" / "aerial.names")
    for name in dota8.values():
        assert tax.map("dota8", name) in (*OURS, IGNORE)
    for name in kit.values():
        assert tax.map("kit-aerial-cars", name) in (*OURS, IGNORE)
    for name in ISAID_NAMES:
        assert tax.map("isaid", name) in (*OURS, IGNORE)
    demo_classes = {
        line.split()[8]
        for f in (shared_data / "dota" / "demo" / "labelTxt").glob("*.txt")
        for line in f.read_text().splitlines()
        if len(line.split()) >= 9
    }
    assert demo_classes and all(tax.map("dota", c) in OURS for c in demo_classes)


def test_dota_v1_order_is_the_dota8_order(shared_data: Path) -> None:
    """The DOTA table's channel order is the one DOTA-trained models output (dota8 lists it)."""
    dota8 = yaml.safe_load((shared_data / "dota" / "dota8" / "dota8.yaml").read_text())["names"]
    tax = load_taxonomy()
    assert tax.dota_v1_names == tuple(normalize_class(dota8[i]) for i in sorted(dota8))
    assert tax.is_dota_v1([dota8[i] for i in sorted(dota8)])
    assert not tax.is_dota_v1([dota8[i] for i in sorted(dota8)][::-1])


def test_one_dota_table_gives_class_map_head_remap_and_labels() -> None:
    tax = load_taxonomy()
    assert tax.dota_class_map() == {0: "aircraft", 9: "large-vehicle", 10: "small-vehicle", 11: "helicopter"}
    assert tax.source_channels() == [0, 11, 10, 9]  # the DOTA channel that starts each of our classes
    assert tax.source_channels(["small-vehicle", "boat"]) == [10, None]
    # the label mapping of every DOTA-named dataset extends the same table (YAML merge of `dota_v1`)
    for ds in ("dota", "dota8", "isaid"):
        assert all(tax.map(ds, src) == ours for src, ours in tax.dota_v1)
        assert tax.map(ds, "container crane") == IGNORE
    bare = taxonomy_from_dict({"classes": ["car"], "datasets": {}})
    assert not bare.is_dota_v1(tax.dota_v1_names)
    with pytest.raises(TaxonomyError, match="no `dota_v1` table"):
        bare.dota_class_map()


def test_colours_descriptions_and_derived_classes() -> None:
    tax = load_taxonomy()
    assert tax.colour("aircraft") == (255, 64, 64)
    assert tax.colour("Small Vehicle") == tax.colour("small-vehicle")
    assert tax.derived_classes == ("transport-aircraft", "small-aircraft")
    assert all(tax.info[c].derived_from == "aircraft" for c in tax.derived_classes)
    assert tax.all_classes == OURS + tax.derived_classes
    assert len({tax.colour(c) for c in tax.all_classes}) == len(tax.all_classes)  # tell them apart
    assert all(tax.info[c].description for c in tax.all_classes)
    # names the table does not know get a stable colour from the fallback palette
    assert tax.colour("boat") == fallback_colour("boat") == fallback_colour("Boat") in FALLBACK_PALETTE
    assert len({fallback_colour(n) for n in ("boat", "ship", "tank", "train", "bus", "jet")}) > 1


def test_custom_class_list_from_a_file(tmp_path: Path) -> None:
    """Any class list works: plain names get fallback colours, id order is file order."""
    p = tmp_path / "tax.yaml"
    p.write_text(
        "classes: [{name: aircraft, colour: [1, 2, 3]}, boat]\n"
        "datasets:\n  mine: {plane: aircraft, boat: boat, car: ignore}\n"
    )
    tax = load_taxonomy(p)
    assert tax.classes == ("aircraft", "boat") and tax.path == p
    assert tax.colour("aircraft") == (1, 2, 3) and tax.colour("boat") == fallback_colour("boat")
    assert tax.map("mine", "Plane") == "aircraft" and tax.map("mine", "car") == IGNORE
    with pytest.raises(TaxonomyError, match=r"one of aircraft, boat or ignore"):
        tax.map("mine", "truck")


def test_a_file_is_read_once_per_version(tmp_path: Path) -> None:
    p = tmp_path / "tax.yaml"
    p.write_text("classes: [car]\ndatasets: {}\n")
    first = load_taxonomy(p)
    assert load_taxonomy(str(p)) is first
    p.write_text("classes: [car, boat]\ndatasets: {}\n")  # changed: read again
    assert load_taxonomy(p).classes == ("car", "boat")
