"""Model files for inference: the default model, a file's metadata, and a predictor for it.

A model file carries everything inference needs (:class:`~detector.backends.base.ModelMeta`): the network's
raw class names, the map from those to our classes, the input size, the task (axis-aligned ``detect`` or
rotated ``obb``), the normalisation and, when known, the training ground sample distance.

* ``.onnx`` files store the metadata as JSON under ``META_KEY`` in ``metadata_props``; they are made by
  :func:`training.export.export_onnx` (``detector export``) and run with onnxruntime (no torch) or OpenVINO
  (``runtime="openvino"``, the ``[openvino]`` extra). INT8 files made by ``detector quantize`` are ``.onnx``
  files too.
* ``.pt`` files are Ultralytics checkpoints, read safely (see :mod:`detector.backends.torch`). Their
  metadata is derived from the checkpoint (names, task, training ``imgsz``), or read from a ``META_KEY``
  entry in the checkpoint dict when training put one there.

Layering: this module sits above :mod:`detector.backends` (decoding in ``decode``, one module per runtime)
and imports them; nothing in ``backends`` imports this module, and none of it imports torch, Ultralytics,
onnx or OpenVINO at import. Export and verification live in :mod:`training.export`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from detector.backends.base import META_KEY, ModelMeta, Predictor  # noqa: F401  (META_KEY: re-exported)
from detector.backends.decode import (  # noqa: F401  (re-exported: the old import paths)
    STRIDE,
    check_class_map,
    check_meta_against_shapes,
    default_class_map,
    min_tile,
    n_anchors,
    normalize_name,
)
from detector.errors import ModelError  # noqa: F401  (re-exported)

log = logging.getLogger(__name__)

__all__ = [
    "RUNTIMES",
    "ModelError",
    "default_weights",
    "load_predictor",
    "read_meta",
]

#: Runtimes that run ``.onnx`` files (``.pt`` files always run with PyTorch).
RUNTIMES = ("onnxruntime", "openvino")
#: Names that moved to :mod:`training.export` (export and checkpoint surgery beside training); importing them
#: from here still works, lazily and with a DeprecationWarning.
_MOVED_TO_TRAINING = (
    "DEFAULT_ATOL",
    "DEFAULT_OPSET",
    "compare_outputs",
    "export_onnx",
    "load_checkpoint",
    "meta_from_checkpoint",
    "prepare_for_inference",
)


# ----------------------------------------------------------------------------------------------------------
# default weights and predictor loading
# ----------------------------------------------------------------------------------------------------------


def default_weights() -> Path:
    """The model used when none is given.

    ``$DETECTOR_WEIGHTS`` when set; else ``weights/detector.onnx`` (our trained model) when it exists; else the
    DOTA-trained ``weights/pretrained/yolov8n-obb.onnx`` made by ``make setup``.

    Raises:
        ModelError: the chosen file does not exist (the message says how to get one).
    """
    env = os.environ.get("DETECTOR_WEIGHTS")
    if env:
        p = Path(env).expanduser()
        if not p.is_file():
            raise ModelError(f"DETECTOR_WEIGHTS points to {p}, which does not exist")
        return p
    from detector.resources import repo_root, weights_path

    ours = weights_path("detector.onnx")  # the checkout's weights/, else the copy inside the installed wheel
    if ours.is_file():
        return ours
    pretrained = weights_path("pretrained/yolov8n-obb.onnx")
    if pretrained.is_file():
        return pretrained
    root = repo_root()
    hint = (
        f"run `make setup` in {root} (fetches and exports the pretrained weights)"
        if root
        else "reinstall the package (its wheel carries the default model)"
    )
    raise ModelError(
        f"no default model: {ours} does not exist; {hint}, pass a model path (--weights), or set DETECTOR_WEIGHTS"
    )


def load_predictor(
    path: str | Path | None = None,
    device: str = "cpu",
    conf: float = 0.25,
    iou: float = 0.6,
    max_det: int = 1000,
    threads: int | None = None,
    runtime: str = "onnxruntime",
    streams: int | None = None,
) -> Predictor:
    """Open a model file as a :class:`~detector.backends.base.Predictor`.

    Args:
        path: ``.onnx`` (onnxruntime or OpenVINO) or ``.pt`` (Ultralytics / PyTorch); ``None`` for
            :func:`default_weights`.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. ONNX falls back to the CPU (with a log line) when
            onnxruntime has no CUDA provider; the PyTorch backend runs half precision on CUDA; OpenVINO runs
            on the CPU.
        conf: keep detections whose score is above this.
        iou: IoU threshold of the class-aware NMS within a tile (probabilistic IoU for rotated boxes). Unused
            by end-to-end (NMS-free) models.
        max_det: at most this many detections per tile.
        threads: CPU threads (onnxruntime intra-op threads, OpenVINO inference threads, or
            ``torch.set_num_threads``); ``None`` for the number of CPUs.
        runtime: what runs an ``.onnx`` file: ``"onnxruntime"`` (default) or ``"openvino"`` (needs the
            ``[openvino]`` extra). Ignored for ``.pt`` files, which always run with PyTorch.
        streams: ``.onnx`` files on the CPU: model calls run at once, sharing ``threads``
            (``None``: :data:`~detector.backends.base.CPU_STREAMS`; see :class:`~detector.backends.base.Streams`).
            The PyTorch backend runs one.

    Raises:
        ModelError: the file is missing, not a model, unsafe, lacks metadata, has an unknown extension, or
            the runtime is not installed.
        ValueError: a threshold is out of range, or an unknown runtime.
    """
    p = Path(path) if path is not None else default_weights()
    _check_thresholds(conf, iou, max_det, threads)
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        if runtime == "openvino":
            from detector.backends.openvino import OpenVinoPredictor

            return OpenVinoPredictor(
                p, device=device, conf=conf, iou=iou, max_det=max_det, threads=threads, streams=streams
            )
        from detector.backends.onnx import OnnxPredictor

        return OnnxPredictor(
            p, device=device, conf=conf, iou=iou, max_det=max_det, threads=threads, streams=streams
        )
    if suffix == ".pt":
        from detector.backends.torch import TorchPredictor

        return TorchPredictor(p, device=device, conf=conf, iou=iou, max_det=max_det, threads=threads)
    if not p.exists():
        raise ModelError(f"model file not found: {p}")
    raise ModelError(f"{p}: unknown model file extension {p.suffix!r}; expected .onnx or .pt")


def _check_thresholds(conf: float, iou: float, max_det: int, threads: int | None) -> None:
    if not 0.0 <= conf <= 1.0:
        raise ValueError(f"conf must be in [0, 1], got {conf!r}")
    if not 0.0 <= iou <= 1.0:
        raise ValueError(f"iou must be in [0, 1], got {iou!r}")
    if int(max_det) < 1:
        raise ValueError(f"max_det must be at least 1, got {max_det!r}")
    if threads is not None and int(threads) < 1:
        raise ValueError(f"threads must be at least 1 (or None for all CPUs), got {threads!r}")


# ----------------------------------------------------------------------------------------------------------
# metadata
# ----------------------------------------------------------------------------------------------------------


def read_meta(path: str | Path) -> ModelMeta:
    """The :class:`ModelMeta` of a model file, checked against the network it describes.

    ``.onnx``: the JSON under ``META_KEY`` in ``metadata_props`` (read with onnxruntime). ``.pt``: an
    Ultralytics checkpoint (needs torch and Ultralytics); see :func:`detector.backends.torch.meta_from_checkpoint`.

    Raises:
        ModelError: missing file, not a model, no metadata, metadata that does not match the network, or an
            unknown extension.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in (".onnx", ".pt"):
        if not p.exists():
            raise ModelError(f"model file not found: {p}")
        raise ModelError(f"{p}: unknown model file extension {p.suffix!r}; expected .onnx or .pt")
    if not p.is_file():
        raise ModelError(f"model file not found: {p}")
    if suffix == ".onnx":
        from detector.backends.onnx import open_session, session_meta

        return session_meta(open_session(p, optimize=False), p)
    from detector.backends.torch import load_checkpoint, meta_from_checkpoint

    model, ckpt = load_checkpoint(
        p
    )  # safe: refuses a checkpoint that needs arbitrary code, before unpickling
    return meta_from_checkpoint(model, ckpt, p)


def __getattr__(name: str) -> Any:
    # Old import paths of what moved to training.export (which needs the [train] extra).
    if name in _MOVED_TO_TRAINING:
        import importlib
        import warnings

        warnings.warn(
            f"detector.model.{name} moved to training.export; import it from there",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module("training.export"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
