"""The PyTorch backend: safe reading of Ultralytics ``.pt`` checkpoints and :class:`TorchPredictor` (GPU path).

**Checkpoints are untrusted input.** A ``.pt`` file is a pickle, and unpickling can run any code the file
names. :func:`load_checkpoint` never unpickles before it has listed every global the pickle references
(statically, with ``torch.serialization.get_unsafe_globals_in_checkpoint``) and checked each against an
explicit allow-list: the ``torch.nn`` and Ultralytics network classes a real checkpoint is made of, a few data
types (numpy scalars, Ultralytics' argument namespace, paths) and a ``getattr`` restricted to functions of
those classes. Anything else is refused with a :class:`~detector.errors.ModelError` naming the file and the
global. Only then is the file read with ``torch.load(weights_only=True)``, whose own unpickler refuses every
global outside the same list. The allowed classes can only be *re-created* (``__new__`` plus their state, as a
real checkpoint does), never *called*: calling a network class runs its constructor on arguments from the file
(Ultralytics' model constructor ``eval``\\ s the activation named in its YAML), so each class is registered
behind a stand-in that builds instances of the real class but refuses to be called. Ultralytics' own loader
(``weights_only=False``) is never used.

:class:`TorchPredictor` sends the batch of tiles straight through the underlying ``nn.Module`` (no
Ultralytics predictor, no letterboxing: tiles are already square, any multiple of 32 px; ``meta.imgsz`` is
only the default tile size the pipeline picks), in half precision on CUDA, and decodes on the device with
Ultralytics' own NMS operators (``torchvision.ops.nms`` for boxes, ``TorchNMS.fast_nms`` with
``batch_probiou`` for rotated boxes). Decoding rules are those of :mod:`detector.backends.decode` (best raw
class, ``score > conf``, classes outside the class map dropped, NMS on our class ids, ``max_det``), so every
backend returns the same detections up to floating point.

Needs the ``[train]`` extra (torch, torchvision, ultralytics), imported when a checkpoint is read; importing
this module imports neither.
"""

from __future__ import annotations

import inspect
import json
import logging
import pickle
import threading
import zipfile
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from detector.backends.base import CPU_BATCH, GPU_BATCH, META_KEY, ModelMeta
from detector.backends.decode import (
    MAX_NMS,
    MAX_WH,
    check_class_map,
    check_tiles,
    class_lut,
    default_class_map,
    default_names,
    normalize_name,
    rbox_to_xyxy,
    regularize_rboxes,
)
from detector.detections import Detections
from detector.errors import ModelError

log = logging.getLogger(__name__)

#: Modules whose ``nn.Module`` subclasses a checkpoint may re-create (the network's layers), as prefixes.
SAFE_MODULE_PREFIXES = ("torch.nn.modules.", "ultralytics.nn.modules.")
#: Modules whose ``nn.Module`` subclasses a checkpoint may re-create (the whole models), exactly.
SAFE_MODEL_MODULES = ("ultralytics.nn.tasks",)
#: Old spellings of classes in checkpoints of earlier Ultralytics releases -> where they live now.
LEGACY_ALIASES = {
    "ultralytics.yolo.utils.IterableSimpleNamespace": "ultralytics.utils.IterableSimpleNamespace",
    "ultralytics.nn.modules.block.Silence": "torch.nn.modules.linear.Identity",
    "ultralytics.nn.tasks.YOLOv10DetectionModel": "ultralytics.nn.tasks.DetectionModel",
}
#: Data (not network) globals of real checkpoints: training arguments, numpy scalars in metrics, paths.
SAFE_DATA_GLOBALS = (
    "ultralytics.utils.IterableSimpleNamespace",
    "numpy.dtype",
    "numpy.core.multiarray.scalar",
    "numpy._core.multiarray.scalar",
    "numpy.core.multiarray._reconstruct",
    "numpy._core.multiarray._reconstruct",
    "numpy.ndarray",
    "pathlib.PosixPath",
    "pathlib.WindowsPath",
    "pathlib._local.PosixPath",
    "pathlib._local.WindowsPath",
)
_LOAD_LOCK = threading.Lock()  # torch's safe-globals list is process-wide: one restricted load at a time


