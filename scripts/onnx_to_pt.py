"""Rebuild an Ultralytics ``.pt`` from one of our exported ``.onnx`` files, for the SAHI side of the bench.

SAHI runs Ultralytics ``.pt`` checkpoints. The shipped ``weights/detector.onnx`` is our export of a fused YOLOv8n
detect model whose training checkpoint is not kept in the repository. The ONNX initializers keep the fused
PyTorch parameter names (``model.0.conv.weight`` ...), so the same architecture, fused, takes them back exactly.
The script checks that every parameter was found and that the rebuilt model reproduces the ONNX outputs on a
real tile before it writes the checkpoint (atomically).

Usage::

    python scripts/onnx_to_pt.py weights/detector.onnx -o build/bench/detector.pt
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def rebuild(onnx_path: Path, out: Path, check_image: Path | None = None) -> Path:
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import numpy_helper
    from ultralytics.nn.tasks import DetectionModel, OBBModel

    from detector.writers import atomic_path

    proto = onnx.load(str(onnx_path))
    props = {p.key: p.value for p in proto.metadata_props}
    meta = json.loads(props["detector_meta"])
    arch = meta.get("extra", {}).get("architecture") or "yolov8n.yaml"
    names = dict(enumerate(meta["raw_names"]))
    cls = OBBModel if meta["task"] == "obb" else DetectionModel
    model = cls(
        arch if meta["task"] == "detect" else arch.replace(".yaml", "-obb.yaml"), nc=len(names), verbose=False
    )
    model.eval()
    model.fuse(verbose=False)
    state = model.state_dict()
    inits = {i.name: numpy_helper.to_array(i) for i in proto.graph.initializer}
    missing = [
        k
        for k, v in state.items()
        if v.dtype.is_floating_point and k not in inits and "anchors" not in k and "strides" not in k
    ]
    if missing:
        raise SystemExit(f"{onnx_path}: {len(missing)} parameters not in the ONNX file, e.g. {missing[:3]}")
    new = {k: (torch.from_numpy(inits[k].copy()) if k in inits else v) for k, v in state.items()}
    model.load_state_dict(new, strict=True)
    model.names = names
    # same outputs as the ONNX file on one input
    size = int(meta["imgsz"])
    rng = np.random.default_rng(0)
    if check_image is not None:
        from PIL import Image

        img = np.asarray(Image.open(check_image).convert("RGB").resize((size, size)), np.float32) / 255.0
        x = img.transpose(2, 0, 1)[None]
    else:
        x = rng.random((1, 3, size, size), np.float32)
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    want = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    with torch.no_grad():
        got = model(torch.from_numpy(x))
        got = (got[0] if isinstance(got, (list, tuple)) else got).numpy()
    err = float(np.abs(got - want).max())
    if got.shape != want.shape or err > 1e-2:
        raise SystemExit(f"{onnx_path}: rebuilt model differs from the ONNX outputs (max abs diff {err:.3g})")
    ckpt = {
        "model": model.float(),
        "train_args": {"imgsz": size, "task": meta["task"]},
        "rebuilt_from": str(onnx_path),
        "max_abs_diff": err,
    }
    with atomic_path(out) as tmp:
        torch.save(ckpt, tmp)
    print(f"wrote {out} (max abs diff vs ONNX {err:.2e}, {len(inits)} initializers)")
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("onnx", type=Path)
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--check-image", type=Path, default=None, help="a real image for the output check")
    a = ap.parse_args(argv)
    rebuild(a.onnx, a.out, a.check_image)


if __name__ == "__main__":
    main()
