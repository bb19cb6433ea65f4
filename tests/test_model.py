"""Model files: ONNX export and its verification, metadata round trip, default weights, every ModelError."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detector.backends.base import META_KEY, TAXONOMY, ModelMeta
from detector.model import (
    DOTA_CLASS_MAP,
    ModelError,
    compare_outputs,
    default_class_map,
    default_weights,
    load_predictor,
    read_meta,
)

SMALL = 320
DOTA_NAMES = (
    "plane ship storage-tank baseball-diamond tennis-court basketball-court ground-track-field harbor bridge "
    "large-vehicle small-vehicle helicopter roundabout soccer-ball-field swimming-pool"
).split()


@pytest.fixture(scope="module")
def exported(pretrained_pt: Path, tmp_path_factory) -> Path:
    torch = pytest.importorskip("torch")
    from detector.model import export_onnx

    old = torch.get_num_threads()
    torch.set_num_threads(min(2, old))
    try:
        out = tmp_path_factory.mktemp("export") / "sub" / "m.onnx"
        return export_onnx(pretrained_pt, out, imgsz=SMALL, name="v8-obb-test", gsd=0.3)
    finally:
        torch.set_num_threads(old)


def _rewrite_meta(src: Path, dst: Path, **changes) -> Path:
    """Copy an exported model with some ModelMeta fields changed (``None`` value: drop our metadata)."""
    onnx = pytest.importorskip("onnx")
    proto = onnx.load(str(src))
    props = {p.key: p.value for p in proto.metadata_props}
    del proto.metadata_props[:]
    if changes.get("drop"):
        props.pop(META_KEY)
    else:
        d = json.loads(props[META_KEY])
        d.update(changes)
        props[META_KEY] = json.dumps(d)
    for k, v in props.items():
        e = proto.metadata_props.add()
        e.key, e.value = k, v
    onnx.save(proto, str(dst))
    return dst


def test_export_metadata_round_trip(exported: Path, pretrained_pt: Path):
    meta = read_meta(exported)
    assert meta.task == "obb" and meta.imgsz == SMALL and not meta.end_to_end
    assert meta.raw_names[0] == "plane" and len(meta.raw_names) == 15
    assert meta.class_map == DOTA_CLASS_MAP
    assert meta.name == "v8-obb-test" and meta.gsd == 0.3 and meta.normalization == "rgb/255"
    versions = meta.extra["export_versions"]
    assert versions["opset"] == 18 and versions["ultralytics"] and versions["torch"]
    assert meta.extra["source_file"] == pretrained_pt.name
    assert ModelMeta.from_json(meta.to_json()) == meta
    pt_meta = read_meta(pretrained_pt)
    assert (
        pt_meta.imgsz == 1024 and pt_meta.raw_names == meta.raw_names and pt_meta.class_map == meta.class_map
    )
    assert pt_meta.gsd is None


def test_export_graph_shape_and_dynamic_batch(exported: Path):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert inp.shape[1:] == [3, SMALL, SMALL] and not isinstance(inp.shape[0], int)
    assert out.shape[1:] == [20, sum((SMALL // s) ** 2 for s in (8, 16, 32))]
    for b in (1, 3):
        y = sess.run(None, {inp.name: np.zeros((b, 3, SMALL, SMALL), np.float32)})[0]
        assert y.shape[0] == b
    assert oct(exported.stat().st_mode & 0o777) == "0o644"
    assert not list(exported.parent.glob("*.tmp"))


def test_export_verification_catches_a_wrong_network(exported: Path):
    """The check export runs would fail on outputs that are off by more than atol (it is not vacuous)."""
    import onnxruntime as ort

    meta = read_meta(exported)
    sess = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 3, SMALL, SMALL), dtype=np.float32)
    ref = sess.run(None, {"images": x})[0]
    assert compare_outputs(ref, ref.copy(), meta, 1e-3)["box"] == 0.0
    bad = ref.copy()
    bad[0, 4 + 10, 7] += 0.01  # one score off by 0.01
    with pytest.raises(ModelError, match="differs from PyTorch"):
        compare_outputs(ref, bad, meta, 1e-3)
    bad = ref.copy()
    bad[0, 0, 3] += 1.0  # one box centre off by a pixel
    with pytest.raises(ModelError, match="differs from PyTorch"):
        compare_outputs(ref, bad, meta, 1e-3)


def test_export_leaves_existing_file_when_it_fails(pretrained_pt: Path, tmp_path: Path):
    from detector.model import export_onnx

    out = tmp_path / "keep.onnx"
    out.write_bytes(b"previous")
    with pytest.raises(ValueError, match="multiple of 32"):
        export_onnx(pretrained_pt, out, imgsz=100)
    with pytest.raises(ModelError, match="not one of"):
        export_onnx(pretrained_pt, out, imgsz=SMALL, class_map={0: "tank"})
    assert out.read_bytes() == b"previous"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.onnx"]


def test_default_class_maps():
    assert default_class_map(tuple(n.replace("-", " ") for n in DOTA_NAMES)) == DOTA_CLASS_MAP
    assert default_class_map(("small_vehicle", "Aircraft")) == {0: "small-vehicle", 1: "aircraft"}
    assert default_class_map(TAXONOMY) == dict(enumerate(TAXONOMY))
    with pytest.raises(ModelError, match=r"model\.pt.*'truck'.*'boat'"):
        default_class_map(("aircraft", "truck", "boat"), "model.pt")


def test_explicit_class_map_by_index_or_name():
    from detector.model import check_class_map

    names = ("car", "jet", "boat")
    assert check_class_map({"jet": "aircraft", 0: "small-vehicle", "2": "large-vehicle"}, names, "m.pt") == {
        1: "aircraft",
        0: "small-vehicle",
        2: "large-vehicle",
    }
    with pytest.raises(ModelError, match="'bus'.*not one of the model's classes"):
        check_class_map({"bus": "large-vehicle"}, names, "m.pt")
    with pytest.raises(ModelError, match="index 5 is outside"):
        check_class_map({5: "aircraft"}, names, "m.pt")


# --------------------------------------------------------------------------------------------------------
# ModelError cases
# --------------------------------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path):
    for name in ("nope.onnx", "nope.pt", "nope.bin"):
        with pytest.raises(ModelError, match=f"not found: .*{name}"):
            read_meta(tmp_path / name)
        with pytest.raises(ModelError, match=f"not found: .*{name}"):
            load_predictor(tmp_path / name)


def test_not_a_model(tmp_path: Path, shared_data: Path):
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(ModelError, match="junk.onnx is not a readable ONNX model"):
        read_meta(junk)
    with pytest.raises(ModelError, match="junk.onnx is not a readable ONNX model"):
        load_predictor(junk)
    image = tmp_path / "photo.onnx"
    image.write_bytes((shared_data / "dota/demo/images/P1478__1__853___962.png").read_bytes()[:200_000])
    with pytest.raises(ModelError, match="photo.onnx is not a readable ONNX model"):
        read_meta(image)


def test_pt_that_is_not_a_checkpoint(tmp_path: Path):
    pytest.importorskip("ultralytics")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(1000))
    with pytest.raises(ModelError, match="junk.pt is not an Ultralytics model checkpoint"):
        read_meta(junk)


def test_unknown_extension(tmp_path: Path, exported: Path):
    other = tmp_path / "model.tflite"
    other.write_bytes(exported.read_bytes())
    with pytest.raises(ModelError, match=r"model\.tflite.*unknown model file extension '.tflite'"):
        read_meta(other)
    with pytest.raises(ModelError, match="unknown model file extension"):
        load_predictor(other)


def test_onnx_without_our_metadata(tmp_path: Path, exported: Path):
    plain = _rewrite_meta(exported, tmp_path / "plain.onnx", drop=True)
    with pytest.raises(
        ModelError, match=r"plain\.onnx has no detector metadata.*`detector export MODEL\.pt -o plain\.onnx`"
    ):
        read_meta(plain)
    with pytest.raises(ModelError, match="no detector metadata"):
        load_predictor(plain)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"imgsz": 640}, "network input is .*320.* imgsz=640"),
        (
            {"raw_names": ["a", "b", "c", "d"], "class_map": {"0": "aircraft"}},
            "output has 20 values .* means 9",
        ),
        ({"task": "detect"}, "output has 20 values .* means 19"),
        ({"end_to_end": True}, "output has 2100 values .* means 7"),
        ({"class_map": {"0": "tank"}}, "unreadable detector metadata"),
    ],
)
def test_metadata_that_does_not_match_the_network(tmp_path: Path, exported: Path, changes, message):
    bad = _rewrite_meta(exported, tmp_path / "bad.onnx", **changes)
    with pytest.raises(ModelError, match=message):
        read_meta(bad)


# --------------------------------------------------------------------------------------------------------
# default weights and predictor loading
# --------------------------------------------------------------------------------------------------------


def test_default_weights_env_and_errors(tmp_path: Path, monkeypatch, exported: Path):
    monkeypatch.setenv("DETECTOR_WEIGHTS", str(exported))
    assert default_weights() == exported
    assert load_predictor(threads=1).meta.name == "v8-obb-test"
    monkeypatch.setenv("DETECTOR_WEIGHTS", str(tmp_path / "gone.onnx"))
    with pytest.raises(ModelError, match="DETECTOR_WEIGHTS points to .*gone.onnx"):
        default_weights()
    monkeypatch.delenv("DETECTOR_WEIGHTS")
    monkeypatch.setattr("detector.model._ROOT", tmp_path)
    with pytest.raises(ModelError, match="make setup"):
        default_weights()
    (tmp_path / "weights" / "pretrained").mkdir(parents=True)
    (tmp_path / "weights/pretrained/yolov8n-obb.onnx").write_bytes(b"x")
    assert default_weights() == tmp_path / "weights/pretrained/yolov8n-obb.onnx"
    (tmp_path / "weights/detector.onnx").write_bytes(b"x")
    assert default_weights() == tmp_path / "weights/detector.onnx"


def test_load_predictor_dispatch_and_validation(exported: Path):
    from detector.backends.onnx import OnnxPredictor

    pred = load_predictor(exported, conf=0.4, iou=0.5, max_det=7, threads=1)
    assert isinstance(pred, OnnxPredictor) and pred.meta.imgsz == SMALL
    assert (pred.conf, pred.iou, pred.max_det) == (0.4, 0.5, 7)
    dets = pred.predict_batch(np.zeros((0, SMALL, SMALL, 3), np.uint8))
    assert dets == []
    with pytest.raises(ValueError, match="conf must be in"):
        load_predictor(exported, conf=1.5)
    with pytest.raises(ValueError, match="max_det"):
        load_predictor(exported, max_det=0)
    with pytest.raises(ValueError, match="device must be"):
        load_predictor(exported, device="tpu")


@pytest.mark.slow
def test_export_yolo26_both_heads(tmp_path: Path):
    """YOLO26 OBB: the one-to-many head (B, 20, A) and the NMS-free head (B, 300, 7) both export and verify."""
    p = Path(__file__).resolve().parents[1] / "weights" / "pretrained" / "yolo26n-obb.pt"
    if not p.is_file():
        pytest.skip(f"{p} missing: run `make setup`")
    import onnxruntime as ort

    from detector.model import export_onnx

    for e2e, shape in ((False, [20, 2100]), (True, [300, 7])):
        out = export_onnx(p, tmp_path / f"y26_{e2e}.onnx", imgsz=SMALL, end_to_end=e2e)
        assert read_meta(out).end_to_end is e2e
        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        assert sess.get_outputs()[0].shape[1:] == shape


def test_export_needs_a_class_map_for_foreign_classes(tmp_path: Path):
    torch = pytest.importorskip("torch")
    from ultralytics.nn.tasks import DetectionModel

    from detector.model import export_onnx

    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    model.names = {0: "car", 1: "jet", 2: "boat"}
    pt = tmp_path / "foreign.pt"
    torch.save({"model": model, "train_args": {"imgsz": 64}}, pt)
    with pytest.raises(ModelError, match=r"foreign\.pt.*no default mapping for \['car', 'jet', 'boat'\]"):
        read_meta(pt)
    with pytest.raises(ModelError, match=r"foreign\.pt.*'car', 'jet', 'boat'"):
        export_onnx(pt, tmp_path / "foreign.onnx")
    out = export_onnx(pt, tmp_path / "foreign.onnx", class_map={"jet": "aircraft", 0: "small-vehicle"})
    meta = read_meta(out)
    assert (
        meta.class_map == {1: "aircraft", 0: "small-vehicle"} and meta.imgsz == 64 and meta.task == "detect"
    )
