"""WiSE-FT weight mixing: the pure interpolation and a checkpoint written from the real pretrained start."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ultralytics")

from detector.model import meta_from_checkpoint  # noqa: E402
from detector.taxonomy import default_classes  # noqa: E402
from training.train import build_model  # noqa: E402
from training.wise import interpolate_state, main, wise  # noqa: E402

TAXONOMY = default_classes()  # our classes in id order (configs/taxonomy.yaml)


def _state(**tensors):
    return {k: torch.tensor(v) for k, v in tensors.items()}


def test_interpolate_state_mixes_floats_and_keeps_integer_buffers():
    ft = _state(w=[1.0, 3.0], n=5)
    start = _state(w=[3.0, -1.0], n=9)
    out = interpolate_state(ft, start, 0.25)
    assert torch.allclose(out["w"], torch.tensor([2.5, 0.0]))
    assert out["n"].item() == 5 and out["n"].dtype == ft["n"].dtype
    assert torch.equal(interpolate_state(ft, start, 1.0)["w"], ft["w"])
    assert torch.equal(interpolate_state(ft, start, 0.0)["w"], start["w"])
    # pure: inputs untouched, outputs are fresh tensors
    assert ft["w"].tolist() == [1.0, 3.0] and out["w"] is not ft["w"]


def test_interpolate_state_uses_the_finetuned_dtype():
    out = interpolate_state(_state(w=[1.0]), {"w": torch.tensor([0.0], dtype=torch.float16)}, 0.5)
    assert out["w"].dtype == torch.float32 and out["w"].item() == 0.5


@pytest.mark.parametrize(
    "ft, start, alpha, match",
    [
        ({"w": [1.0]}, {"w": [1.0]}, 1.5, "alpha"),
        ({"w": [1.0]}, {"v": [1.0]}, 0.5, "differ in 2 tensors"),
        ({"w": [1.0]}, {"w": [1.0, 2.0]}, 0.5, "w: shape"),
    ],
)
def test_interpolate_state_rejects_mismatches(ft, start, alpha, match):
    with pytest.raises(ValueError, match=match):
        interpolate_state(_state(**ft), _state(**start), alpha)


def _fake_finetuned(pretrained_pt, path):
    """A 'fine-tuned' checkpoint: the remapped start with every float tensor shifted by +1."""
    model, _ = build_model(pretrained_pt)
    with torch.no_grad():
        for t in model.state_dict().values():
            if t.dtype.is_floating_point:
                t.add_(1.0)
    torch.save({"model": None, "ema": model.half(), "epoch": -1, "train_args": {"imgsz": 64}}, path)
    return path


def test_wise_writes_the_mix_of_finetuned_and_remapped_start(tmp_path, pretrained_pt):
    ft = _fake_finetuned(pretrained_pt, tmp_path / "best.pt")
    out = wise(ft, pretrained_pt, tmp_path / "mix" / "wise.pt", 0.75)
    ckpt = torch.load(out, map_location="cpu", weights_only=False)
    assert ckpt["wise"] == {"finetuned": str(ft), "start": str(pretrained_pt), "alpha": 0.75}
    assert ckpt["train_args"] == {"imgsz": 64} and ckpt["ema"] is None
    start, _ = build_model(pretrained_pt)
    mixed = ckpt["model"].float().state_dict()
    for k, s in start.state_dict().items():
        if s.dtype.is_floating_point:
            # 0.75 * (half(s) + 1) + 0.25 * s, stored in half precision
            assert torch.allclose(mixed[k], s + 0.75, atol=2e-2, rtol=2e-3), k
    assert not list(tmp_path.glob("mix/.*"))  # no temporary file left beside the output
    # the mix is recorded in the metadata that `detector export` writes into the ONNX file
    meta = meta_from_checkpoint(ckpt["model"], ckpt, out)
    assert meta.extra["wise"]["alpha"] == 0.75 and meta.class_map == dict(enumerate(TAXONOMY))


def test_wise_errors_name_the_files(tmp_path, pretrained_pt, capsys):
    with pytest.raises(FileNotFoundError, match="nope.pt"):
        wise(tmp_path / "nope.pt", pretrained_pt, tmp_path / "o.pt", 0.5)
    other = pretrained_pt.with_name("yolo26n-obb.pt")
    if other.is_file():  # another architecture: its tensors do not line up with yolov8n
        ft = _fake_finetuned(pretrained_pt, tmp_path / "best.pt")
        with pytest.raises(
            ValueError, match="best.pt and .*yolo26n-obb.pt do not have the same architecture"
        ):
            wise(ft, other, tmp_path / "o.pt", 0.5)
    assert main([str(tmp_path / "nope.pt"), "--start", str(pretrained_pt), "--alpha", "0.5", "-o", "x"]) == 1
    assert "nope.pt" in capsys.readouterr().err
