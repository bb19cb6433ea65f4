"""Safe ``.pt`` loading: a checkpoint that would run code is refused before anything is unpickled.

Each payload would create a marker file when unpickled (by ``torch.load(weights_only=False)``, as
Ultralytics' own loader does); every way a user hands us a ``.pt`` (``detector info``, ``Detector.load``,
``read_meta``, export) must refuse it with one ModelError line naming the file, and the marker must never
appear. Real checkpoints (the pretrained ones, and what our training writes) still load.
"""

from __future__ import annotations

import pathlib
import pickle
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ultralytics")

from detector.errors import ModelError  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class _Exec:
    """Unpickles as ``exec(code)``: the classic pickle payload."""

    def __init__(self, marker: Path) -> None:
        self.code = f"open({str(marker)!r}, 'w').close()"

    def __reduce__(self):
        return (exec, (self.code,))


class _BuildModel:
    """Unpickles as a call of an allowed network class: Ultralytics' model constructor ``eval``s the
    activation of its YAML, so allowing the class by name is not enough."""

    def __init__(self, marker: Path) -> None:
        self.cfg = {
            "nc": 1,
            # runs the payload, then gives the default activation back (Conv.default_act is process-wide)
            "activation": f"__import__('pathlib').Path({str(marker)!r}).touch() or nn.SiLU()",
            "backbone": [[-1, 1, "Conv", [16, 3, 2]]],
            "head": [[[-1], 1, "Detect", ["nc"]]],
        }

    def __reduce__(self):
        from ultralytics.nn.tasks import DetectionModel

        return (DetectionModel, (self.cfg,))


class _GetattrEscape:
    """Unpickles as ``getattr(Conv, "__init__")``-style attribute access outside plain class functions."""

    def __reduce__(self):
        from ultralytics.nn.modules.conv import Conv

        return (getattr, (Conv, "__dict__"))


def _save(obj, path: Path, **kwargs) -> Path:
    torch.save({"model": obj, "train_args": {"imgsz": 64}}, path, **kwargs)
    return path


@pytest.fixture()
def marker(tmp_path: Path) -> Path:
    return tmp_path / "PWNED"


@pytest.fixture()
def evil_pt(tmp_path: Path, marker: Path) -> Path:
    return _save(_Exec(marker), tmp_path / "evil.pt")


def test_the_payload_is_real(evil_pt: Path, marker: Path):
    """Without the check, loading the file runs its code (so the tests below can fail)."""
    torch.load(evil_pt, map_location="cpu", weights_only=False)
    assert marker.exists()


def test_read_meta_and_load_refuse_code(evil_pt: Path, marker: Path):
    from detector.backends.torch import load_checkpoint
    from detector.model import load_predictor, read_meta
    from detector.pipeline import Detector

    want = r"evil\.pt: refusing to load: the checkpoint needs arbitrary code \(builtins\.exec\)"
    for call in (read_meta, load_checkpoint, load_predictor, Detector.load):
        with pytest.raises(ModelError, match=want) as e:
            call(evil_pt)
        assert "\n" not in str(e.value)
    assert not marker.exists()


def test_cli_info_refuses_code(evil_pt: Path, marker: Path):
    from click.testing import CliRunner

    from detector.cli import cli

    r = CliRunner().invoke(cli, ["info", str(evil_pt)])
    assert r.exit_code == 1, r.output
    assert "refusing to load: the checkpoint needs arbitrary code (builtins.exec)" in r.output
    assert str(evil_pt) in r.output
    assert not marker.exists()


def test_export_refuses_code(evil_pt: Path, marker: Path, tmp_path: Path):
    from training.export import export_onnx

    with pytest.raises(ModelError, match="needs arbitrary code"):
        export_onnx(evil_pt, tmp_path / "evil.onnx")
    assert not marker.exists() and not (tmp_path / "evil.onnx").exists()


def test_calling_an_allowed_class_is_refused(tmp_path: Path, marker: Path):
    from ultralytics.nn.tasks import DetectionModel

    from detector.model import read_meta

    payload = _BuildModel(marker)
    pt = _save(payload, tmp_path / "ctor.pt")
    assert "ultralytics.nn.tasks.DetectionModel" in torch.serialization.get_unsafe_globals_in_checkpoint(pt)
    with pytest.raises(ModelError, match=r"ctor\.pt: refusing to load: .*refusing to call"):
        read_meta(pt)
    assert not marker.exists()
    from ultralytics.nn.modules.conv import Conv

    default_act = Conv.default_act
    try:
        DetectionModel(payload.cfg, verbose=False)  # the constructor itself would run the payload
    finally:
        Conv.default_act = default_act
    assert marker.exists()


