"""Source classes of every public dataset -> our taxonomy.

The table itself lives in ``configs/taxonomy.yaml`` (one mapping per dataset); this module only loads and
applies it. A class that is not in the table is an error that names the class and the file to edit, never a
silent drop: a new dataset must be mapped on purpose.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from detector.errors import TaxonomyError  # noqa: F401  (re-exported)
from detector.backends.base import TAXONOMY

logger = logging.getLogger(__name__)

#: The value that drops a source class on purpose.
IGNORE = "ignore"

#: ``configs/taxonomy.yaml`` of a source checkout (the default table).
DEFAULT_TAXONOMY_PATH = Path(__file__).resolve().parents[1] / "configs" / "taxonomy.yaml"




def normalize_class(name: str) -> str:
    """Canonical spelling of a class name: lower case, spaces and underscores as hyphens, trimmed."""
    return "-".join(str(name).strip().lower().replace("_", " ").replace("-", " ").split())


@dataclass(frozen=True)
class Taxonomy:
    """Per-dataset mapping of source classes to our classes (or :data:`IGNORE`).

    Attributes:
        classes: our class names in class-id order (equal to :data:`detector.backends.base.TAXONOMY`).
        table: dataset name -> {normalised source class -> our class or ``"ignore"``}.
        path: the file the table came from (named in every error), or ``None`` for an in-memory table.
    """

    classes: tuple[str, ...]
    table: dict[str, dict[str, str]] = field(default_factory=dict)
    path: Path | None = None

    @property
    def _where(self) -> str:
        return str(self.path) if self.path else "the taxonomy table"

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


def taxonomy_from_dict(data: dict, path: Path | None = None) -> Taxonomy:
    """Build and validate a :class:`Taxonomy` from the parsed YAML structure (see ``configs/taxonomy.yaml``)."""
    where = str(path) if path else "taxonomy mapping"
    if not isinstance(data, dict) or "datasets" not in data:
        raise TaxonomyError(
            f"{where}: expected a mapping with `classes` and `datasets`, got {type(data).__name__}"
        )
    classes = tuple(str(c) for c in data.get("classes", TAXONOMY))
    if classes != TAXONOMY:
        raise TaxonomyError(
            f"{where}: `classes` must be {list(TAXONOMY)} (model class-id order), got {list(classes)}"
        )
    table: dict[str, dict[str, str]] = {}
    for ds, mapping in (data["datasets"] or {}).items():
        if not isinstance(mapping, dict):
            raise TaxonomyError(f"{where}: dataset {ds!r} must map source classes to ours, got {mapping!r}")
        norm: dict[str, str] = {}
        for src, ours in mapping.items():
            ours = str(ours)
            if ours != IGNORE and ours not in classes:
                raise TaxonomyError(
                    f"{where}: dataset {ds!r} maps {src!r} to {ours!r}, which is not one of {list(classes)} or {IGNORE!r}"
                )
            norm[normalize_class(str(src))] = ours
        table[normalize_class(str(ds))] = norm
    return Taxonomy(classes=classes, table=table, path=path)


def load_taxonomy(path: str | Path | None = None) -> Taxonomy:
    """Load the class table (default ``configs/taxonomy.yaml``).

    Raises:
        TaxonomyError: the file is missing or malformed (the message names it).
    """
    p = Path(path) if path is not None else DEFAULT_TAXONOMY_PATH
    if not p.is_file():
        raise TaxonomyError(f"taxonomy file {p} not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise TaxonomyError(f"{p}: not valid YAML ({e})") from e
    return taxonomy_from_dict(data, path=p)
