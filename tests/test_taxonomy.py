"""The class table: loading, validation, lookups, and coverage of every class in the real data."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from detector.backends.base import TAXONOMY
from detector.labels import load_names
from detector.taxonomy import (
    DEFAULT_TAXONOMY_PATH,
    IGNORE,
    TaxonomyError,
    load_taxonomy,
    normalize_class,
    taxonomy_from_dict,
)

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
    assert tax.classes == TAXONOMY
    assert tax.path == DEFAULT_TAXONOMY_PATH
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


def test_invalid_tables_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(TaxonomyError, match="'boat'"):
        taxonomy_from_dict({"classes": list(TAXONOMY), "datasets": {"x": {"ship": "boat"}}})
    with pytest.raises(TaxonomyError, match="class-id order"):
        taxonomy_from_dict({"classes": ["helicopter", "aircraft"], "datasets": {}})
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
        assert tax.map("dota8", name) in (*TAXONOMY, IGNORE)
    for name in kit.values():
        assert tax.map("kit-aerial-cars", name) in (*TAXONOMY, IGNORE)
    for name in ISAID_NAMES:
        assert tax.map("isaid", name) in (*TAXONOMY, IGNORE)
    demo_classes = {
        line.split()[8]
        for f in (shared_data / "dota" / "demo" / "labelTxt").glob("*.txt")
        for line in f.read_text().splitlines()
        if len(line.split()) >= 9
    }
    assert demo_classes and all(tax.map("dota", c) in TAXONOMY for c in demo_classes)
