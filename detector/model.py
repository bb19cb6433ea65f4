"""Model files and their metadata: export to ONNX, read metadata, load a predictor.

A model file carries everything inference needs (:class:`~detector.backends.base.ModelMeta`): the network's
raw class names, the map from those to our taxonomy, the input size, the task (axis-aligned ``detect`` or
rotated ``obb``), the normalisation and, when known, the training ground sample distance.

* ``.onnx`` files store the metadata as JSON under ``META_KEY`` in ``metadata_props``; they are made by
  :func:`export_onnx` (``detector export``) and run with onnxruntime alone (no torch).
* ``.pt`` files are Ultralytics checkpoints. Their metadata is derived from the checkpoint (names, task,
  training ``imgsz``), or read from a ``META_KEY`` entry in the checkpoint dict when training put one there.

Importing this module never imports torch, Ultralytics or onnx; the functions that need them import them.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from detector.errors import ModelError  # noqa: F401  (re-exported)
from detector.backends.base import META_KEY, TAXONOMY, ModelMeta, Predictor

log = logging.getLogger(__name__)

__all__ = [
    "DOTA_CLASS_MAP",
    "ModelError",
    "default_weights",
    "export_onnx",
    "load_predictor",
    "read_meta",
]

#: DOTA v1.0 class index -> our taxonomy, for the DOTA-trained pretrained models (15 classes).
DOTA_CLASS_MAP: dict[int, str] = {0: "aircraft", 11: "helicopter", 10: "small-vehicle", 9: "large-vehicle"}

#: DOTA v1.0 class names in index order, as Ultralytics' DOTAv1 data YAML spells them.
DOTA_V1_NAMES: tuple[str, ...] = (
    "plane",
    "ship",
    "storage tank",
    "baseball diamond",
    "tennis court",
    "basketball court",
    "ground track field",
    "harbor",
    "bridge",
    "large vehicle",
    "small vehicle",
    "helicopter",
    "roundabout",
    "soccer ball field",
    "swimming pool",
)

#: Strides of the YOLO heads we export (P3-P5); the input size must be a multiple of the largest.
_STRIDES = (8, 16, 32)
#: Tile sides a model accepts are multiples of this (its largest stride).
STRIDE = max(_STRIDES)
#: Default ONNX opset: what Ultralytics 8.4 picks for torch>=2.4 (opset 19+ puts Resize/ReduceMax on the CPU
#: under onnxruntime's CUDA provider), and onnxruntime>=1.14 runs it.
DEFAULT_OPSET = 18
#: Default export tolerance on the raw network output (pixels for boxes, probability for scores, radians for
#: angles). See :func:`export_onnx`.
DEFAULT_ATOL = 1e-3
_ROOT = Path(__file__).resolve().parents[1]




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
    ours = _ROOT / "weights" / "detector.onnx"
    if ours.is_file():
        return ours
    pretrained = _ROOT / "weights" / "pretrained" / "yolov8n-obb.onnx"
    if pretrained.is_file():
        return pretrained
    raise ModelError(
        f"no default model: neither {ours} nor {pretrained} exists. Run `make setup` in {_ROOT} (fetches and "
        "exports the pretrained weights), pass a model path, or set DETECTOR_WEIGHTS"
    )


def load_predictor(
    path: str | Path | None = None,
    device: str = "cpu",
    conf: float = 0.25,
    iou: float = 0.6,
    max_det: int = 1000,
    threads: int | None = None,
) -> Predictor:
    """Open a model file as a :class:`~detector.backends.base.Predictor`.

    Args:
        path: ``.onnx`` (onnxruntime) or ``.pt`` (Ultralytics / PyTorch); ``None`` for :func:`default_weights`.
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. ONNX falls back to the CPU (with a log line) when
            onnxruntime has no CUDA provider; the PyTorch backend runs half precision on CUDA.
        conf: keep detections whose score is above this.
        iou: IoU threshold of the class-aware NMS within a tile (probabilistic IoU for rotated boxes). Unused
            by end-to-end (NMS-free) models.
        max_det: at most this many detections per tile.
        threads: CPU threads (onnxruntime intra-op threads, or ``torch.set_num_threads``); ``None`` for the
            number of CPUs.

    Raises:
        ModelError: the file is missing, not a model, lacks metadata, or has an unknown extension.
        ValueError: a threshold is out of range.
    """
    p = Path(path) if path is not None else default_weights()
    _check_thresholds(conf, iou, max_det, threads)
    suffix = p.suffix.lower()
    if suffix == ".onnx":
        from detector.backends.onnx import OnnxPredictor

        return OnnxPredictor(p, device=device, conf=conf, iou=iou, max_det=max_det, threads=threads)
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
    Ultralytics checkpoint (needs torch and Ultralytics); see :func:`meta_from_checkpoint`.

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
    model, ckpt = load_checkpoint(p)
    return meta_from_checkpoint(model, ckpt, p)


def normalize_name(name: str) -> str:
    """``"Small Vehicle"``, ``"small_vehicle"``, ``"small-vehicle"`` -> ``"small-vehicle"``."""
    return re.sub(r"[\s_\-]+", "-", str(name).strip().lower())


def default_class_map(raw_names: tuple[str, ...], source: str | Path = "") -> dict[int, str]:
    """The class map a model gets when none is given.

    DOTA v1.0 models (15 DOTA names) get :data:`DOTA_CLASS_MAP`; models whose classes are all names of our
    taxonomy map by name (spelling of spaces, ``_`` and case does not matter).

    Raises:
        ModelError: any other model; the message names the file and the classes without a mapping.
    """
    norm = [normalize_name(n) for n in raw_names]
    if norm == [normalize_name(n) for n in DOTA_V1_NAMES]:
        return dict(DOTA_CLASS_MAP)
    unmapped = [n for n, k in zip(raw_names, norm, strict=True) if k not in TAXONOMY]
    if not unmapped:
        return {i: k for i, k in enumerate(norm)}
    raise ModelError(
        f"{source}: cannot map the model's classes to {TAXONOMY}: no default mapping for {unmapped!r}. "
        "Pass an explicit class map (raw class index -> our class name), e.g. "
        "`detector export MODEL.pt --class-map 0=aircraft,3=small-vehicle`"
    )


def check_class_map(
    class_map: Mapping[Any, str], raw_names: tuple[str, ...], source: str | Path
) -> dict[int, str]:
    """Validate a user class map (raw index or raw name -> our name) and return it keyed by raw index."""
    norm_raw = {normalize_name(n): i for i, n in enumerate(raw_names)}
    out: dict[int, str] = {}
    for k, v in class_map.items():
        if isinstance(k, str) and not k.strip().lstrip("-").isdigit():
            if normalize_name(k) not in norm_raw:
                raise ModelError(
                    f"{source}: class map names {k!r}, which is not one of the model's classes {raw_names}"
                )
            idx = norm_raw[normalize_name(k)]
        else:
            idx = int(k)
        if not 0 <= idx < len(raw_names):
            raise ModelError(
                f"{source}: class map index {idx} is outside the model's {len(raw_names)} classes"
            )
        ours = normalize_name(v)
        if ours not in TAXONOMY:
            raise ModelError(f"{source}: class map maps {k!r} to {v!r}, which is not one of {TAXONOMY}")
        out[idx] = ours
    if not out:
        raise ModelError(f"{source}: the class map is empty, the model would detect nothing")
    return out


def load_checkpoint(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """Load an Ultralytics ``.pt`` checkpoint on the CPU (float32, eval mode, not fused): ``(model, ckpt)``.

    Raises:
        ModelError: missing file or not an Ultralytics detect/OBB checkpoint.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"model file not found: {p}")
    try:
        from ultralytics.nn.tasks import load_checkpoint as _ul_load
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ModelError(f"{p}: reading .pt models needs the [train] extra (torch, ultralytics): {e}") from e
    try:
        model, ckpt = _ul_load(str(p), device="cpu", fuse=False)
    except Exception as e:  # torch raises many types for a file that is not a checkpoint
        raise ModelError(f"{p} is not an Ultralytics model checkpoint: {type(e).__name__}: {e}") from e
    task = getattr(model, "task", None)
    if task not in ("detect", "obb"):
        raise ModelError(f"{p}: model task is {task!r}; only 'detect' and 'obb' models are supported")
    return model, ckpt


