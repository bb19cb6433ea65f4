"""The onnxruntime backend: :class:`OnnxPredictor` runs an exported ``.onnx`` file on the CPU (or CUDA).

The file's graph and metadata are described in :mod:`detector.backends.decode`, which also decodes its
output; this module only opens the session, reads the metadata and feeds the tiles.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from detector.backends.base import CPU_BATCH, GPU_BATCH, META_KEY, ModelMeta, Streams, cpu_streams
from detector.backends.decode import (  # noqa: F401  (MAX_NMS ... regularize_rboxes: old import paths)
    MAX_NMS,
    MAX_WH,
    STRIDE,
    batch_probiou,
    check_meta_against_shapes,
    check_tile_size,
    check_tiles,
    class_lut,
    decode_batch,
    decode_end_to_end,
    decode_raw,
    fast_nms_rotated,
    meta_from_graph,
    min_tile,
    nms_xyxy,
    rbox_to_xyxy,
    regularize_rboxes,
    to_input,
    xywh_to_xyxy,
)
from detector.detections import Detections
from detector.errors import ModelError

log = logging.getLogger(__name__)


def open_session(
    path: str | Path, *, device: str = "cpu", threads: int | None = None, optimize: bool = True
) -> Any:
    """An onnxruntime ``InferenceSession`` for ``path``.

    Args:
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``; CUDA falls back to the CPU with a warning when
            onnxruntime has no CUDA provider.
        threads: intra-op threads (``None``: ``os.cpu_count()``).
        optimize: full graph optimisation (off for a quick metadata read).

    Raises:
        ModelError: the file is missing or is not an ONNX model.
    """
    import onnxruntime as ort

    p = Path(path)
    if not p.is_file():
        raise ModelError(f"model file not found: {p}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = int(threads or os.cpu_count() or 1)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # The memory-pattern planner keeps a buffer per batch shape it has seen: ~1.1 GB peak at batch 8 of 1024
    # tiles against ~0.66 GB without it, at the same speed (measured by scripts/bench.py's floor runs).
    opts.enable_mem_pattern = False
    # Idle intra-op threads sleep instead of spinning: spinning threads take the cores from the pipeline's
    # read-ahead thread (and from other processes: Dask workers, a shared machine). scripts/bench.py's
    # 2560 px headline scene on 2 busy cores: pipeline 2.9 s vs 5.6 s, bare session.run 2.5 s vs 4.7 s (medians).
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.graph_optimization_level = (
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    )
    providers: list[Any] = ["CPUExecutionProvider"]
    dev = str(device).lower()
    if dev.startswith("cuda"):
        device_id = int(dev.split(":", 1)[1]) if ":" in dev else 0
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers = [("CUDAExecutionProvider", {"device_id": device_id}), "CPUExecutionProvider"]
        else:
            log.warning(
                "device=%r asked for, but this onnxruntime has no CUDA provider (install onnxruntime-gpu); "
                "running %s on the CPU",
                device,
                p.name,
            )
    elif dev != "cpu":
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    try:
        session = ort.InferenceSession(str(p), sess_options=opts, providers=providers)
    except Exception as e:  # InvalidProtobuf, Fail, InvalidGraph, ...
        raise ModelError(f"{p} is not a readable ONNX model: {type(e).__name__}: {e}") from e
    log.debug("onnxruntime session for %s on %s", p.name, session.get_providers()[0])
    return session


def session_meta(session: Any, path: str | Path) -> ModelMeta:
    """Our :class:`ModelMeta` stored in an ONNX session's model, checked against its input/output shapes.

    Raises:
        ModelError: the metadata is missing or unreadable, or does not match the network.
    """
    props = session.get_modelmeta().custom_metadata_map
    return meta_from_graph(
        props.get(META_KEY),
        [list(i.shape) for i in session.get_inputs()],
        [list(o.shape) for o in session.get_outputs()],
        path,
    )


def fixed_input_size(session: Any) -> int | None:
    """The input side an ONNX session is fixed to, or ``None`` when height and width are dynamic."""
    dims = list(session.get_inputs()[0].shape)[2:]
    fixed = [int(d) for d in dims if isinstance(d, (int, np.integer)) and int(d) > 0]
    return fixed[0] if len(fixed) == len(dims) == 2 and fixed[0] == fixed[1] else None


def session_batch(session: Any) -> int:
    """Tiles per call for an onnxruntime session: :data:`~detector.backends.base.GPU_BATCH` when CUDA is among
    its providers, else :data:`~detector.backends.base.CPU_BATCH`."""
    return GPU_BATCH if "CUDAExecutionProvider" in session.get_providers() else CPU_BATCH


class OnnxPredictor:
    """A model exported by :func:`detector.model.export_onnx`, run with onnxruntime.

    Implements :class:`~detector.backends.base.Predictor`. Needs numpy and onnxruntime only. Tiles may be any
    multiple of 32 px (``meta.imgsz`` is the model's default) unless the file fixes its input size
    (``fixed_size``, files exported before dynamic sizes): such a file runs only tiles of that size.

    Args:
        path: the ``.onnx`` file (its metadata says everything else).
        device: ``"cpu"`` or ``"cuda"`` (CUDA provider when available, else the CPU with a log line).
        conf: score threshold (kept when ``score > conf``).
        iou: NMS IoU threshold (unused by end-to-end models).
        max_det: at most this many detections per tile.
        threads: CPU threads for the model (``None``: all CPUs), shared by the streams.
        streams: on the CPU, model calls run at once, each on ``threads // streams`` onnxruntime intra-op
            threads (``None``: :data:`~detector.backends.base.CPU_STREAMS`, at most ``threads``; see
            :class:`~detector.backends.base.Streams`). One on CUDA.
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
        self.threads = int(threads or os.cpu_count() or 1)
        n = 1 if str(device).lower().startswith("cuda") else cpu_streams(self.threads, streams)
        intra = max(1, self.threads // n)  # each stream's onnxruntime intra-op threads
        self.session = open_session(self.path, device=device, threads=intra)
        #: the model calls that run at once (one for CUDA, which takes big batches instead)
        self.streams = Streams(n)
        self.meta = session_meta(self.session, self.path)
        self.conf, self.iou, self.max_det = float(conf), float(iou), int(max_det)
        self.lut = class_lut(self.meta)
        self.input_name = self.session.get_inputs()[0].name
        self.output_name = self.session.get_outputs()[0].name
        #: the input side the file is fixed to, ``None`` when any multiple of 32 runs
        self.fixed_size = fixed_input_size(self.session)
        self.min_size = min_tile(self.meta)
        if self.meta.normalization != "rgb/255":
            raise ValueError(f"{self.path}: unsupported normalization {self.meta.normalization!r}")
        self._buffers = threading.local()  # one reused input buffer per calling thread (see to_input)
        log.info(
            "loaded %s (%s, %s, imgsz %d, %s) on %s, %d stream(s) of %d thread(s)",
            self.path.name,
            self.meta.name or "unnamed",
            self.meta.task,
            self.meta.imgsz,
            "fixed input size" if self.fixed_size else "any tile size",
            self.session.get_providers()[0],
            self.streams.n,
            intra,
        )

    @property
    def preferred_batch(self) -> int:
        """Tiles per call when ``TileConfig.batch`` is ``None``: :data:`~detector.backends.base.GPU_BATCH`
        when the session runs on CUDA, else :data:`~detector.backends.base.CPU_BATCH` per stream."""
        batch = session_batch(self.session)
        return batch if batch == GPU_BATCH else batch * self.streams.n

    def run(self, x: np.ndarray) -> np.ndarray:
        """The raw network output for a normalised float32 ``(B, 3, S, S)`` batch."""
        return self.session.run([self.output_name], {self.input_name: x})[0]

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
        """One stream's part of a batch (any stream may use the one session: ``run`` is thread-safe)."""
        out = self.run(self._input(tiles))
        return decode_batch(out, self.meta, self.lut, conf=self.conf, iou=self.iou, max_det=self.max_det)

    def _input(self, tiles: np.ndarray) -> np.ndarray:
        """The normalised input of ``tiles``, written into this thread's buffer (grown to the largest batch
        seen for this tile size; onnxruntime reads it during ``run`` only, so the next batch can reuse it)."""
        n, rows, cols = tiles.shape[:3]
        buf = getattr(self._buffers, "x", None)
        if buf is None or buf.shape[2:] != (rows, cols) or buf.shape[0] < n:
            buf = np.empty((n, 3, rows, cols), np.float32)
            self._buffers.x = buf
        return to_input(tiles, out=buf)

    def __repr__(self) -> str:
        return f"OnnxPredictor({str(self.path)!r}, task={self.meta.task!r}, imgsz={self.meta.imgsz})"
