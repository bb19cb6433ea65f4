"""Our class list and the mapping of every public dataset's classes to it, loaded from ``configs/taxonomy.yaml``.

The class list is data, not a constant: the names (in class-id order), their colours and every source mapping
live in the YAML file, and a trained model carries its own output class names in its metadata
(:attr:`detector.backends.base.ModelMeta.names`). Code that handles detections reads the names from there
(``predictor.meta.names``, ``dets.class_names``); the taxonomy supplies the defaults (the names of model
files that predate ``names`` in their metadata), colours, descriptions and the label mappings.

The file holds three things (see its header):

* ``classes``: our classes in id order, each a name, an RGB ``colour`` and an optional ``description``. A
  class with ``derived_from: <parent>`` is computed after detection (e.g. aircraft split by measured size); no
  model outputs it and no source class maps to it, but writers know its colour.
* ``dota_v1``: the DOTA v1.0 class list in the output-channel order of DOTA-trained models, each with our
  class or ``ignore``: the one table the default class map of DOTA models (:meth:`Taxonomy.dota_class_map`),
  the training head remap (:meth:`Taxonomy.source_channels`) and the DOTA label mapping are derived from.
* ``datasets``: source class -> our class (or ``ignore``), per dataset.

A source class that is not in the table is an error that names the class and the file to edit, never a
silent drop: a new dataset must be mapped on purpose.
"""

from __future__ import annotations

import functools
import logging
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from detector.errors import TaxonomyError  # noqa: F401  (re-exported)
from detector.resources import config_path

logger = logging.getLogger(__name__)

#: The value that drops a source class on purpose.
IGNORE = "ignore"

#: File name of the default table under ``configs/`` (found with :func:`detector.resources.config_path`).
TAXONOMY_FILE = "taxonomy.yaml"

#: Colours for class names the taxonomy does not list (picked by a stable hash of the name).
FALLBACK_PALETTE: tuple[tuple[int, int, int], ...] = (
    (80, 255, 80),
    (255, 128, 0),
    (0, 128, 255),
    (255, 255, 255),
    (255, 0, 200),
    (160, 255, 0),
    (0, 255, 170),
    (255, 90, 0),
    (120, 120, 255),
    (255, 255, 120),
)

RGB = tuple[int, int, int]


def normalize_class(name: str) -> str:
    """Canonical spelling of a class name: lower case, spaces and underscores as hyphens, trimmed."""
    return "-".join(str(name).strip().lower().replace("_", " ").replace("-", " ").split())


def fallback_colour(name: str) -> RGB:
    """A colour for a class name the taxonomy does not list: the same for the same name in every run."""
    return FALLBACK_PALETTE[zlib.crc32(normalize_class(name).encode()) % len(FALLBACK_PALETTE)]


@dataclass(frozen=True)
class ClassInfo:
    """One of our classes as ``configs/taxonomy.yaml`` describes it.

    Attributes:
        name: the class name (normalised spelling, e.g. ``"small-vehicle"``).
        colour: RGB outline colour, each 0-255.
        description: what the class holds (free text, may be empty).
        derived_from: the parent class this one is computed from after detection, or ``None`` for a class a
            model outputs.
    """

    name: str
    colour: RGB
    description: str = ""
    derived_from: str | None = None


