"""Model files: ONNX export and its verification, metadata round trip, default weights, every ModelError."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from detector.backends.base import META_KEY, ModelMeta
from detector.backends.decode import check_meta_against_shapes, default_class_map, min_tile, n_anchors
from detector.errors import ModelError
from detector.model import default_weights, load_predictor, read_meta

SMALL = 320
FIXED = 160
DOTA_NAMES = (
    "plane ship storage-tank baseball-diamond tennis-court basketball-court ground-track-field harbor bridge "
    "large-vehicle small-vehicle helicopter roundabout soccer-ball-field swimming-pool"
).split()
#: What the `dota_v1` table of configs/taxonomy.yaml must give the DOTA-trained models.
DOTA_CLASS_MAP = {0: "aircraft", 11: "helicopter", 10: "small-vehicle", 9: "large-vehicle"}
TAXONOMY = ("aircraft", "helicopter", "small-vehicle", "large-vehicle")


def _export(pt: Path, out: Path, **kwargs) -> Path:
    """``export_onnx`` with torch on at most two threads (restored afterwards)."""
    torch = pytest.importorskip("torch")
    from training.export import export_onnx

    old = torch.get_num_threads()
    torch.set_num_threads(min(2, old))
    try:
        return export_onnx(pt, out, **kwargs)
    finally:
        torch.set_num_threads(old)


@pytest.fixture(scope="module")
def exported(pretrained_pt: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "sub" / "m.onnx"
    return _export(pretrained_pt, out, imgsz=SMALL, name="v8-obb-test", gsd=0.3)


@pytest.fixture(scope="module")
def exported_fixed(pretrained_pt: Path, tmp_path_factory) -> Path:
    """A fixed-size export, as every file made before dynamic tile sizes (input 160 x 160 only)."""
    out = tmp_path_factory.mktemp("export") / "fixed.onnx"
    return _export(pretrained_pt, out, imgsz=FIXED, name="v8-obb-fixed", dynamic=False)


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


def test_export_graph_shape_and_dynamic_axes(exported: Path):
    import onnxruntime as ort

    sess = ort.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert inp.shape[1] == 3 and not any(isinstance(inp.shape[i], int) for i in (0, 2, 3))
    assert out.shape[1] == 20 and not isinstance(out.shape[0], int) and not isinstance(out.shape[2], int)
    assert read_meta(exported).extra["dynamic_size"] is True
    for b, size in ((1, SMALL), (3, SMALL), (2, 160), (1, 416)):
        y = sess.run(None, {inp.name: np.zeros((b, 3, size, size), np.float32)})[0]
        assert y.shape == (b, 20, n_anchors(size))
    assert n_anchors(SMALL) == 40 * 40 + 20 * 20 + 10 * 10
    assert oct(exported.stat().st_mode & 0o777) == "0o644"
    assert not list(exported.parent.glob("*.tmp"))


def test_export_verification_catches_a_wrong_network(exported: Path):
    """The check export runs would fail on outputs that are off by more than atol (it is not vacuous)."""
    import onnxruntime as ort

    from training.export import compare_outputs

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
    from training.export import export_onnx

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
    # any other model outputs its own classes, unless output names are given
    assert default_class_map(("aircraft", "Truck", "boat")) == {0: "aircraft", 1: "truck", 2: "boat"}
    with pytest.raises(ModelError, match=r"model\.pt.*'truck'.*'boat'"):
        default_class_map(("aircraft", "truck", "boat"), "model.pt", names=TAXONOMY)


def test_explicit_class_map_by_index_or_name():
    from detector.backends.decode import check_class_map

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
        (
            {"raw_names": ["a", "b", "c", "d"], "class_map": {"0": "aircraft"}},
            "output has 20 values .* means 9",
        ),
        ({"task": "detect"}, "output has 20 values .* means 19"),
        ({"end_to_end": True}, r"does not fix the values per detection .* expects 7"),
        ({"class_map": {"0": "tank"}}, "unreadable detector metadata"),
    ],
)
def test_metadata_that_does_not_match_the_network(tmp_path: Path, exported: Path, changes, message):
    bad = _rewrite_meta(exported, tmp_path / "bad.onnx", **changes)
    with pytest.raises(ModelError, match=message):
        read_meta(bad)
    # a dynamic-size file runs any multiple of 32: another imgsz in its metadata is no mismatch
    assert read_meta(_rewrite_meta(exported, tmp_path / "ok.onnx", imgsz=640)).imgsz == 640


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"imgsz": 640}, r"network input is \[160, 160\] pixels, metadata says imgsz=640"),
        ({"task": "detect"}, "output has 20 values .* means 19"),
        ({"end_to_end": True}, "output has 525 values .* means 7"),
    ],
)
def test_metadata_that_does_not_match_a_fixed_size_network(
    tmp_path: Path, exported_fixed: Path, changes, message
):
    assert read_meta(exported_fixed).imgsz == FIXED
    bad = _rewrite_meta(exported_fixed, tmp_path / "bad.onnx", **changes)
    with pytest.raises(ModelError, match=message):
        read_meta(bad)


def test_shape_check_accepts_symbolic_dims_and_catches_wrong_channels():
    meta = ModelMeta(raw_names=tuple(DOTA_NAMES), class_map=DOTA_CLASS_MAP, imgsz=1024, task="obb")
    ok_in, ok_out = ["batch", 3, "height", "width"], ["batch", 20, "anchors"]
    check_meta_against_shapes(meta, ok_in, ok_out, "m.onnx")
    check_meta_against_shapes(meta, [None, 3, None, None], [None, 20, None], "m.onnx")
    check_meta_against_shapes(meta, [1, 3, 1024, 1024], [1, 20, n_anchors(1024)], "m.onnx")  # fixed, older
    bad = [
        (["batch", 4, "height", "width"], ok_out, r"\(batch, 3, height, width\)"),
        (["batch", 3, "height"], ok_out, r"\(batch, 3, height, width\)"),
        (ok_in, ["batch", 19, "anchors"], "output has 19 values .* means 20"),
        (ok_in, ["batch", "channels", "anchors"], "does not fix the values per detection .* expects 20"),
        (ok_in, ["batch", 20], "not 3-dimensional"),
        ([1, 3, 640, 640], ok_out, r"input is \[640, 640\] pixels, metadata says imgsz=1024"),
        (ok_in, ["batch", 20, 8400], "8400 anchors in the output, 21504 expected for imgsz=1024"),
    ]
    for inp, out, message in bad:
        with pytest.raises(ModelError, match=f"m.onnx: .*{message}"):
            check_meta_against_shapes(meta, inp, out, "m.onnx")
    e2e = ModelMeta(
        raw_names=tuple(DOTA_NAMES), class_map=DOTA_CLASS_MAP, imgsz=1024, task="obb", end_to_end=True
    )
    check_meta_against_shapes(e2e, ok_in, ["batch", 300, 7], "m.onnx")
    with pytest.raises(ModelError, match="output has 6 values .* means 7"):
        check_meta_against_shapes(e2e, ok_in, ["batch", 300, 6], "m.onnx")


def test_min_tile_of_end_to_end_models():
    meta = ModelMeta(raw_names=tuple(DOTA_NAMES), class_map=DOTA_CLASS_MAP, imgsz=1024, task="obb")
    assert min_tile(meta) == 32
    e2e = ModelMeta(
        raw_names=tuple(DOTA_NAMES),
        class_map=DOTA_CLASS_MAP,
        imgsz=1024,
        task="obb",
        end_to_end=True,
        extra={"max_det": 300},
    )
    assert min_tile(e2e) == 128 and n_anchors(96) < 300 <= n_anchors(128)


def test_fixed_size_file_runs_its_size_only(exported_fixed: Path):
    """Files exported before dynamic sizes keep working at their size and say how to get any other size."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(exported_fixed), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape[1:] == [3, FIXED, FIXED]
    assert sess.get_outputs()[0].shape[1:] == [20, n_anchors(FIXED)]
    pred = load_predictor(exported_fixed, threads=1)
    assert pred.fixed_size == FIXED and pred.meta.imgsz == FIXED
    tiles = np.random.default_rng(0).integers(0, 256, (2, FIXED, FIXED, 3), dtype=np.uint8)
    assert len(pred.predict_batch(tiles)) == 2
    with pytest.raises(
        ValueError, match=r"fixed.onnx has a fixed 160x160 input .* 320x320 .*`detector export"
    ):
        pred.predict_batch(np.zeros((1, 320, 320, 3), np.uint8))
    with pytest.raises(ValueError, match="multiple of 32"):
        pred.predict_batch(np.zeros((1, 150, 150, 3), np.uint8))


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
    monkeypatch.setattr("detector.resources._ROOT", tmp_path)  # a checkout without weights
    monkeypatch.setattr("detector.resources._PACKAGE", tmp_path / "detector")
    (tmp_path / "pyproject.toml").write_text("")
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
    assert isinstance(pred, OnnxPredictor) and pred.meta.imgsz == SMALL and pred.fixed_size is None
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

    from training.export import export_onnx

    for e2e, shape in ((False, [20, "anchors"]), (True, [300, 7])):
        out = export_onnx(p, tmp_path / f"y26_{e2e}.onnx", imgsz=SMALL, end_to_end=e2e)
        assert read_meta(out).end_to_end is e2e
        sess = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
        assert sess.get_outputs()[0].shape[1:] == shape
        y = sess.run(None, {"images": np.zeros((1, 3, 128, 128), np.float32)})[0]  # min tile of e2e
        assert y.shape == (1, *((20, n_anchors(128)) if not e2e else shape))
        pred = load_predictor(out, threads=2)
        small = np.zeros((1, 96, 96, 3), np.uint8)  # 189 anchors
        if e2e:  # its top-300 rows need 300 anchors: the graph itself fails below 128 px
            with pytest.raises(Exception):  # noqa: B017, PT011  # onnxruntime's own error type
                sess.run(None, {"images": np.zeros((1, 3, 96, 96), np.float32)})
            with pytest.raises(ValueError, match="too small for this end-to-end model.* at least 128 px"):
                pred.predict_batch(small)
        else:
            assert len(pred.predict_batch(small)) == 1


