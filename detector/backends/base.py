"""What every backend provides: the :class:`Predictor` protocol and the model metadata it carries.

A predictor takes a batch of tiles and returns one :class:`~detector.detections.Detections` per tile,
in **tile pixel** coordinates (no CRS, no transform). The tiler calls nothing else, so it never needs to know
which backend it drives.

Tiles: ``uint8`` array of shape ``(B, S, S, 3)``, RGB, values 0-255, ``S`` a multiple of 32, ``meta.imgsz``
unless the user chose another tile size (models exported with a fixed input size accept only their
``imgsz`` and raise ``ValueError`` otherwise); the pipeline pads and resamples before calling.
Normalisation to the network's input range is the backend's job, as the metadata says
(``meta.normalization``).

Tiles per call: a predictor may say how many tiles it runs best in one call (``preferred_batch``); the pipeline
uses it unless ``TileConfig.batch`` forces a number (:func:`preferred_batch`). The shipped backends say
:data:`CPU_BATCH` per stream on the CPU (:class:`Streams`: a few tiles run at once, each on its share of the
threads) and :data:`GPU_BATCH` on CUDA.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from detector.detections import Detections
from detector.taxonomy import default_classes

#: Metadata key under which a model file stores :class:`ModelMeta` as JSON (ONNX ``metadata_props``).
META_KEY = "detector_meta"
#: Tiles per model call on the CPU. The 16 tiles of 736 px of the 2560 px headline scene on 2 cores: bare
#: ``session.run`` 1.75 s in calls of 1, 1.80 s of 4, 1.98 s of 8; ``Detector.predict`` 2.0 s vs 2.2-2.3 s
#: (onnxruntime fp32), 1.56 s vs 1.64 s (OpenVINO INT8). A tile's activations stay in the cache, and a call holds
#: one tile's buffers instead of eight.
CPU_BATCH = 1
#: Model calls run at once on the CPU (:class:`Streams`), each with its share of the threads. A small network
#: uses one core better than two: the same 16 tiles of 736 px on 2 cores, bare onnxruntime, 2.44 s one call
#: at a time on 2 intra-op threads, 1.85-1.90 s two at a time on 1 thread each; OpenVINO INT8 1.48 s -> 1.29 s
#: (medians of 5, alternated in one process; BENCHMARKS.md (b) has the pipeline's figures).
CPU_STREAMS = 2
#: Tiles per model call on a GPU (CUDA), where one call of many tiles keeps the device busy.
GPU_BATCH = 8
#: Tiles per model call for a predictor that does not say (no ``preferred_batch``): what the pipeline always ran.
DEFAULT_BATCH = 8


@dataclass(frozen=True)
class ModelMeta:
    """Everything inference needs to know about a model file, stored inside the file itself.

    Attributes:
        raw_names: the network's own output classes, in output-channel order (15 DOTA names for the
            DOTA-trained models, our 4 names for our own model).
        class_map: raw class index -> output class name (one of ``names``); raw classes absent from it are
            dropped at decode time.
        imgsz: square network input size in pixels (the tile size by default).
        task: ``"detect"`` (axis-aligned boxes) or ``"obb"`` (rotated boxes).
        normalization: how RGB uint8 pixels become network input; ``"rgb/255"`` for Ultralytics models.
        gsd: training ground sample distance in metres per pixel, or ``None`` when unknown.
        end_to_end: the network output is already NMS-free ``(B, K, 6|7)`` (YOLO26 style) instead of the
            raw ``(B, 4+nc(+1), A)`` head.
        name: a human-readable model name (e.g. ``"yolov8n-obb-dota"``).
        extra: anything else worth keeping (training data, export versions, ...).
        names: the model's output class names in class-id order (what ``Detections.class_names`` of its
            predictions holds). Metadata written before this field existed lacks it: it then defaults to the
            classes of ``configs/taxonomy.yaml`` (:func:`detector.taxonomy.default_classes`).
        gsd_range: ``(min, max)`` ground sample distance of the training imagery in m/px, or ``None`` when
            unknown.
    """

    raw_names: tuple[str, ...]
    class_map: dict[int, str]
    imgsz: int
    task: str
    normalization: str = "rgb/255"
    gsd: float | None = None
    end_to_end: bool = False
    name: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    names: tuple[str, ...] = ()
    gsd_range: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.task not in ("detect", "obb"):
            raise ValueError(f"ModelMeta.task must be 'detect' or 'obb', got {self.task!r}")
        if self.imgsz <= 0 or self.imgsz % 32:
            raise ValueError(f"ModelMeta.imgsz must be a positive multiple of 32, got {self.imgsz!r}")
        names = tuple(str(n) for n in self.names) if self.names else default_classes()
        if len(set(names)) != len(names):
            raise ValueError(f"ModelMeta.names lists a class twice: {names}")
        cmap = {int(k): str(v) for k, v in self.class_map.items()}
        for k, v in cmap.items():
            if not 0 <= k < len(self.raw_names):
                raise ValueError(f"class_map index {k} is outside the {len(self.raw_names)} raw classes")
            if v not in names:
                raise ValueError(f"class_map maps to {v!r}, which is not one of the model's names {names}")
        object.__setattr__(self, "class_map", cmap)
        object.__setattr__(self, "raw_names", tuple(self.raw_names))
        object.__setattr__(self, "names", names)
        if self.gsd_range is not None:
            lo, hi = (float(v) for v in self.gsd_range)
            if not 0 < lo <= hi:
                raise ValueError(
                    f"ModelMeta.gsd_range must be (min, max) with 0 < min <= max, got {self.gsd_range!r}"
                )
            object.__setattr__(self, "gsd_range", (lo, hi))

    def to_json(self) -> str:
        """The metadata as JSON text (what a model file stores under :data:`META_KEY`)."""
        d = asdict(self)
        d["class_map"] = {str(k): v for k, v in self.class_map.items()}
        d["names"] = list(self.names)
        d["gsd_range"] = None if self.gsd_range is None else list(self.gsd_range)
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelMeta:
        """Parse :meth:`to_json` output; metadata of older files (no ``names``, no ``gsd_range``) is accepted.

        Raises:
            ValueError: not JSON, not an object, unknown or missing fields, or invalid values.
        """
        d = json.loads(text)
        if not isinstance(d, dict):
            raise ValueError(f"model metadata must be a JSON object, got {type(d).__name__}")
        d["class_map"] = {int(k): v for k, v in d.get("class_map", {}).items()}
        d["names"] = tuple(d.get("names") or ())
        if d.get("gsd_range") is not None:
            d["gsd_range"] = tuple(d["gsd_range"])
        return cls(**d)


@runtime_checkable
class Predictor(Protocol):
    """A model that turns a batch of tiles into detections. See the module docstring for the contract.

    Optional attributes the pipeline reads when a predictor has them (a predictor without them is still one):
    ``preferred_batch`` (int >= 1, tiles per call when ``TileConfig.batch`` is ``None``, see
    :func:`preferred_batch`), ``fixed_size`` and ``rect_tiles`` (the tile sizes it runs, see
    :class:`~detector.pipeline.Detector`), and ``prepare(shape)`` (get ready for batches of tiles of
    ``shape``, ``(B, S, S, 3)``, before the first one: the pipeline calls it while the first tiles are read).
    """

    meta: ModelMeta

    def predict_batch(self, tiles: np.ndarray) -> list[Detections]:
        """``(B, S, S, 3)`` uint8 RGB tiles -> ``B`` detections in tile pixels, class names ``meta.names``."""
        ...


def preferred_batch(predictor: Any, batch: int | None = None) -> int:
    """Tiles per model call: ``batch`` when given (``TileConfig.batch``), else the predictor's own
    ``preferred_batch``, else :data:`DEFAULT_BATCH` for a predictor that does not say.

    Raises:
        ValueError: the predictor's ``preferred_batch`` is not a positive integer (the message names its type).
    """
    if batch is not None:
        return int(batch)
    own = getattr(predictor, "preferred_batch", None)
    if own is None:
        return DEFAULT_BATCH
    if isinstance(own, bool) or int(own) != own or own < 1:
        raise ValueError(
            f"{type(predictor).__name__}.preferred_batch must be a positive integer, got {own!r}"
        )
    return int(own)


def cpu_streams(threads: int, streams: int | None = None) -> int:
    """How many model calls run at once on ``threads`` CPU threads: ``streams`` (``None``:
    :data:`CPU_STREAMS`), at most one per thread.

    Raises:
        ValueError: ``streams`` is below 1.
    """
    n = CPU_STREAMS if streams is None else int(streams)
    if n < 1:
        raise ValueError(f"streams must be at least 1 (or None for {CPU_STREAMS}), got {streams!r}")
    return max(1, min(n, int(threads)))


class Streams:
    """Runs the tiles of one batch as ``n`` model calls at once, in threads (onnxruntime and OpenVINO release the
    GIL while they run), the tiles split in order into ``n`` contiguous parts.

    ``call(tiles, stream)`` runs one part; ``stream`` (0 .. n-1) is distinct among the calls running at once, so
    a backend may keep one infer request per stream. A batch of one tile, or ``n == 1``, runs in the caller's
    thread.
    """

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"Streams needs at least 1 stream, got {n!r}")
        self.n = int(n)
        self._pool: ThreadPoolExecutor | None = None

    def bounds(self, count: int) -> list[int]:
        """Where a batch of ``count`` tiles is cut into its parts: ``[0, ..., count]``, one part per stream at
        most, sizes as even as they can be."""
        parts = max(1, min(self.n, count))
        return [int(b) for b in np.linspace(0, count, parts + 1).round()]

    def map(self, call: Callable[[np.ndarray, int], list[Detections]], tiles: np.ndarray) -> list[Detections]:
        """``call`` over the parts of ``tiles``: one :class:`Detections` per tile, in tile order."""
        bounds = self.bounds(len(tiles))
        if len(bounds) <= 2:
            return call(tiles, 0)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=self.n, thread_name_prefix="detector-model")
        futures = [
            self._pool.submit(call, tiles[a:b], k)
            for k, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))
        ]
        wait(futures)  # every part ends before an error is raised: no call outlives the batch
        return [dets for future in futures for dets in future.result()]