def _names_of(model: Any) -> tuple[str, ...]:
    names = getattr(model, "names", None)
    if isinstance(names, dict):
        return tuple(str(names[i]) for i in sorted(names))
    if isinstance(names, (list, tuple)):
        return tuple(str(n) for n in names)
    raise ModelError(f"model has no class names (got {names!r})")


def meta_from_checkpoint(
    model: Any,
    ckpt: Mapping[str, Any],
    source: str | Path,
    *,
    end_to_end: bool | None = None,
    class_map: Mapping[Any, str] | None = None,
) -> ModelMeta:
    """:class:`ModelMeta` for an Ultralytics model loaded from a checkpoint.

    A ``META_KEY`` entry in the checkpoint dict (JSON text or a dict of ModelMeta fields, written by our
    training) wins for ``class_map``, ``gsd``, ``name``, ``imgsz`` and ``extra``; names, task and the head
    come from the network itself. Otherwise: :func:`default_class_map`, the training ``imgsz``, no GSD.

    ``end_to_end`` selects the NMS-free one-to-one head of YOLO26-style models (``None``: as stored, else
    off, which is also Ultralytics 8.4's default; heads without one-to-one branch are never end-to-end).
    An explicit ``class_map`` (raw index or name -> our name) wins over both.
    """
    head = model.model[-1]
    nc = int(head.nc)
    raw_names = _names_of(model)
    if len(raw_names) != nc:
        raise ModelError(
            f"{source}: the model has {len(raw_names)} class names but its head outputs {nc} classes"
        )
    stored: dict[str, Any] = {}
    if META_KEY in ckpt and ckpt[META_KEY]:
        val = ckpt[META_KEY]
        try:
            stored = json.loads(val) if isinstance(val, str) else dict(val)
        except (TypeError, ValueError) as e:
            raise ModelError(f"{source}: unreadable {META_KEY!r} entry in the checkpoint: {e}") from e
    train_args = ckpt.get("train_args") or {}
    imgsz = stored.get("imgsz") or train_args.get("imgsz") or 640
    if isinstance(imgsz, (list, tuple)):
        imgsz = max(imgsz)
    if class_map is not None:
        cmap = check_class_map(class_map, raw_names, source)
    elif "class_map" in stored:
        cmap = check_class_map(stored["class_map"], raw_names, source)
    else:
        cmap = default_class_map(raw_names, source)
    has_o2o = getattr(head, "one2one_cv2", None) is not None
    if end_to_end is None:
        end_to_end = bool(stored.get("end_to_end", False))
    extra = dict(stored.get("extra") or {})
    extra.setdefault("architecture", str(getattr(model, "yaml", {}).get("yaml_file", "")))
    extra.setdefault("train_data", str(train_args.get("data", "")))
    extra.setdefault("ultralytics_version_trained", str(ckpt.get("version", "")))
    # training/wise.py: a weight-space mix with the pretrained start
    if isinstance(ckpt.get("wise"), Mapping):
        extra.setdefault("wise", dict(ckpt["wise"]))
    try:
        return ModelMeta(
            raw_names=raw_names,
            class_map=cmap,
            imgsz=int(imgsz),
            task=str(model.task),
            normalization="rgb/255",
            gsd=stored.get("gsd"),
            end_to_end=bool(end_to_end and has_o2o),
            name=str(stored.get("name") or Path(source).stem),
            extra=extra,
        )
    except ValueError as e:
        raise ModelError(f"{source}: {e}") from e