@dataclass(frozen=True)
class Taxonomy:
    """Our classes and the per-dataset mapping of source classes to them (or :data:`IGNORE`).

    Attributes:
        classes: the classes a model outputs, in class-id order (derived classes excluded). The default
            output names of models whose metadata predates ``ModelMeta.names``.
        table: dataset name -> {normalised source class -> our class or ``"ignore"``}.
        path: the file the table came from (named in every error), or ``None`` for an in-memory table.
        info: every class (derived ones too, after the others) -> its :class:`ClassInfo`.
        dota_v1: ``(DOTA v1.0 class, our class or "ignore")`` pairs in DOTA output-channel order; empty when
            the file has no ``dota_v1`` table.
    """

    classes: tuple[str, ...]
    table: dict[str, dict[str, str]] = field(default_factory=dict)
    path: Path | None = None
    info: dict[str, ClassInfo] = field(default_factory=dict)
    dota_v1: tuple[tuple[str, str], ...] = ()

    @property
    def _where(self) -> str:
        return str(self.path) if self.path else "the taxonomy table"

    @property
    def derived_classes(self) -> tuple[str, ...]:
        """Classes computed after detection (``derived_from`` set), in file order."""
        return tuple(n for n, c in self.info.items() if c.derived_from is not None)

    @property
    def all_classes(self) -> tuple[str, ...]:
        """:attr:`classes` followed by :attr:`derived_classes`."""
        return self.classes + tuple(n for n in self.derived_classes if n not in self.classes)

    def colour(self, name: str) -> RGB:
        """RGB colour of a class: from the table, else :func:`fallback_colour` (stable per name)."""
        c = self.info.get(name) or self.info.get(normalize_class(name))
        return c.colour if c is not None else fallback_colour(name)

    def datasets(self) -> tuple[str, ...]:
        """Names of the datasets the table knows."""
        return tuple(self.table)

    def map(self, dataset: str, source_cls: str) -> str:
        """Our class for ``source_cls`` of ``dataset``, or ``"ignore"``.

        Raises:
            TaxonomyError: the dataset or the class is not in the table (the message names the file).
        """
        key = normalize_class(dataset)
        mapping = self.table.get(key)
        if mapping is None:
            raise TaxonomyError(
                f"dataset {dataset!r} is not in {self._where}; add a `{key}:` mapping there "
                f"(known datasets: {', '.join(self.table) or 'none'})"
            )
        ours = mapping.get(normalize_class(source_cls))
        if ours is None:
            raise TaxonomyError(
                f"class {source_cls!r} of dataset {dataset!r} is not mapped in {self._where}; add it under "
                f"`{key}:` as one of {', '.join(self.classes)} or {IGNORE}"
            )
        return ours

    # -- DOTA v1.0, the source of the pretrained models -----------------------------------------------------

    @property
    def dota_v1_names(self) -> tuple[str, ...]:
        """DOTA v1.0 class names (normalised spelling) in output-channel order."""
        return tuple(src for src, _ in self.dota_v1)

    def is_dota_v1(self, raw_names: Sequence[str]) -> bool:
        """Whether a model's raw class names are DOTA v1.0's, in its channel order (any spelling)."""
        return bool(self.dota_v1) and [normalize_class(n) for n in raw_names] == list(self.dota_v1_names)

    def dota_class_map(self) -> dict[int, str]:
        """DOTA v1.0 output channel -> our class, for the channels not ignored (the DOTA models' class map).

        Raises:
            TaxonomyError: the file has no ``dota_v1`` table.
        """
        if not self.dota_v1:
            raise TaxonomyError(f"{self._where} has no `dota_v1` table (DOTA v1.0 class list -> ours)")
        return {i: ours for i, (_, ours) in enumerate(self.dota_v1) if ours != IGNORE}

    def source_channels(self, names: Sequence[str] | None = None) -> list[int | None]:
        """The DOTA v1.0 output channel that starts each class of ``names`` (default :attr:`classes`).

        Training from a DOTA checkpoint copies the classification weights of these channels into the new
        head (the first DOTA class mapped to a class wins); ``None`` for a class no DOTA class maps to.

        Raises:
            TaxonomyError: the file has no ``dota_v1`` table.
        """
        cmap = self.dota_class_map()
        first: dict[str, int] = {}
        for i, ours in sorted(cmap.items()):
            first.setdefault(ours, i)
        return [first.get(n) for n in (self.classes if names is None else names)]


def _parse_colour(value: Any, name: str, where: str) -> RGB:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255 for v in value)
    ):
        raise TaxonomyError(
            f"{where}: class {name!r} colour must be three integers 0-255 (RGB), got {value!r}"
        )
    return (int(value[0]), int(value[1]), int(value[2]))


def _parse_classes(entries: Any, where: str) -> dict[str, ClassInfo]:
    if not isinstance(entries, list) or not entries:
        raise TaxonomyError(f"{where}: `classes` must be a non-empty list, got {entries!r}")
    info: dict[str, ClassInfo] = {}
    for entry in entries:
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, Mapping) or "name" not in entry:
            raise TaxonomyError(f"{where}: each of `classes` needs a `name`, got {entry!r}")
        unknown = set(entry) - {"name", "colour", "color", "description", "derived_from"}
        if unknown:
            raise TaxonomyError(f"{where}: class {entry['name']!r} has unknown keys {sorted(unknown)}")
        name = normalize_class(entry["name"])
        if not name or name == IGNORE:
            raise TaxonomyError(f"{where}: {entry['name']!r} cannot be a class name")
        if name in info:
            raise TaxonomyError(f"{where}: class {name!r} is listed twice")
        colour = entry.get("colour", entry.get("color"))
        parent = entry.get("derived_from")
        info[name] = ClassInfo(
            name=name,
            colour=fallback_colour(name) if colour is None else _parse_colour(colour, name, where),
            description=str(entry.get("description") or ""),
            derived_from=None if parent is None else normalize_class(parent),
        )
    for c in info.values():
        if c.derived_from is not None:
            parent_info = info.get(c.derived_from)
            if parent_info is None or parent_info.derived_from is not None:
                raise TaxonomyError(
                    f"{where}: class {c.name!r} is derived_from {c.derived_from!r}, which is not a class a "
                    "model outputs"
                )
    return info