def test_getattr_is_restricted(tmp_path: Path):
    from detector.model import read_meta

    pt = _save(_GetattrEscape(), tmp_path / "attr.pt")
    with pytest.raises(ModelError, match=r"attr\.pt: refusing to load: .*getattr\(Conv, '__dict__'\)"):
        read_meta(pt)


def test_non_zip_pickles_are_refused(tmp_path: Path, marker: Path):
    from detector.model import read_meta

    legacy = _save(_Exec(marker), tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    plain = tmp_path / "plain.pt"
    plain.write_bytes(pickle.dumps({"model": _Exec(marker)}))
    for p in (legacy, plain):
        with pytest.raises(ModelError, match=f"{p.name} is not an Ultralytics model checkpoint"):
            read_meta(p)
    assert not marker.exists()


@pytest.mark.parametrize("name", ["yolov8n-obb.pt", "yolo26n-obb.pt"])
def test_real_pretrained_checkpoints_load(name: str):
    from detector.backends.torch import load_checkpoint
    from detector.model import read_meta

    p = ROOT / "weights" / "pretrained" / name
    if not p.is_file():
        pytest.skip(f"{p} missing: run `make setup`")
    model, ckpt = load_checkpoint(p)
    assert model.task == "obb" and not model.training and "train_args" in ckpt
    head = model.model[-1]
    assert type(head).__module__ == "ultralytics.nn.modules.head"  # real classes, not the loading stand-ins
    assert read_meta(p).raw_names[0] == "plane"


def test_checkpoints_like_our_training_writes_load(tmp_path: Path):
    """A model pickled whole with training's extras: metrics (numpy scalars), arrays, paths, our metadata."""
    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils import IterableSimpleNamespace

    from detector.backends.base import META_KEY
    from detector.backends.torch import load_checkpoint, meta_from_checkpoint

    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=2, verbose=False)
    model.names = {0: "aircraft", 1: "small-vehicle"}
    model.args = IterableSimpleNamespace(imgsz=64)
    pt = tmp_path / "best.pt"
    torch.save(
        {
            "model": model,
            "ema": None,
            "train_args": {"imgsz": 64, "data": "x.yaml"},
            "train_metrics": {"metrics/mAP50(B)": np.float64(0.5), "hist": np.arange(3)},
            "save_dir": pathlib.Path("/runs/x"),
            "optimizer": torch.optim.SGD(model.parameters(), lr=0.01).state_dict(),
            META_KEY: {"gsd": 0.3, "name": "ours"},
        },
        pt,
    )
    loaded, ckpt = load_checkpoint(pt)
    assert type(loaded) is DetectionModel and loaded.task == "detect"
    assert ckpt["train_metrics"]["metrics/mAP50(B)"] == 0.5 and ckpt["save_dir"] == pathlib.Path("/runs/x")
    assert isinstance(loaded.args, dict) and loaded.args["imgsz"] == 64
    x = torch.rand(1, 3, 64, 64)
    model.eval()
    with torch.no_grad():
        np.testing.assert_allclose(loaded(x)[0].numpy(), model(x)[0].numpy(), atol=1e-6)
    meta = meta_from_checkpoint(loaded, ckpt, pt)
    assert meta.gsd == 0.3 and meta.name == "ours" and meta.imgsz == 64


def test_training_refuses_code_in_start_weights(evil_pt: Path, marker: Path, tmp_path: Path):
    """`detector train` start weights and `training.wise` inputs are user files too: checked before unpickling."""
    from training.train import build_model
    from training.wise import wise

    with pytest.raises(ModelError, match="refusing to load"):
        build_model(evil_pt, task="detect")
    good = ROOT / "weights" / "pretrained" / "yolov8n-obb.pt"
    if good.is_file():
        with pytest.raises(ModelError, match="refusing to load"):
            wise(good, start=evil_pt, alpha=0.5, out=tmp_path / "mix.pt")
    assert not marker.exists()