def _refuse(path: Path, name: str) -> ModelError:
    return ModelError(f"{path}: refusing to load: the checkpoint needs arbitrary code ({name})")


class _NotCallable(type):
    """Metaclass of the stand-ins: ``Stand(*args)`` (pickle's REDUCE, i.e. a constructor call) is refused."""

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        raise pickle.UnpicklingError(f"refusing to call {cls.__qualname__} (a constructor call in a pickle)")


def _stand_in(real: type, name: str) -> type:
    """A class that the unpickler may name and re-create (``__new__``) but not call, building ``real`` objects."""

    def __new__(cls: type, *args: Any) -> Any:  # noqa: N807  (pickle's NEWOBJ: cls.__new__(cls, *args))
        return real.__new__(real, *args) if real.__new__ is not object.__new__ else object.__new__(real)

    return _NotCallable(f"SafeLoad[{name}]", (), {"__new__": __new__, "__qualname__": name})


def _resolve(name: str) -> Any | None:
    """The object an allowed global name stands for, or ``None`` when it is not allowed.

    Only modules that are already imported (torch.nn, numpy, pathlib and the Ultralytics network modules
    that ``ultralytics.nn.tasks`` imports) are looked in: a name never makes a module import.
    """
    import sys

    import torch

    name = LEGACY_ALIASES.get(name, name)
    module, _, attr = name.rpartition(".")
    obj = getattr(sys.modules.get(module), attr, None) if module in sys.modules else None
    if obj is None:
        return None
    if name in SAFE_DATA_GLOBALS:
        return obj
    in_layers = any(module.startswith(p) or module + "." == p for p in SAFE_MODULE_PREFIXES)
    if (in_layers or module in SAFE_MODEL_MODULES) and isinstance(obj, type):
        if issubclass(obj, torch.nn.Module) and obj.__module__ == module:
            return obj
    return None


def _restricted_getattr(classes: Mapping[Any, type]) -> Any:
    """``getattr`` for the pickle, limited to plain functions of allowed network classes (``Detect.forward``).

    ``classes`` maps what the pickle holds for a class (its stand-in) to the real class.
    """

    def getattr_(obj: Any, name: str) -> Any:
        real = classes.get(obj) if isinstance(obj, type) else None
        if real is not None and not name.startswith("__"):
            value = inspect.getattr_static(real, name, None)
            if inspect.isfunction(value):
                return value
        what = getattr(real or obj, "__qualname__", type(obj).__qualname__)
        raise pickle.UnpicklingError(f"refusing getattr({what}, {name!r})")

    return getattr_


def check_checkpoint(path: str | Path) -> list[str]:
    """The globals a checkpoint's pickle needs beyond torch's own safe set, read without unpickling.

    Raises:
        ModelError: the file is not a ``torch.save`` zip archive, or it needs a global outside the
            allow-list (the message names it).
    """
    import torch

    p = Path(path)
    try:
        needed = sorted(torch.serialization.get_unsafe_globals_in_checkpoint(str(p)))
    except (ValueError, RuntimeError, zipfile.BadZipFile, KeyError) as e:
        raise ModelError(
            f"{p} is not an Ultralytics model checkpoint: not a torch.save archive ({type(e).__name__}: {e})"
        ) from e
    for name in needed:
        if name != "builtins.getattr" and _resolve(name) is None:
            raise _refuse(p, name)
    return needed


