"""The one result type of the package: :class:`Detections`.

Data contract (read this once, it holds everywhere in the package):

* Coordinates are **scene pixels** of the full-resolution raster: ``x`` is the column, ``y`` the row,
  ``(0, 0)`` is the top-left corner of the top-left pixel, ``y`` grows downwards. Backends return
  detections in *tile* pixels; the pipeline shifts and scales them into scene pixels before merging.
* ``xyxy`` is always present: the axis-aligned box ``(x_min, y_min, x_max, y_max)``, float64. For a rotated
  detection out of a backend it is the box enclosing the rotated rectangle; :class:`~detector.pipeline.Detector`
  then makes it the object's own box (:func:`detector.geometry.object_boxes`: the box of the cross of fuselage
  and wings for aircraft, of the rotor disc for helicopters, the enclosing box for vehicles).
* ``xywhr`` is present for models of the OBB task, else ``None``: ``(cx, cy, w, h, r)``, float64, with ``r``
  in radians, Ultralytics' convention (a positive angle turns the ``w`` side clockwise on screen, because
  ``y`` grows downwards). Corners come from :func:`detector.geometry.corners`.
* ``scores`` float32 in ``[0, 1]``; ``class_ids`` int64 indexing ``class_names``.
* ``crs`` / ``transform``: the scene's CRS (``rasterio.crs.CRS`` or ``None`` for an image without
  georeferencing) and the affine pixel -> CRS transform of the full-resolution scene (``None`` when the image
  has no georeferencing: then outputs are in pixel coordinates, and writers say so).
* ``gsd``: ground sample distance of the scene in metres per pixel, or ``None`` when unknown.
* ``data``: optional per-detection columns (name -> numpy array of length ``N``), sliced and concatenated
  with the boxes (supervision's ``Detections.data``): e.g. ``length_m``, ``span_m``, ``runner_up_class``.
* ``meta``: per-scene facts (scene size, tiling, model), not per detection.

The class is a container: it validates itself, supports ``len``, boolean / integer-array / slice
indexing and :meth:`concatenate`. Conversions (from ONNX outputs, from Ultralytics results, to files) live
beside the backends and writers, not here; :meth:`to_geojson` and :meth:`to_geodataframe` are one-line
doors into :mod:`detector.writers`, imported when called.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Detections:
    """Detections of one scene (or one tile), as equal-length numpy arrays. See the module docstring."""

    xyxy: np.ndarray
    scores: np.ndarray
    class_ids: np.ndarray
    class_names: tuple[str, ...]
    xywhr: np.ndarray | None = None
    crs: Any = None
    transform: Any = None
    gsd: float | None = None
    source: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)
    data: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(self.scores, dtype=np.float32).reshape(-1)
        class_ids = np.asarray(self.class_ids, dtype=np.int64).reshape(-1)
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "scores", scores)
        object.__setattr__(self, "class_ids", class_ids)
        object.__setattr__(self, "class_names", tuple(self.class_names))
        n = len(xyxy)
        if len(scores) != n or len(class_ids) != n:
            raise ValueError(
                f"Detections arrays differ in length: xyxy {n}, scores {len(scores)}, class_ids {len(class_ids)}"
            )
        if self.xywhr is not None:
            xywhr = np.asarray(self.xywhr, dtype=np.float64).reshape(-1, 5)
            if len(xywhr) != n:
                raise ValueError(f"Detections.xywhr has {len(xywhr)} rows, expected {n}")
            object.__setattr__(self, "xywhr", xywhr)
        columns = {}
        for key, values in dict(self.data).items():
            col = np.asarray(values)
            if col.ndim == 0 or len(col) != n:
                raise ValueError(
                    f"Detections.data[{key!r}] has {col.shape[0] if col.ndim else 'no'} rows, expected {n}"
                )
            columns[str(key)] = col
        object.__setattr__(self, "data", columns)
        if n and (class_ids.min() < 0 or class_ids.max() >= len(self.class_names)):
            raise ValueError(
                f"class_ids must index class_names ({len(self.class_names)} names), "
                f"got ids in [{class_ids.min()}, {class_ids.max()}]"
            )
        if n and not np.isfinite(xyxy).all():
            raise ValueError("Detections.xyxy holds non-finite coordinates")

    def __len__(self) -> int:
        return len(self.scores)

    def __repr__(self) -> str:
        counts = ", ".join(
            f"{name}={int((self.class_ids == i).sum())}"
            for i, name in enumerate(self.class_names)
            if (self.class_ids == i).any()
        )
        parts = [f"n={len(self)}", "rotated" if self.is_rotated else "axis-aligned"]
        if counts:
            parts.append(counts)
        if self.source:
            parts.append(f"source={self.source!r}")
        if self.crs is not None:
            parts.append(f"crs={_short_crs(self.crs)}")
        if self.gsd is not None:
            parts.append(f"gsd={self.gsd:.3g} m")
        if self.data:
            parts.append(f"data={sorted(self.data)}")
        return f"Detections({', '.join(parts)})"

    @property
    def class_name(self) -> np.ndarray:
        """The class name of every detection, ``(N,)`` array of ``str``."""
        return np.asarray(self.class_names, dtype=object)[self.class_ids].astype(str)

    def __getitem__(self, index: Any) -> Detections:
        if isinstance(index, (int, np.integer)):
            index = [int(index)]
        return replace(
            self,
            xyxy=self.xyxy[index],
            scores=self.scores[index],
            class_ids=self.class_ids[index],
            xywhr=None if self.xywhr is None else self.xywhr[index],
            data={k: v[index] for k, v in self.data.items()},
        )

    def to_geojson(self, *, keep_crs: bool = False) -> dict[str, Any]:
        """A GeoJSON ``FeatureCollection`` dict, the same as the GeoJSON writer writes
        (:func:`detector.writers.to_geojson`: RFC 7946 lon/lat unless ``keep_crs``; image pixels, marked,
        for an image without georeferencing)."""
        from detector.writers import to_geojson

        return to_geojson(self, keep_crs=keep_crs)

    def to_geodataframe(self) -> Any:
        """A ``geopandas.GeoDataFrame``, one row per detection (needs the ``geo`` extra).

        Columns ``class``, ``class_id``, ``score``, ``length_m``, ``width_m``, ``heading_deg``, ``source``,
        ``px_xmin .. px_ymax``, every ``data`` column, and the footprint ``geometry`` in the scene CRS (no CRS,
        image pixels, without georeferencing). See :func:`detector.writers.to_geodataframe`.

        Raises:
            ImportError: geopandas is not installed (the message names the ``geo`` extra).
        """
        from detector.writers import to_geodataframe

        return to_geodataframe(self)

    @property
    def is_rotated(self) -> bool:
        """True when the detections carry rotated boxes (``xywhr``)."""
        return self.xywhr is not None

    @classmethod
    def empty(cls, class_names: Sequence[str], rotated: bool = False, **kwargs: Any) -> Detections:
        """No detections, with the given class names (and an empty ``xywhr`` when ``rotated``)."""
        return cls(
            xyxy=np.zeros((0, 4)),
            scores=np.zeros(0, np.float32),
            class_ids=np.zeros(0, np.int64),
            class_names=tuple(class_names),
            xywhr=np.zeros((0, 5)) if rotated else None,
            **kwargs,
        )

    @classmethod
    def concatenate(cls, parts: Sequence[Detections]) -> Detections:
        """Join detections that share class names (and scene metadata, taken from the first part)."""
        if not parts:
            raise ValueError("Detections.concatenate needs at least one part, got none")
        first = parts[0]
        for p in parts[1:]:
            if p.class_names != first.class_names:
                raise ValueError(
                    f"cannot concatenate class names {p.class_names!r} with {first.class_names!r}"
                )
            if p.is_rotated != first.is_rotated:
                raise ValueError("cannot concatenate rotated and axis-aligned detections")
            if set(p.data) != set(first.data):
                raise ValueError(
                    f"cannot concatenate data columns {sorted(p.data)} with {sorted(first.data)}"
                )
        return replace(
            first,
            xyxy=np.concatenate([p.xyxy for p in parts]),
            scores=np.concatenate([p.scores for p in parts]),
            class_ids=np.concatenate([p.class_ids for p in parts]),
            xywhr=np.concatenate([p.xywhr for p in parts]) if first.is_rotated else None,  # type: ignore[misc]
            data={k: np.concatenate([p.data[k] for p in parts]) for k in first.data},
        )


def _short_crs(crs: Any) -> str:
    """``EPSG:n`` when the CRS has a code, else the start of its text (a repr stays one short line)."""
    epsg = crs.to_epsg() if hasattr(crs, "to_epsg") else None
    if epsg:
        return f"EPSG:{epsg}"
    text = " ".join(str(crs).split())
    return text if len(text) <= 40 else text[:37] + "..."
