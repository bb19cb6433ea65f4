"""Weight-space ensembling of a fine-tuned model with the model it started from (WiSE-FT).

Fine-tuning on our few sources makes the model forget part of what the DOTA-trained start knew (DOTA-style
vehicles at 0.1-0.15 m: the start scores 0.98 AP50 on the DOTA demo scenes, the fine-tuned model 0.96).
Averaging the two models' weights, ``alpha * finetuned + (1 - alpha) * start``, keeps most of the fine-tuning
gain and gives back much of the forgotten knowledge (Wortsman et al., "Robust fine-tuning of zero-shot models",
CVPR 2022). It works here because the fine-tuned model never left the start's basin: same architecture, and the
start's class head is the one :func:`training.train.build_model` remapped to our 4 classes.

The flow: :func:`training.train.build_model` rebuilds the remapped start from the pretrained checkpoint ->
:func:`interpolate_state` mixes the floating-point tensors (integer buffers such as BatchNorm's
``num_batches_tracked`` come from the fine-tuned model) -> :func:`wise` writes an Ultralytics checkpoint that
``detector export`` turns into ONNX like any other ``best.pt``.

Run ``python -m training.wise FINETUNED.pt --start weights/pretrained/yolov8n-obb.pt --alpha 0.9 -o OUT.pt``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from detector.writers import WriteError, atomic_path
from training.train import AUTO, build_model

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)


def interpolate_state(
    finetuned: Mapping[str, torch.Tensor], start: Mapping[str, torch.Tensor], alpha: float
) -> dict[str, torch.Tensor]:
    """``alpha * finetuned + (1 - alpha) * start`` for every floating-point tensor; pure.

    Args:
        finetuned: the fine-tuned model's state dict.
        start: the start model's state dict, with the same names and shapes.
        alpha: weight of the fine-tuned model, in ``[0, 1]`` (1 gives the fine-tuned model back).

    Returns:
        A new state dict (fresh tensors, the fine-tuned model's dtypes); non-float tensors are copies of the
        fine-tuned ones.

    Raises:
        ValueError: ``alpha`` is outside ``[0, 1]``, or the two state dicts differ in names or shapes.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    missing = sorted(set(finetuned) ^ set(start))
    if missing:
        raise ValueError(f"the models differ in {len(missing)} tensors, e.g. {missing[:3]}")
    out: dict[str, torch.Tensor] = {}
    for k, f in finetuned.items():
        s = start[k]
        if f.shape != s.shape:
            raise ValueError(
                f"{k}: shape {tuple(f.shape)} in the fine-tuned model, {tuple(s.shape)} in the start"
            )
        if f.dtype.is_floating_point:
            out[k] = (alpha * f.detach().float() + (1.0 - alpha) * s.detach().float()).to(f.dtype)
        else:
            out[k] = f.detach().clone()
    return out


def wise(
    finetuned: str | Path,
    start: str | Path,
    out: str | Path,
    alpha: float,
    *,
    class_index: Sequence[int | None] | str | None = AUTO,
) -> Path:
    """Write the WiSE-FT mix of a fine-tuned checkpoint and its (remapped) pretrained start.

    Args:
        finetuned: the fine-tuned Ultralytics checkpoint (``runs/NAME/weights/best.pt``).
        start: the pretrained checkpoint the fine-tuning started from (e.g. the DOTA ``yolov8n-obb.pt``); it is
            remapped exactly as training remapped it (same task as the fine-tuned model, ``class_index``).
        out: the checkpoint to write (atomically); the fine-tuned checkpoint's other entries are kept and a
            ``wise`` entry records the inputs and ``alpha``.
        alpha: weight of the fine-tuned model (see :func:`interpolate_state`).
        class_index: source class channel per output class, as in training (``"auto"``: derived from the
            two models' class names, see :func:`training.train.auto_class_index`).

    Returns:
        ``out``.

    Raises:
        FileNotFoundError: a checkpoint does not exist.
        WriteError: ``out`` cannot be written (``out`` is left as it was).
        ValueError: ``alpha`` is out of range, or the start cannot be remapped to the fine-tuned architecture
            (message names both files).
    """
    import torch
    from ultralytics.nn.tasks import load_checkpoint

    from detector.backends.torch import check_checkpoint

    finetuned, start, out = Path(finetuned), Path(start), Path(out)
    for p in (finetuned, start):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: no such checkpoint")
    for p in (finetuned, start):
        check_checkpoint(p)  # untrusted files: refuse arbitrary code before anything unpickles them
    ft_model, ckpt = load_checkpoint(finetuned)  # ckpt: the checkpoint dict, its other entries are kept
    task = "obb" if type(ft_model).__name__ == "OBBModel" else "detect"
    start_model, _ = build_model(
        start, task=task, class_index=class_index, names=list(ft_model.names.values())
    )
    try:
        state = interpolate_state(ft_model.state_dict(), start_model.state_dict(), alpha)
    except ValueError as e:
        raise ValueError(f"{finetuned} and {start} do not have the same architecture: {e}") from e
    ft_model.load_state_dict(state)  # fresh tensors: safe to load into the model they were mixed from

    ckpt["model"] = ft_model.half()
    ckpt["ema"] = None
    ckpt["optimizer"] = None
    ckpt["wise"] = {"finetuned": str(finetuned), "start": str(start), "alpha": float(alpha)}
    with atomic_path(out) as tmp:
        torch.save(ckpt, tmp)
    logger.info("wrote %s = %.3g x %s + %.3g x %s", out, alpha, finetuned, 1 - alpha, start)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training.wise FINETUNED --start PRETRAINED --alpha A -o OUT``; returns the exit status."""
    ap = argparse.ArgumentParser(prog="python -m training.wise", description=__doc__.splitlines()[0])
    ap.add_argument("finetuned", help="fine-tuned checkpoint (runs/NAME/weights/best.pt)")
    ap.add_argument("--start", required=True, help="the pretrained checkpoint fine-tuning started from")
    ap.add_argument("--alpha", type=float, required=True, help="weight of the fine-tuned model, 0..1")
    ap.add_argument("-o", "--out", required=True, help="checkpoint to write")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        print(wise(args.finetuned, args.start, args.out, args.alpha))
    except (FileNotFoundError, ValueError, WriteError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