def safe_torch_load(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` with the allow-list of :func:`check_checkpoint` (checked first).

    Raises:
        ModelError: the file is not a checkpoint, or needs code outside the allow-list.
    """
    import torch
    import ultralytics.nn.tasks  # noqa: F401  (imports the network modules the allow-list looks in)

    p = Path(path)
    needed = check_checkpoint(p)
    entries: list[Any] = []
    stand_ins: dict[Any, type] = {}
    for name in needed:
        if name == "builtins.getattr":
            continue
        obj = _resolve(name)
        if name in SAFE_DATA_GLOBALS or LEGACY_ALIASES.get(name) in SAFE_DATA_GLOBALS:
            entries.append((obj, name))  # data types, called by the pickle as their __reduce__ says
        else:
            # a network class: the name resolves to a stand-in (re-create, never call); BUILD checks the real
            # type, registered under a key no GLOBAL can spell (a pickle GLOBAL is one line, this key has two)
            if not isinstance(obj, type):  # check_checkpoint resolved every name to a class or data
                raise _refuse(p, name)
            stand = _stand_in(obj, name)
            stand_ins[stand] = obj
            entries += [(stand, name), (obj, f"\nreal\n{name}")]
    if "builtins.getattr" in needed:
        entries.append((_restricted_getattr(stand_ins), "builtins.getattr"))
    if "numpy.dtype" in needed:  # a pickled dtype is built as its class (Float64DType, ...), never named
        import numpy.dtypes

        dtypes = [c for c in vars(numpy.dtypes).values() if isinstance(c, type) and issubclass(c, np.dtype)]
        entries += [(c, f"\nreal\nnumpy.dtypes.{c.__name__}") for c in dtypes]
    with _LOAD_LOCK, torch.serialization.safe_globals(entries):
        try:
            return torch.load(str(p), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as e:
            raise ModelError(f"{p}: refusing to load: {_unpickler_reason(e)}") from e
        except Exception as e:  # truncated archives, missing records, ...
            raise ModelError(f"{p} is not an Ultralytics model checkpoint: {type(e).__name__}: {e}") from e


def _unpickler_reason(e: BaseException) -> str:
    """The one line of torch's long ``weights_only`` message that says what was refused."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if "WeightsUnpickler error:" in ln:
            rest = ln.split("WeightsUnpickler error:", 1)[1].strip()
            return rest or (lines[i + 1] if i + 1 < len(lines) else ln)
    return lines[0] if lines else type(e).__name__


def load_checkpoint(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """Load an Ultralytics ``.pt`` checkpoint safely on the CPU (float32, eval mode, not fused): ``(model, ckpt)``.

    See the module docstring for what "safely" means. The model is the EMA weights when the checkpoint has
    them (as Ultralytics loads it), with ``args`` (Ultralytics' defaults updated by the training arguments),
    ``pt_path``, ``task`` and ``stride`` set.

    Raises:
        ModelError: missing file, a checkpoint that needs arbitrary code, or not an Ultralytics detect/OBB
            checkpoint.
    """
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"model file not found: {p}")
    try:
        import torch
        from ultralytics.cfg import DEFAULT_CFG_DICT
        from ultralytics.nn.tasks import guess_model_task
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ModelError(f"{p}: reading .pt models needs the [train] extra (torch, ultralytics): {e}") from e
    ckpt = safe_torch_load(p)
    if not isinstance(ckpt, dict):
        raise ModelError(f"{p} is not an Ultralytics model checkpoint: it holds a {type(ckpt).__name__}")
    model = ckpt.get("ema") or ckpt.get("model")
    if not isinstance(model, torch.nn.Module):
        raise ModelError(f"{p} is not an Ultralytics model checkpoint: no 'model' network in it")
    if ckpt.get("modelopt"):
        raise ModelError(f"{p}: quantisation-aware (modelopt) checkpoints are not supported")
    net: Any = model.float()  # Ultralytics models take attributes nn.Module's typing does not know
    train_args = ckpt.get("train_args") or {}
    net.args = {**DEFAULT_CFG_DICT, **(dict(train_args) if isinstance(train_args, Mapping) else {})}
    net.pt_path = str(p)
    if not hasattr(net, "task"):
        net.task = guess_model_task(net)
    if not hasattr(net, "stride"):
        net.stride = torch.tensor([32.0])
    model = net.eval()
    for m in model.modules():
        if hasattr(m, "inplace"):
            m.inplace = True
        elif isinstance(m, torch.nn.Upsample) and not hasattr(m, "recompute_scale_factor"):
            m.recompute_scale_factor = None
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
    names: tuple[str, ...] | None = None,
) -> ModelMeta:
    """:class:`ModelMeta` for an Ultralytics model loaded from a checkpoint.

    A ``META_KEY`` entry in the checkpoint dict (JSON text or a dict of ModelMeta fields, written by our
    training) wins for ``class_map``, ``names``, ``gsd``, ``gsd_range``, ``name``, ``imgsz`` and ``extra``;
    raw names, task and the head come from the network itself. Otherwise: :func:`default_class_map`, the
    training ``imgsz``, no GSD.

    ``end_to_end`` selects the NMS-free one-to-one head of YOLO26-style models (``None``: as stored, else
    off, which is also Ultralytics 8.4's default; heads without one-to-one branch are never end-to-end).
    An explicit ``class_map`` (raw index or name -> output name) and explicit output ``names`` (in class-id
    order) win over both; without names, :func:`~detector.backends.decode.default_names` of the class map.
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
    if names is None and stored.get("names"):
        names = tuple(str(n) for n in stored["names"])
    names = tuple(normalize_name(n) for n in names) if names else None
    if class_map is not None:
        cmap = check_class_map(class_map, raw_names, source, names)
    elif "class_map" in stored:
        cmap = check_class_map(stored["class_map"], raw_names, source, names)
    else:
        cmap = default_class_map(raw_names, source, names)
    if names is None:
        names = default_names(cmap)
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
            names=names,
            gsd_range=tuple(stored["gsd_range"]) if stored.get("gsd_range") else None,
        )
    except ValueError as e:
        raise ModelError(f"{source}: {e}") from e


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


class TorchPredictor:
    """An Ultralytics detect/OBB checkpoint run with PyTorch. Implements the Predictor protocol.

    Args:
        path: the ``.pt`` checkpoint (read with :func:`load_checkpoint`, metadata from :func:`meta_from_checkpoint`).
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        conf, iou, max_det: as for :class:`~detector.backends.onnx.OnnxPredictor`.
        threads: ``torch.set_num_threads`` (process-wide; ``None`` leaves torch's default).
        half: half precision; ``None`` means on CUDA only.
        end_to_end: use the NMS-free one-to-one head when the model has one (``None``: the checkpoint's
            stored choice, else off).
        imgsz: report this default tile size instead of the checkpoint's training size (a multiple of 32);
            tiles of any multiple of 32 run either way.
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
        half: bool | None = None,
        end_to_end: bool | None = None,
        imgsz: int | None = None,
    ) -> None:
        import torch

        self.path = Path(path)
        self.fixed_size: int | None = None  # fully convolutional: any multiple of 32 (the balanced tile grid)
        dev = str(device).lower()
        if dev.startswith("cuda") and not torch.cuda.is_available():
            log.warning(
                "device=%r asked for, but torch sees no CUDA device; running %s on the CPU",
                device,
                self.path.name,
            )
            dev = "cpu"
        elif not (dev == "cpu" or dev.startswith("cuda")):
            raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
        if threads is not None:
            torch.set_num_threads(int(threads))
        model, ckpt = load_checkpoint(self.path)
        self.meta: ModelMeta = meta_from_checkpoint(model, ckpt, self.path, end_to_end=end_to_end)
        if imgsz is not None:
            self.meta = replace(self.meta, imgsz=int(imgsz))  # ModelMeta checks it is a multiple of 32
        self.conf, self.iou, self.max_det = float(conf), float(iou), int(max_det)
        self.device = torch.device(dev)
        self.half = self.device.type == "cuda" if half is None else bool(half)
        # End-to-end heads return their top-k rows; keep enough candidates for the class filter.
        net = prepare_for_inference(
            model, end_to_end=self.meta.end_to_end, max_det=max(self.max_det, 300), export=True
        )
        net = net.to(self.device)
        self.model = net.half() if self.half else net
        self.lut = torch.as_tensor(class_lut(self.meta), device=self.device)
        log.info(
            "loaded %s (%s, imgsz %d, end_to_end=%s) on %s%s",
            self.path.name,
            self.meta.task,
            self.meta.imgsz,
            self.meta.end_to_end,
            self.device,
            " fp16" if self.half else "",
        )

    @property
    def preferred_batch(self) -> int:
        """Tiles per call when ``TileConfig.batch`` is ``None``: :data:`~detector.backends.base.GPU_BATCH` on
        CUDA, :data:`~detector.backends.base.CPU_BATCH` on the CPU."""
        return GPU_BATCH if self.device.type == "cuda" else CPU_BATCH

    def run(self, tiles: np.ndarray) -> Any:
        """The raw network output tensor (on the device) for ``(B, S, S, 3)`` uint8 tiles."""
        import torch

        check_tiles(tiles)  # any multiple of 32: the network is fully convolutional, anchors follow the input
        x = torch.from_numpy(np.ascontiguousarray(tiles)).to(self.device, non_blocking=True)
        x = x.permute(0, 3, 1, 2).to(torch.float16 if self.half else torch.float32).div_(255.0)
        with torch.inference_mode():
            y = self.model(x)
        return y[0] if isinstance(y, (tuple, list)) else y

    def predict_batch(self, tiles: np.ndarray) -> list[Detections]:
        """``(B, S, S, 3)`` uint8 RGB tiles -> one :class:`Detections` per tile, in tile pixels."""
        if len(tiles) == 0:
            return []
        import torch

        out = self.run(tiles)
        with torch.inference_mode():
            return [self._decode(p.float()) for p in out]

    def _decode(self, pred: Any) -> Detections:
        import torch

        rotated = self.meta.task == "obb"
        if self.meta.end_to_end:
            raw = pred[:, 5].long()
            rows = torch.nonzero((pred[:, 4] > self.conf) & (raw >= 0) & (raw < len(self.lut))).view(-1)
            ours = self.lut[raw[rows]]
            rows, ours = rows[ours >= 0][: self.max_det], ours[ours >= 0][: self.max_det]
            sel = pred[rows]
            scores = sel[:, 4]
            boxes = torch.cat([sel[:, :4], sel[:, 6:7]], 1) if rotated else sel[:, :4]
        else:
            nc = len(self.meta.raw_names)
            cls_scores = pred[4 : 4 + nc]
            idx = torch.nonzero(cls_scores.amax(0) > self.conf).view(-1)
            scores, raw = cls_scores[:, idx].max(0)
            ours = self.lut[raw]
            keep = ours >= 0
            idx, scores, ours = idx[keep], scores[keep], ours[keep]
            if len(idx) > MAX_NMS:
                top = scores.argsort(descending=True)[:MAX_NMS]
                idx, scores, ours = idx[top], scores[top], ours[top]
            box = pred[:4, idx].T
            offset = ours[:, None].to(box.dtype) * MAX_WH
            if rotated:
                from ultralytics.utils.metrics import batch_probiou
                from ultralytics.utils.nms import TorchNMS

                boxes = torch.cat([box, pred[4 + nc, idx, None]], 1)
                shifted = torch.cat([boxes[:, :2] + offset, boxes[:, 2:]], 1)
                i = TorchNMS.fast_nms(shifted, scores, self.iou, iou_func=batch_probiou)
            else:
                import torchvision
                from ultralytics.utils.ops import xywh2xyxy

                boxes = xywh2xyxy(box)
                i = torchvision.ops.nms(boxes + offset, scores, self.iou)
            i = i[: self.max_det]
            boxes, scores, ours = boxes[i], scores[i], ours[i]
        boxes_np = boxes.double().cpu().numpy()
        scores_np = scores.cpu().numpy().astype(np.float32)
        ids = ours.cpu().numpy().astype(np.int64)
        if rotated:
            xywhr = regularize_rboxes(boxes_np)
            return Detections(rbox_to_xyxy(xywhr), scores_np, ids, self.meta.names, xywhr=xywhr)
        return Detections(boxes_np, scores_np, ids, self.meta.names)

    def __repr__(self) -> str:
        return f"TorchPredictor({str(self.path)!r}, task={self.meta.task!r}, device={str(self.device)!r})"