def test_foreign_classes_are_the_models_own_unless_mapped(tmp_path: Path):
    torch = pytest.importorskip("torch")
    from ultralytics.nn.tasks import DetectionModel

    from training.export import export_onnx

    torch.manual_seed(0)
    model = DetectionModel("yolov8n.yaml", nc=3, verbose=False)
    model.names = {0: "car", 1: "jet", 2: "boat"}
    pt = tmp_path / "foreign.pt"
    torch.save({"model": model, "train_args": {"imgsz": 64}}, pt)
    own = read_meta(pt)  # a model with another class list outputs that list
    assert own.names == ("car", "jet", "boat") and own.class_map == {0: "car", 1: "jet", 2: "boat"}
    with pytest.raises(ModelError, match=r"foreign\.pt.*no default mapping for \['car', 'jet', 'boat'\]"):
        export_onnx(pt, tmp_path / "foreign.onnx", names=TAXONOMY)
    with pytest.raises(
        ModelError, match=r"foreign\.pt.*maps 'jet' to 'plane'.*pass the model's output names"
    ):
        export_onnx(pt, tmp_path / "foreign.onnx", class_map={"jet": "plane"})
    assert not (tmp_path / "foreign.onnx").exists()
    out = export_onnx(pt, tmp_path / "foreign.onnx", class_map={"jet": "aircraft", 0: "small-vehicle"})
    meta = read_meta(out)
    assert (
        meta.class_map == {1: "aircraft", 0: "small-vehicle"} and meta.imgsz == 64 and meta.task == "detect"
    )
    assert meta.names == TAXONOMY  # a map into the taxonomy keeps its class ids
