"""The PyTorch backend (GPU path): :class:`TorchPredictor` runs an Ultralytics ``.pt`` checkpoint.

The batch of tiles goes straight through the underlying ``nn.Module`` (no Ultralytics predictor, no
letterboxing: tiles are already square, any multiple of 32 px; ``meta.imgsz`` is only the default tile size
the pipeline picks), in half precision on CUDA, and is decoded on the device
with Ultralytics' own NMS operators (``torchvision.ops.nms`` for boxes, ``TorchNMS.fast_nms`` with
``batch_probiou`` for rotated boxes). Decoding rules are those of :mod:`detector.backends.onnx` (best raw
class, ``score > conf``, classes outside the class map dropped, NMS on our class ids, ``max_det``), so both
backends return the same detections up to floating point.

Needs the ``[train]`` extra (torch, torchvision, ultralytics), imported when a predictor is built.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from detector.backends.base import TAXONOMY, ModelMeta
from detector.backends.onnx import MAX_NMS, MAX_WH, class_lut, rbox_to_xyxy, regularize_rboxes
from detector.detections import Detections

log = logging.getLogger(__name__)


class TorchPredictor:
    """An Ultralytics detect/OBB checkpoint run with PyTorch. Implements the Predictor protocol.

    Args:
        path: the ``.pt`` checkpoint (metadata from :func:`detector.model.meta_from_checkpoint`).
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

        from detector.model import load_checkpoint, meta_from_checkpoint, prepare_for_inference

        self.path = Path(path)
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

    def run(self, tiles: np.ndarray) -> Any:
        """The raw network output tensor (on the device) for ``(B, S, S, 3)`` uint8 tiles."""
        import torch

        from detector.backends.onnx import check_tiles

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
            return Detections(rbox_to_xyxy(xywhr), scores_np, ids, TAXONOMY, xywhr=xywhr)
        return Detections(boxes_np, scores_np, ids, TAXONOMY)

    def __repr__(self) -> str:
        return f"TorchPredictor({str(self.path)!r}, task={self.meta.task!r}, device={str(self.device)!r})"