def _parse_mapping(mapping: Any, what: str, classes: tuple[str, ...], where: str) -> dict[str, str]:
    if not isinstance(mapping, Mapping):
        raise TaxonomyError(f"{where}: {what} must map source classes to ours, got {mapping!r}")
    out: dict[str, str] = {}
    for src, ours in mapping.items():
        ours = normalize_class(str(ours))
        if ours != IGNORE and ours not in classes:
            raise TaxonomyError(
                f"{where}: {what} maps {src!r} to {ours!r}, which is not one of {list(classes)} or {IGNORE!r}"
            )
        out[normalize_class(str(src))] = ours
    return out


def taxonomy_from_dict(data: Any, path: Path | None = None) -> Taxonomy:
    """Build and validate a :class:`Taxonomy` from the parsed YAML structure (see ``configs/taxonomy.yaml``).

    ``classes`` entries are mappings (``name``, ``colour``, ``description``, ``derived_from``) or plain names
    (which get a fallback colour).

    Raises:
        TaxonomyError: anything malformed (the message names the file and the entry).
    """
    where = str(path) if path else "taxonomy mapping"
    if not isinstance(data, dict) or "datasets" not in data or "classes" not in data:
        raise TaxonomyError(
            f"{where}: expected a mapping with `classes` and `datasets`, got "
            f"{sorted(data) if isinstance(data, dict) else type(data).__name__}"
        )
    info = _parse_classes(data["classes"], where)
    classes = tuple(n for n, c in info.items() if c.derived_from is None)
    table = {
        normalize_class(str(ds)): _parse_mapping(m, f"dataset {ds!r}", classes, where)
        for ds, m in (data["datasets"] or {}).items()
    }
    dota = data.get("dota_v1")
    dota_v1: tuple[tuple[str, str], ...] = ()
    if dota is not None:
        dota_v1 = tuple(_parse_mapping(dota, "`dota_v1`", classes, where).items())
        if len(dota_v1) != len(dota):
            raise TaxonomyError(f"{where}: `dota_v1` lists a DOTA class twice (in two spellings)")
    return Taxonomy(classes=classes, table=table, path=path, info=info, dota_v1=dota_v1)


def default_taxonomy_path() -> Path:
    """``configs/taxonomy.yaml`` of the checkout, or the copy inside the installed package."""
    return config_path(TAXONOMY_FILE)


@functools.cache
def default_taxonomy() -> Taxonomy:
    """The shipped table (:func:`default_taxonomy_path`), read once per process.

    Raises:
        TaxonomyError: the file is missing or malformed.
    """
    return _read(default_taxonomy_path())


def load_taxonomy(path: str | Path | None = None) -> Taxonomy:
    """Load a class table; ``None`` for the shipped one (:func:`default_taxonomy`, read once).

    Other files are read once per content version too (cached by path, modification time and size), so callers
    may ask for a table as often as they like.

    Raises:
        TaxonomyError: the file is missing or malformed (the message names it).
    """
    if path is None:
        return default_taxonomy()
    p = Path(path)
    if p.resolve() == default_taxonomy_path().resolve():
        return default_taxonomy()
    if not p.is_file():
        raise TaxonomyError(f"taxonomy file {p} not found")
    st = p.stat()
    return _read_cached(str(p), st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=16)
def _read_cached(path: str, mtime_ns: int, size: int) -> Taxonomy:
    return _read(Path(path))


def _read(p: Path) -> Taxonomy:
    if not p.is_file():
        raise TaxonomyError(f"taxonomy file {p} not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise TaxonomyError(f"{p}: not valid YAML ({' '.join(str(e).split())})") from e
    return taxonomy_from_dict(data, path=p)


def default_classes() -> tuple[str, ...]:
    """The classes of the shipped table a model outputs, in class-id order (the names of older model files)."""
    return default_taxonomy().classes


def class_colour(name: str, taxonomy: Taxonomy | None = None) -> RGB:
    """RGB colour of a class name in ``taxonomy`` (default: the shipped one), else a stable fallback."""
    return (taxonomy or default_taxonomy()).colour(name)
