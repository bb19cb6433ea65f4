"""ONNX export of Ultralytics checkpoints, verified against PyTorch (needs the ``[train]`` extra).

:func:`export_onnx` writes a self-describing ``.onnx`` (our :class:`~detector.backends.base.ModelMeta` in its
``metadata_props``) that inference runs with onnxruntime or OpenVINO alone. The checkpoint reading it builds
on (safe loading, metadata from a checkpoint, readying the network) lives with the PyTorch backend in
:mod:`detector.backends.torch`, which inference on ``.pt`` files needs too; it is re-exported here so that
training code has one place to import model-file surgery from.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from detector.backends.base import META_KEY, ModelMeta
from detector.backends.decode import STRIDE, min_tile, n_anchors
from detector.backends.torch import (
    load_checkpoint,
    meta_from_checkpoint,
    prepare_for_inference,
)
from detector.errors import ModelError

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_ATOL",
    "DEFAULT_OPSET",
    "compare_outputs",
    "export_onnx",
    "load_checkpoint",
    "meta_from_checkpoint",
    "prepare_for_inference",
]

#: Default ONNX opset: what Ultralytics 8.4 picks for torch>=2.4 (opset 19+ puts Resize/ReduceMax on the CPU
#: under onnxruntime's CUDA provider), and onnxruntime>=1.14 runs it.
DEFAULT_OPSET = 18

#: Default export tolerance on the raw network output (pixels for boxes, probability for scores, radians for
#: angles). See :func:`export_onnx`.
DEFAULT_ATOL = 1e-3


def export_onnx(
    pt_path: str | Path,
    out_path: str | Path,
    *,
    imgsz: int | None = None,
    name: str = "",
    gsd: float | None = None,
    class_map: Mapping[Any, str] | None = None,
    names: tuple[str, ...] | None = None,
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
        class_map: raw class index (or raw class name) -> output class name; default: the ``dota_v1`` table
            of ``configs/taxonomy.yaml`` for DOTA models, identity by name for any other model.
        names: the model's output class names in class-id order (``ModelMeta.names``); default: the
            taxonomy's classes when the class map stays within them, else the class map's own classes.
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
    meta = meta_from_checkpoint(model, ckpt, pt_path, end_to_end=end_to_end, class_map=class_map, names=names)
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
        names=meta.names,
        gsd_range=meta.gsd_range,
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
