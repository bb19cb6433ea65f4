"""Sizes in metres and the transport / small split of aircraft (rules in ``configs/aircraft-sizes.yaml``).

Two pure functions over :class:`~detector.detections.Detections`:

* :func:`measure` adds the data columns ``length_m`` and ``span_m`` to every detection: the two sides of its
  footprint times the scene GSD. ``length_m`` is the side along the heading, and the package's heading
  (:func:`detector.georef.headings`) is the long side's azimuth, so ``length_m`` is the **longer** side and
  ``span_m`` the shorter one (a wingspan or rotor span for aircraft, a width for vehicles). A footprint cannot
  tell a fuselage from a wing: for many types (An-124, C-130, An-26) the longer side is the span. For a rotated
  box the sides are the box's; for an axis-aligned box (a detect model) they are the box sides. The axis-aligned
  box of a *rectangle* overstates its long side (by 41 % for a square at 45 degrees), but an aircraft is a
  cross, not a rectangle: on the iSAID test outlines the tight box's longer side reads the aircraft's larger
  dimension 2 % short (median; helicopters 0.6 %) and the box diagonal / sqrt(2) 13 % short, so the box sides
  are used as they are. The shipped (detect) model's boxes read the same outlines 1.7 % short (median absolute
  error 3.9 %); see ``scripts/size_check.py``.
* :func:`split_aircraft` re-labels every ``aircraft`` detection as ``transport-aircraft`` or ``small-aircraft``
  by its larger dimension (``length_m``) against the threshold of :class:`SizeRules`. The derived names are
  appended to ``class_names`` (the ids of the model's classes do not move), whether or not any detection
  gets them, so every scene of a model has the same class list.

When the scene GSD is unknown (or not a finite positive number) ``length_m`` and ``span_m`` are ``nan``,
aircraft stay ``aircraft`` and ``meta["size_known"]`` is False (the outputs' provenance says so).
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from detector.detections import Detections
from detector.errors import ConfigError
from detector.georef import side_lengths, valid_gsd
from detector.resources import config_path

logger = logging.getLogger(__name__)

#: File name of the default rules under ``configs/``.
SIZES_FILE = "aircraft-sizes.yaml"

#: Data columns :func:`measure` adds.
LENGTH = "length_m"
SPAN = "span_m"

#: Categories of the reference table.
CATEGORIES = ("transport", "small", "helicopter", "other")


@dataclass(frozen=True)
class AircraftType:
    """One row of the reference table: a real type and its size in metres.

    Attributes:
        name: the type (e.g. ``"An-124"``).
        category: ``"transport"``, ``"small"``, ``"helicopter"`` or ``"other"`` (bombers: neither).
        length_m: length overall (fuselage length for helicopters).
        span_m: wingspan (main rotor diameter for helicopters).
    """

    name: str
    category: str
    length_m: float
    span_m: float

    @property
    def larger_m(self) -> float:
        """``max(length_m, span_m)``: what the long side of a footprint measures."""
        return max(self.length_m, self.span_m)


@dataclass(frozen=True)
class SizeRules:
    """How ``parent`` detections are split by their larger dimension.

    Attributes:
        threshold_m: larger dimension (metres) from which an aircraft is ``large``; below it is ``small``.
        parent: the class that is split (a class the model outputs).
        large, small: the derived class names.
        types: the reference table the threshold was chosen from.
        path: the file the rules came from (named in errors), ``None`` for rules built in code.
    """

    threshold_m: float
    parent: str = "aircraft"
    large: str = "transport-aircraft"
    small: str = "small-aircraft"
    types: tuple[AircraftType, ...] = ()
    path: Path | None = None

    def __post_init__(self) -> None:
        if not (isinstance(self.threshold_m, (int, float)) and math.isfinite(self.threshold_m)) or (
            self.threshold_m <= 0
        ):
            raise ConfigError(
                f"{self._where}: threshold_m must be a positive number of metres, got {self.threshold_m!r}"
            )
        names = (self.parent, self.large, self.small)
        if len(set(names)) != 3 or not all(isinstance(n, str) and n for n in names):
            raise ConfigError(
                f"{self._where}: parent, large and small must be three different class names, got {names}"
            )

    @property
    def _where(self) -> str:
        return str(self.path) if self.path else "size rules"

    @property
    def derived(self) -> tuple[str, str]:
        """The derived class names, ``(large, small)``."""
        return (self.large, self.small)

    def classify(self, larger_m: np.ndarray) -> np.ndarray:
        """``large`` / ``small`` for each larger dimension in metres (``parent`` where it is ``nan``)."""
        larger = np.asarray(larger_m, dtype=np.float64)
        out = np.where(larger >= self.threshold_m, self.large, self.small).astype(object)
        out[~np.isfinite(larger)] = self.parent
        return out.astype(str)


def rules_from_dict(data: Any, path: Path | None = None) -> SizeRules:
    """Build and check :class:`SizeRules` from the parsed YAML (see ``configs/aircraft-sizes.yaml``).

    Raises:
        ConfigError: a missing or malformed entry (the message names the file and the entry).
    """
    where = str(path) if path else "size rules"
    if not isinstance(data, Mapping) or "threshold_m" not in data:
        raise ConfigError(f"{where}: expected a mapping with `threshold_m`, got {type(data).__name__}")
    unknown = set(data) - {"parent", "large", "small", "threshold_m", "types"}
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {sorted(unknown)}")
    types = []
    for entry in data.get("types") or []:
        if not isinstance(entry, Mapping) or set(entry) != {"name", "category", "length_m", "span_m"}:
            raise ConfigError(
                f"{where}: each of `types` needs name, category, length_m, span_m; got {entry!r}"
            )
        if entry["category"] not in CATEGORIES:
            raise ConfigError(
                f"{where}: type {entry['name']!r} has category {entry['category']!r}, not one of {CATEGORIES}"
            )
        try:
            length, span = float(entry["length_m"]), float(entry["span_m"])
        except (TypeError, ValueError) as e:
            raise ConfigError(f"{where}: type {entry['name']!r}: sizes must be numbers ({e})") from e
        if not (length > 0 and span > 0):
            raise ConfigError(
                f"{where}: type {entry['name']!r}: sizes must be positive, got {length}, {span}"
            )
        types.append(AircraftType(str(entry["name"]), str(entry["category"]), length, span))
    threshold = data["threshold_m"]
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise ConfigError(f"{where}: threshold_m must be a number of metres, got {threshold!r}")
    return SizeRules(
        threshold_m=float(threshold),
        parent=str(data.get("parent", "aircraft")),
        large=str(data.get("large", "transport-aircraft")),
        small=str(data.get("small", "small-aircraft")),
        types=tuple(types),
        path=path,
    )


def load_size_rules(path: str | Path | None = None) -> SizeRules:
    """The rules of ``path`` (default: the shipped ``configs/aircraft-sizes.yaml``, read once per process).

    Raises:
        ConfigError: the file is missing, not YAML, or malformed (the message names it).
    """
    p = Path(path) if path is not None else config_path(SIZES_FILE)
    if not p.is_file():
        raise ConfigError(f"size rules file {p} not found")
    st = p.stat()
    return _read_cached(str(p.resolve()), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=8)
def _read_cached(path: str, mtime_ns: int, size: int) -> SizeRules:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ConfigError(f"{p}: cannot read the size rules ({' '.join(str(e).split())})") from e
    return rules_from_dict(data, path=p)


def derived_names(class_names: Sequence[str], rules: SizeRules | None) -> tuple[str, ...]:
    """The class names :func:`split_aircraft` appends to ``class_names`` (none without the parent class)."""
    if rules is None or rules.parent not in class_names:
        return ()
    return tuple(n for n in rules.derived if n not in class_names)


def measure(dets: Detections) -> Detections:
    """``dets`` with data columns ``length_m`` (longer side) and ``span_m`` (shorter side) in metres.

    Rounded to centimetres; both ``nan`` when the GSD is unknown (``meta["size_known"]`` says which). See the
    module docstring for what the sides of a rotated and of an axis-aligned footprint measure.
    """
    gsd = valid_gsd(dets.gsd)
    long_px, short_px = side_lengths(dets)
    scale = np.nan if gsd is None else gsd
    data = {**dets.data, LENGTH: np.round(long_px * scale, 2), SPAN: np.round(short_px * scale, 2)}
    return replace(dets, data=data, meta={**dets.meta, "size_known": gsd is not None})


def split_aircraft(dets: Detections, rules: SizeRules | None = None) -> Detections:
    """Re-label ``rules.parent`` detections by their larger dimension (``length_m``; measured when absent).

    ``class_names`` gain the derived names (appended: existing ids are stable) when ``rules.parent`` is one of
    them; otherwise ``dets`` come back measured but unchanged. With an unknown GSD the parent class stays.

    Args:
        dets: detections of one scene.
        rules: the split (default: :func:`load_size_rules`).
    """
    rules = rules or load_size_rules()
    if LENGTH not in dets.data:
        dets = measure(dets)
    if rules.parent not in dets.class_names:
        return dets
    names = dets.class_names + derived_names(dets.class_names, rules)
    parent = names.index(rules.parent)
    class_ids = dets.class_ids.copy()
    rows = np.flatnonzero(class_ids == parent)
    if len(rows) and valid_gsd(dets.gsd) is not None:
        called = rules.classify(np.asarray(dets.data[LENGTH], dtype=np.float64)[rows])
        class_ids[rows] = [names.index(c) for c in called]
        logger.debug(
            "%s: %d %s: %d %s, %d %s (threshold %.1f m)",
            dets.source or "scene",
            len(rows),
            rules.parent,
            int((called == rules.large).sum()),
            rules.large,
            int((called == rules.small).sum()),
            rules.small,
            rules.threshold_m,
        )
    return replace(dets, class_names=names, class_ids=class_ids)


def apply_sizes(dets: Detections, rules: SizeRules | None = None) -> Detections:
    """:func:`measure` then :func:`split_aircraft` (what :class:`~detector.pipeline.Detector` runs)."""
    return split_aircraft(measure(dets), rules)
