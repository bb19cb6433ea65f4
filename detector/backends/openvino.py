"""The OpenVINO backend: :class:`OpenVinoPredictor` runs our ``.onnx`` files (fp32 or INT8) on the CPU.

The same file onnxruntime runs: OpenVINO's ``Core.read_model`` reads the ONNX graph and keeps its
``metadata_props`` (our :class:`~detector.backends.base.ModelMeta` under ``META_KEY``) in the model's runtime
info, so nothing besides the ``.onnx`` is needed. The model is compiled for the CPU with ``streams`` streams
(:class:`~detector.backends.base.Streams`: that many tiles run at once, one infer request each; one by default,
with a latency hint), float32 precision for the layers that are not quantised (OpenVINO would otherwise pick bf16
on CPUs that have it, which moves scores by more than onnxruntime's float32) and ``threads`` inference threads,
as onnxruntime's intra-op threads are set. A file with dynamic axes is compiled once per input shape it meets
(:data:`STATIC_SHAPES` of them kept), with that shape fixed: OpenVINO's CPU kernels for a static shape are
faster (INT8 model, 736 px tiles, 2 cores: 87 ms against 101 ms per tile with the dynamic compile), and a
scene's tiles share one shape; a compile costs about what the dynamic one did at load (~1 s). Output decoding
is :mod:`detector.backends.decode`, shared with onnxruntime, so both runtimes return the same detections up to
floating point.

Needs the ``[openvino]`` extra (``pip install 'overhead-detector[openvino]'``); importing this module does not
import OpenVINO, building a predictor does (and says how to install it when it is missing).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from detector.backends.base import CPU_BATCH, META_KEY, ModelMeta, Streams, cpu_streams
from detector.backends.decode import (
    check_tile_size,
    check_tiles,
    class_lut,
    decode_batch,
    meta_from_graph,
    to_input,
)
from detector.detections import Detections
from detector.errors import ModelError

log = logging.getLogger(__name__)

#: Input shapes a dynamic-axes model keeps a compiled copy for (least recently used dropped first).
STATIC_SHAPES = 4
#: Environment variable naming the folder of OpenVINO's model cache (empty: no cache); see :func:`cache_dir`.
CACHE_ENV = "DETECTOR_OPENVINO_CACHE"


def cache_dir() -> Path | None:
    """Where compiled models are kept between runs (OpenVINO's model cache: a later process loads a model
    compiled before in ~0.2 s instead of compiling it in ~1 s): ``$DETECTOR_OPENVINO_CACHE``, else
    ``$XDG_CACHE_HOME/detector/openvino`` (``~/.cache/detector/openvino``); ``None`` when the variable is set
    but empty (no cache). The cache is keyed by the model, its input shape and the settings, so a changed file
    is compiled afresh."""
    value = os.environ.get(CACHE_ENV)
    if value is not None:
        return Path(value).expanduser() if value.strip() else None
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "detector" / "openvino"


def _openvino(path: Path) -> Any:
    try:
        import openvino
    except ImportError as e:
        raise ModelError(
            f"{path}: the OpenVINO runtime is not installed (pip install 'overhead-detector[openvino]', or "
            f"use --runtime onnxruntime): {e}"
        ) from e
    return openvino


def _shape(partial: Any) -> list[Any]:
    """An OpenVINO partial shape as a list: fixed dimensions as ints, dynamic ones as ``None``."""
    return [int(d.get_length()) if d.is_static else None for d in partial]


def read_openvino_model(path: str | Path) -> tuple[Any, Any, ModelMeta]:
    """``(core, model, meta)`` for an ``.onnx`` file read by OpenVINO, its metadata checked against the graph.

    Raises:
        ModelError: OpenVINO is missing, the file is missing or not an ONNX model, or its metadata is missing
            or does not match the graph.
    """
    p = Path(path)
    ov = _openvino(p)
    if not p.is_file():
        raise ModelError(f"model file not found: {p}")
    core = ov.Core()
    try:
        model = core.read_model(str(p))
    except Exception as e:  # OpenVINO raises RuntimeError/GeneralFailure for unreadable files
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise ModelError(f"{p} is not a readable ONNX model: {type(e).__name__}: {first}") from e
    key = ["framework", META_KEY]
    text = str(model.get_rt_info(key).value) if model.has_rt_info(key) else None
    meta = meta_from_graph(
        text,
        [_shape(i.get_partial_shape()) for i in model.inputs],
        [_shape(o.get_partial_shape()) for o in model.outputs],
        p,
    )
    return core, model, meta


class OpenVinoPredictor:
    """A model exported by :func:`training.export.export_onnx` (or quantised by ``detector quantize``), run
    with OpenVINO on the CPU.

    Implements :class:`~detector.backends.base.Predictor`; the tile sizes it runs are those of
    :class:`~detector.backends.onnx.OnnxPredictor` (any multiple of 32 unless the file fixes its input size).

    Args:
        path: the ``.onnx`` file (its metadata says everything else).
        device: ``"cpu"``; ``"cuda"`` is answered with a warning and the CPU (OpenVINO's GPU plugin is for
            Intel GPUs and is not used here).
        conf: score threshold (kept when ``score > conf``).
        iou: NMS IoU threshold (unused by end-to-end models).
        max_det: at most this many detections per tile.
        threads: OpenVINO inference threads (``None``: all CPUs), shared by the streams.
        streams: tiles run at once, one infer request each, at most ``threads`` (``None``: 1, with a latency
            hint: OpenVINO spreads one tile over the threads well, and two streams measured no faster in the
            pipeline on the 2560 px headline scene, 2 cores: INT8 1.48 vs 1.63 s and 1.57 vs 1.53 s in two
            alternated runs, while onnxruntime gains 1.06x-1.17x from two).

    Raises:
        ModelError: see :func:`read_openvino_model`, or the model does not compile.
        ValueError: an unknown device or normalisation.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        device: str = "cpu",
        conf: float = 0.25,
        iou: float = 0.6,
        max_det: int = 300,
        threads: int | None = None,
        streams: int | None = None,
    ) -> None:
        self.path = Path(path)
        dev = str(device).lower()
        if dev.startswith("cuda"):
            log.warning("device=%r asked for, but the OpenVINO runtime runs on the CPU here", device)
        elif dev != "cpu":
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
        core, model, self.meta = read_openvino_model(self.path)
        if self.meta.normalization != "rgb/255":
            raise ValueError(f"{self.path}: unsupported normalization {self.meta.normalization!r}")
        self.conf, self.iou, self.max_det = float(conf), float(iou), int(max_det)
        self.lut = class_lut(self.meta)
        dims = _shape(model.input(0).get_partial_shape())[2:]
        #: the input side the file is fixed to, ``None`` when any multiple of 32 runs
        self.fixed_size = dims[0] if dims[0] is not None and dims[0] == dims[1] else None
        self.threads = int(threads or os.cpu_count() or 1)
        #: the tiles that run at once, each with its own infer request
        self.streams = Streams(cpu_streams(self.threads, 1 if streams is None else streams))
        self._core, self._model = core, model
        self._config = {
            "INFERENCE_NUM_THREADS": self.threads,
            "NUM_STREAMS": self.streams.n,
            "PERFORMANCE_HINT": "LATENCY" if self.streams.n == 1 else "THROUGHPUT",
            "INFERENCE_PRECISION_HINT": "f32",
        }
        cache = cache_dir()
        if cache is not None:
            try:
                cache.mkdir(parents=True, exist_ok=True)
                self._config["CACHE_DIR"] = str(cache)
            except OSError as e:  # a read-only home: compile every time
                log.debug("no OpenVINO model cache in %s: %s", cache, e)
        #: the compiled models' infer requests (one per stream) by input shape, most recently used last
        self._compiled: OrderedDict[tuple[int, ...], list[Any]] = OrderedDict()
        self._compiling = threading.Lock()  # streams meeting a new shape at once compile it once
        if self.fixed_size is not None:  # one shape: compiled now, so a broken file fails at load
            self._compile(model, None)
        log.info(
            "loaded %s (%s, %s, imgsz %d, %s) with OpenVINO on the CPU, %d threads, %d stream(s)",
            self.path.name,
            self.meta.name or "unnamed",
            self.meta.task,
            self.meta.imgsz,
            "fixed input size" if self.fixed_size else "any tile size",
            self.threads,
            self.streams.n,
        )

    @property
    def preferred_batch(self) -> int:
        """Tiles per call when ``TileConfig.batch`` is ``None``: :data:`~detector.backends.base.CPU_BATCH` per
        stream (INT8 headline scene, 2 cores, one stream: 1.56 s in calls of 1 tile vs 1.64 s of 8)."""
        return CPU_BATCH * self.streams.n

    def _compile(self, model: Any, shape: tuple[int, ...] | None) -> list[Any]:
        """Compile ``model`` (``shape``: the input shape it is fixed to, ``None``: as it is) and keep its
        infer requests, one per stream, under ``shape``."""
        try:
            compiled = self._core.compile_model(model, "CPU", self._config)
            infers = [compiled.create_infer_request() for _ in range(self.streams.n)]
        except Exception as e:
            raise ModelError(
                f"{self.path}: OpenVINO cannot compile the model"
                f"{f' for input {list(shape)}' if shape else ''}: {type(e).__name__}: {e}"
            ) from e
        self._compiled[shape or ()] = infers
        return infers

    def _infer_requests(self, shape: tuple[int, ...]) -> list[Any]:
        """The infer requests for an input of ``shape``: those of a fixed-size file; for a dynamic one, of a
        copy of the model compiled with that shape fixed (kept for the next :data:`STATIC_SHAPES` shapes)."""
        if self.fixed_size is not None:
            return self._compiled[()]
        with self._compiling:
            infers = self._compiled.get(shape)
            if infers is not None:
                self._compiled.move_to_end(shape)
                return infers
            model = self._model.clone()
            model.reshape({model.input(0).get_any_name(): list(shape)})
            log.debug("%s: compiling for input %s", self.path.name, list(shape))
            infers = self._compile(model, shape)
            while len(self._compiled) > STATIC_SHAPES:
                self._compiled.popitem(last=False)
            return infers

    def prepare(self, shape: tuple[int, ...]) -> None:
        """Compile for batches of ``shape`` ``(B, S, S, 3)`` tiles now, for the parts the streams run (the
        pipeline calls this while it reads the first tiles: ~0.2 s from the model cache, ~1 s without, that no
        longer wait for the pixels)."""
        b, rows, cols, _ = (int(d) for d in shape)
        bounds = self.streams.bounds(b)
        for part in sorted({hi - lo for lo, hi in zip(bounds[:-1], bounds[1:], strict=True)}):
            self._infer_requests((part, 3, rows, cols))

    def run(self, x: np.ndarray, stream: int = 0) -> np.ndarray:
        """The raw network output for a normalised float32 ``(B, 3, S, S)`` batch, on ``stream``'s request."""
        request = self._infer_requests(tuple(int(d) for d in x.shape))[stream]
        request.infer({0: x})
        return np.array(request.get_output_tensor(0).data, copy=True)

    def check_size(self, size: int) -> None:
        """Raise ``ValueError`` unless this model runs ``size`` x ``size`` tiles (the message says how to fix)."""
        check_tile_size(size, self.meta, self.path, fixed_size=self.fixed_size)

    def predict_batch(self, tiles: np.ndarray) -> list[Detections]:
        """``(B, S, S, 3)`` uint8 RGB tiles -> one :class:`Detections` per tile, in tile pixels."""
        if len(tiles) == 0:
            return []
        self.check_size(check_tiles(tiles))
        return self.streams.map(self._predict, tiles)

    def _predict(self, tiles: np.ndarray, stream: int = 0) -> list[Detections]:
        """One stream's part of a batch, on that stream's infer request."""
        out = self.run(to_input(tiles), stream)
        return decode_batch(out, self.meta, self.lut, conf=self.conf, iou=self.iou, max_det=self.max_det)

    def __repr__(self) -> str:
        return f"OpenVinoPredictor({str(self.path)!r}, task={self.meta.task!r}, imgsz={self.meta.imgsz})"