def n_anchors(size: int) -> int:
    """Anchors of a raw YOLO head (P3-P5) for a ``size`` x ``size`` input: ``(size/8)^2 + (size/16)^2 + ...``."""
    return sum((int(size) // s) ** 2 for s in _STRIDES)


def check_meta_against_shapes(
    meta: ModelMeta, input_shape: list[Any], output_shape: list[Any], source: str | Path
) -> None:
    """Raise :class:`ModelError` when the metadata does not describe a network with these I/O shapes.

    ``input_shape`` is ``(B, 3, S, S)``; ``output_shape`` is ``(B, 4 + nc (+1 for obb), anchors)`` for raw
    heads or ``(B, K, 6 (+1 for obb))`` for end-to-end heads. Batch, height, width and anchors may be
    symbolic (strings / None, as in files exported with dynamic sizes) and are then not checked; when fixed,
    the size must be ``meta.imgsz`` and the anchors those of that size. The input channels (3) and the values
    per detection are always checked.
    """
    nc = len(meta.raw_names)

    def fixed(d: Any) -> int | None:
        return int(d) if isinstance(d, (int, np.integer)) and int(d) > 0 else None

    if len(input_shape) != 4 or fixed(input_shape[1]) not in (None, 3):
        raise ModelError(f"{source}: network input shape {input_shape} is not (batch, 3, height, width)")
    for d in input_shape[2:]:
        if fixed(d) is not None and fixed(d) != meta.imgsz:
            raise ModelError(
                f"{source}: weights do not match the metadata: network input is {input_shape[2:]} pixels, "
                f"metadata says imgsz={meta.imgsz}"
            )
    if len(output_shape) != 3:
        raise ModelError(f"{source}: network output shape {output_shape} is not 3-dimensional")
    extra = 1 if meta.task == "obb" else 0
    if meta.end_to_end:
        want, got = 6 + extra, fixed(output_shape[2])
        what = f"end-to-end rows of {want} values ([box(4), score, class{', angle' if extra else ''}])"
    else:
        want, got = 4 + nc + extra, fixed(output_shape[1])
        what = f"4 box + {nc} class{' + 1 angle' if extra else ''} channels"
        anchors = fixed(output_shape[2])
        if anchors is not None and anchors != n_anchors(meta.imgsz):  # fixed only in fixed-size files
            raise ModelError(
                f"{source}: weights do not match the metadata: {anchors} anchors in the output, "
                f"{n_anchors(meta.imgsz)} expected for imgsz={meta.imgsz}"
            )
    if got is None:  # every head we export fixes it; a dynamic one here is another kind of output
        raise ModelError(
            f"{source}: network output shape {output_shape} does not fix the values per detection where the "
            f"metadata ({meta.task}, end_to_end={meta.end_to_end}) expects {want}: {what}"
        )
    if got != want:
        raise ModelError(
            f"{source}: weights do not match the metadata: the output has {got} values per detection, the "
            f"metadata ({meta.task}, {nc} classes, end_to_end={meta.end_to_end}) means {want}: {what}"
        )


# ----------------------------------------------------------------------------------------------------------
# export
# ----------------------------------------------------------------------------------------------------------


def prepare_for_inference(
    model: Any, *, end_to_end: bool, max_det: int = 300, export: bool = False, dynamic: bool = False
) -> Any:
    """Ready an Ultralytics detect/OBB model for plain ``model(x)`` calls, as Ultralytics' exporter does.

    Selects the head (one-to-many + NMS, or the NMS-free one-to-one head), fuses Conv+BN, puts the model in
    eval mode with gradients off and (``export``) switches the head to export mode: its forward then returns
    the raw decoded tensor alone, ``(B, 4+nc(+1), A)`` or ``(B, K, 6(+1))``, with xywh boxes in input pixels.
    ``dynamic`` makes the head rebuild its anchor grid from the feature maps on every call, so a traced
    graph computes it from the input size (Ultralytics' ``dynamic=True`` export); without it the grid is
    cached and rebuilt only when the input shape changes, which is all eager PyTorch needs.
    Works on the model in place and returns it.
    """
    from ultralytics.nn.modules import C2f, Detect

    for p in model.parameters():
        p.requires_grad = False
    model.float().eval()
    if hasattr(model, "end2end"):
        model.end2end = bool(end_to_end)
    model = model.fuse(verbose=False)
    for m in model.modules():
        if isinstance(m, Detect):
            m.dynamic = bool(dynamic)
            m.export = export
            m.format = "onnx" if export else None  # type: ignore[assignment]
            m.max_det = int(max_det)
            m.agnostic_nms = False
            m.xyxy = False
            m.shape = None
        elif export and isinstance(m, C2f):
            m.forward = m.forward_split  # type: ignore[method-assign]  # the cleaner ONNX graph Ultralytics' exporter uses
    return model


def export_onnx(
    pt_path: str | Path,
    out_path: str | Path,
    *,
    imgsz: int | None = None,
    name: str = "",
    gsd: float | None = None,
    class_map: Mapping[Any, str] | None = None,
    verify: bool = True,
    atol: float = DEFAULT_ATOL,
    end_to_end: bool = False,
    opset: int = DEFAULT_OPSET,
    simplify: bool = True,
    max_det: int = 300,
    dynamic: bool = True,
) -> Path:
    """Export an Ultralytics ``.pt`` (detect or OBB, YOLOv8 / YOLO11 / YOLO26 heads) to a self-describing ONNX.

    The graph takes ``images`` float32 ``(batch, 3, height, width)`` RGB in ``[0, 1]`` with dynamic batch,
    height and width axes (any side that is a multiple of 32; the pipeline feeds square tiles, ``imgsz`` by
    default), and returns ``output0``: the raw head ``(batch, 4 + nc (+1 angle), anchors)`` (xywh centre boxes
    in input pixels, class probabilities, angle in radians; ``anchors`` follows the input size), or for
    ``end_to_end`` the NMS-free head's top ``max_det`` rows ``(batch, max_det, 6 | 7)``. Our
    :class:`ModelMeta` is stored as JSON under ``META_KEY`` in ``metadata_props``; its ``imgsz`` is the
    training (default tile) size.

    The file is verified before it replaces ``out_path`` (written to a temporary file, then ``os.replace``):
    ``onnx.checker``, then onnxruntime against PyTorch on a fixed seeded input at ``imgsz`` (batch of 2, which
    also exercises the dynamic batch axis) and, for dynamic files, on a second seeded tile of another size
    (about half ``imgsz``), which catches a graph that baked in the anchor grid of ``imgsz``. Raw heads must
    agree within ``atol`` on every value (box pixels, scores, angles) with a relative term of ``atol`` for
    large pixel values; end-to-end heads are compared as sets of rows (near ties may reorder the top k).

    Args:
        pt_path: Ultralytics checkpoint.
        out_path: the ``.onnx`` to write (its folder is created).
        imgsz: square input size, a multiple of 32 (default: the checkpoint's training ``imgsz``).
        name: model name stored in the metadata (default: the checkpoint's file stem).
        gsd: training ground sample distance in m/px, when known.
        class_map: raw class index (or raw class name) -> our class name; default DOTA map for DOTA models,
            identity by name for models trained on our taxonomy; required otherwise.
        verify: run the checks above (a failure raises and leaves ``out_path`` untouched).
        atol: tolerance of the verification.
        end_to_end: export the NMS-free one-to-one head (YOLO26 and other models that have one).
        opset: ONNX opset.
        simplify: run onnxslim on the graph (when installed).
        max_det: rows of the end-to-end output (the most detections per tile such a model can return). Such
            a model needs tiles with at least that many anchors (128 px for 300 rows).
        dynamic: dynamic height and width; ``False`` fixes the input at ``imgsz`` x ``imgsz`` (the files
            exported before dynamic sizes were added are of that kind; they then run only that tile size).

    Returns:
        ``out_path`` as a :class:`~pathlib.Path`.

    Raises:
        ModelError: the checkpoint cannot be read or mapped, or verification fails.
    """
    pt_path, out_path = Path(pt_path), Path(out_path)
    if pt_path.suffix.lower() != ".pt":
        if not pt_path.exists():
            raise ModelError(f"model file not found: {pt_path}")
        raise ModelError(f"{pt_path}: can only export Ultralytics .pt checkpoints, got {pt_path.suffix!r}")
    import onnx
    import torch

    model, ckpt = load_checkpoint(pt_path)
    head = model.model[-1]
    if end_to_end and getattr(head, "one2one_cv2", None) is None:
        raise ModelError(
            f"{pt_path}: end_to_end export needs a one-to-one (NMS-free) head, this model has none"
        )
    meta = meta_from_checkpoint(model, ckpt, pt_path, end_to_end=end_to_end, class_map=class_map)
    size = int(imgsz or meta.imgsz)
    stride = int(max(model.stride.tolist()))
    if size <= 0 or size % max(stride, 32):
        raise ValueError(f"imgsz must be a positive multiple of {max(stride, 32)}, got {size!r}")
    k = min(int(max_det), n_anchors(size))
    import ultralytics

    extra = dict(meta.extra)
    extra.update(
        {
            "source_file": pt_path.name,
            "exported": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "export_versions": {
                "ultralytics": ultralytics.__version__,
                "torch": torch.__version__,
                "onnx": onnx.__version__,
                "opset": int(opset),
            },
        }
    )
    if end_to_end:
        extra["max_det"] = k
    extra["dynamic_size"] = bool(dynamic)
    meta = ModelMeta(
        raw_names=meta.raw_names,
        class_map=meta.class_map,
        imgsz=size,
        task=meta.task,
        normalization="rgb/255",
        gsd=gsd if gsd is not None else meta.gsd,
        end_to_end=end_to_end,
        name=name or meta.name,
        extra=extra,
    )

    net = prepare_for_inference(model, end_to_end=end_to_end, max_det=k, export=True, dynamic=dynamic)
    torch.manual_seed(0)
    x_trace = torch.rand(1, 3, size, size)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(suffix=".onnx.tmp", dir=out_path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with torch.no_grad():
            kwargs: dict[str, Any] = {"dynamo": False}
            torch.onnx.export(
                net,
                (x_trace,),
                str(tmp),
                opset_version=int(opset),
                input_names=["images"],
                output_names=["output0"],
                dynamic_axes=_dynamic_axes(dynamic, end_to_end),
                **kwargs,
            )
        proto = onnx.load(str(tmp))
        if simplify:
            try:
                import onnxslim

                proto = onnxslim.slim(proto)
            except ImportError:
                log.info("onnxslim is not installed; keeping the unsimplified graph")
        if getattr(proto, "ir_version", 0) > 10:  # older onnxruntime builds read IR <= 10
            proto.ir_version = 10
        del proto.metadata_props[:]
        entry = proto.metadata_props.add()
        entry.key, entry.value = META_KEY, meta.to_json()
        onnx.checker.check_model(proto, full_check=True)
        onnx.save(proto, str(tmp))
        if verify:
            report = _verify_export(net, tmp, meta, atol, dynamic=dynamic)
            log.info("verified %s against PyTorch: %s", out_path.name, report)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a model file is for everyone to read
        os.replace(tmp, out_path)
    except ModelError:
        raise
    except Exception as e:
        raise ModelError(f"exporting {pt_path} to ONNX failed: {type(e).__name__}: {e}") from e
    finally:
        if tmp.exists():
            tmp.unlink()
    log.info(
        "exported %s -> %s (imgsz %d%s, %s, end_to_end=%s)",
        pt_path,
        out_path,
        size,
        ", any multiple of 32 accepted" if dynamic else ", fixed",
        meta.task,
        end_to_end,
    )
    return out_path


def _dynamic_axes(dynamic: bool, end_to_end: bool) -> dict[str, dict[int, str]]:
    """``torch.onnx.export`` dynamic axes: batch always; height, width and the anchors when ``dynamic``."""
    if not dynamic:
        return {"images": {0: "batch"}, "output0": {0: "batch"}}
    out = {0: "batch"} if end_to_end else {0: "batch", 2: "anchors"}  # end-to-end: always K rows
    return {"images": {0: "batch", 2: "height", 3: "width"}, "output0": out}


def min_tile(meta: ModelMeta) -> int:
    """The smallest tile side a model accepts: 32, or for end-to-end heads enough anchors for their K rows."""
    rows = int(meta.extra.get("max_det", 0)) if meta.end_to_end else 0
    size = STRIDE
    while n_anchors(size) < rows:
        size += STRIDE
    return size


def _second_size(meta: ModelMeta) -> int:
    """A tile size other than ``imgsz`` for the second verification: about half of it, else one step up."""
    half = max(min_tile(meta), meta.imgsz // 2 // STRIDE * STRIDE)
    return half if half != meta.imgsz else meta.imgsz + STRIDE


def _verify_export(
    net: Any, onnx_path: Path, meta: ModelMeta, atol: float, *, dynamic: bool = True
) -> dict[str, float]:
    """onnxruntime vs PyTorch on a seeded batch of 2 at ``imgsz`` (and, when ``dynamic``, one tile at another
    size); raise :class:`ModelError` beyond ``atol``. Returns the largest differences seen."""
    import torch

    from detector.backends.onnx import open_session, session_meta

    session = open_session(onnx_path, threads=None)
    session_meta(session, onnx_path)  # metadata matches the graph's shapes
    rng = np.random.default_rng(0)
    shapes = [(2, meta.imgsz)] + ([(1, _second_size(meta))] if dynamic else [])
    report: dict[str, float] = {}
    for batch, size in shapes:
        x = rng.random((batch, 3, size, size), dtype=np.float32)
        with torch.no_grad():
            ref = net(torch.from_numpy(x))
        ref = (ref[0] if isinstance(ref, (tuple, list)) else ref).numpy()
        try:
            got = session.run(None, {session.get_inputs()[0].name: x})[0]
        except Exception as e:  # onnxruntime's own error types
            raise ModelError(
                f"{onnx_path}: onnxruntime cannot run a {size}x{size} input: {type(e).__name__}: {e}"
            ) from e
        if got.shape != ref.shape:
            raise ModelError(
                f"{onnx_path}: ONNX output shape {got.shape} differs from PyTorch's {ref.shape} "
                f"for a {size}x{size} input"
            )
        for key, val in compare_outputs(ref, got, meta, atol, source=f"{onnx_path} ({size} px)").items():
            report[key] = max(report.get(key, 0.0), val)
    report["sizes"] = float(len(shapes))
    return report


def compare_outputs(
    ref: np.ndarray, got: np.ndarray, meta: ModelMeta, atol: float, source: Any = ""
) -> dict[str, float]:
    """Max abs differences between two raw outputs of the same network; raise :class:`ModelError` past ``atol``.

    Raw heads ``(B, C, A)``: boxes (pixels) may differ by ``atol + atol * |value|`` (float32 rounding grows
    with the coordinate), scores and angle by ``atol``. End-to-end heads ``(B, K, 6|7)``: sorted scores must agree, and every row
    scoring above the last (k-th) row must have a partner in the other output with the same class and
    score, box and angle within those tolerances (near ties may swap rows, so rows are matched as sets; up to
    1% may be unmatched, since a near tie at Ultralytics' first top-k cut over anchors changes the row set).
    """
    nc = len(meta.raw_names)
    if meta.end_to_end:
        sort_diff = float(np.abs(np.sort(ref[..., 4], 1) - np.sort(got[..., 4], 1)).max())
        needed = matched = 0
        for r, g in zip(ref, got, strict=True):
            match = (np.abs(r[:, None, 4] - g[None, :, 4]) <= atol) & (r[:, None, 5] == g[None, :, 5])
            match &= np.all(
                np.abs(r[:, None, :4] - g[None, :, :4]) <= atol + atol * np.abs(r[:, None, :4]), -1
            )
            if meta.task == "obb":
                match &= _angle_diff(r[:, None, 6], g[None, :, 6]) <= atol
            need = r[:, 4] > r[-1, 4] + atol  # rows at the top-k boundary may legitimately fall out
            needed += int(need.sum())
            matched += int(match[need].any(axis=1).sum())
        report = {"score_sorted": sort_diff, "rows": float(needed), "rows_unmatched": float(needed - matched)}
        # Ultralytics picks the top-k anchors by best score first, then the top-k (anchor, class) pairs: an
        # anchor at the first cut can change the row set away from the last row, so allow 1% unmatched rows.
        ok = sort_diff <= atol and needed - matched <= 0.01 * needed
    else:
        boxes_ok = np.abs(ref[:, :4] - got[:, :4]) <= atol + atol * np.abs(ref[:, :4])
        report = {
            "box": float(np.abs(ref[:, :4] - got[:, :4]).max()),
            "score": float(np.abs(ref[:, 4 : 4 + nc] - got[:, 4 : 4 + nc]).max()),
        }
        if meta.task == "obb":
            report["angle"] = float(_angle_diff(ref[:, 4 + nc], got[:, 4 + nc]).max())
        ok = bool(boxes_ok.all()) and report["score"] <= atol and report.get("angle", 0.0) <= atol
    if not ok:
        raise ModelError(
            f"{source}: ONNX output differs from PyTorch beyond atol={atol}: max differences {report}"
        )
    return report


def _angle_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Absolute angle difference modulo pi (a rectangle turned by pi is the same rectangle)."""
    d = np.abs(a - b) % np.pi
    return np.minimum(d, np.pi - d)
