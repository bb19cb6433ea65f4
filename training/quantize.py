"""Post-training INT8 quantisation of our ONNX models, calibrated on real training tiles.

``detector quantize MODEL.onnx --calib configs/quantize.yaml -o MODEL-int8.onnx`` (or :func:`quantize_onnx`)
writes an ONNX file with QuantizeLinear/DequantizeLinear (QDQ) pairs that onnxruntime and OpenVINO both run,
carrying the source model's metadata plus a ``quantization`` record in ``ModelMeta.extra``: that it is INT8,
the method and its settings, the calibration (config file, sources, tile counts, seed, tile size) and the
fp32 model it came from (file name and sha256).

Calibration tiles are what inference feeds the model: each calibration image goes through
:class:`detector.pipeline.Detector` (per-scene stretch, tile grid, fitting, resampling to the model's GSD)
with a predictor that only records the tiles. They come from training images only: a source inside a folder
that ``configs/eval.yaml`` evaluates on is refused.

Two methods (``method`` in the config, or ``method=``):

* ``nncf``: ``nncf.quantize`` on the ONNX graph (the ``mixed`` preset: symmetric per-channel weights,
  asymmetric activations; fast-bias correction);
* ``onnxruntime``: ``onnxruntime.quantization.quantize_static`` (QDQ, per-channel int8 weights, uint8
  activations, min-max calibration).

Both keep the head's box decoding in float (the DFL, the anchor grid, the sigmoid and the arithmetic that
turns distances into boxes): quantising pixel coordinates to 256 levels would move boxes by pixels. Only the
convolutions and the layers between them are quantised.

Needs the ``onnx`` package (``[train]`` extra) and, for ``nncf``, the ``[openvino]`` extra.
"""

from __future__ import annotations

import datetime as _dt
import glob
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from detector.backends.base import META_KEY, ModelMeta
from detector.backends.decode import to_input
from detector.detections import Detections
from detector.errors import ConfigError, ModelError
from detector.writers import atomic_path

log = logging.getLogger(__name__)

METHODS = ("nncf", "onnxruntime")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp")


@dataclass(frozen=True)
class CalibSource:
    """One calibration source: ``path`` (a folder of images, searched recursively, or a glob) relative to
    the data root, and how many ``tiles`` to draw from it."""

    path: str
    tiles: int


@dataclass(frozen=True)
class QuantizeConfig:
    """What ``configs/quantize.yaml`` holds (see that file).

    Attributes:
        sources: the calibration sources.
        data_root: the folder source paths are relative to.
        method: ``"nncf"`` or ``"onnxruntime"``.
        preset: NNCF preset, ``"mixed"`` or ``"performance"``.
        seed: seeds which images and tiles are drawn.
        per_image: at most this many tiles from one image.
        tile: tile size in model pixels (``None``: the model's ``imgsz``).
        source_file: the YAML file it was read from (for the calibration record).
    """

    sources: tuple[CalibSource, ...]
    data_root: Path
    method: str = "nncf"
    preset: str = "mixed"
    seed: int = 0
    per_image: int = 2
    tile: int | None = None
    source_file: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(
                f"{self.source_file or 'quantize config'}: method must be one of {METHODS}, got {self.method!r}"
            )
        if self.preset not in ("mixed", "performance"):
            raise ConfigError(
                f"{self.source_file or 'quantize config'}: preset must be 'mixed' or 'performance', got {self.preset!r}"
            )
        if not self.sources:
            raise ConfigError(f"{self.source_file or 'quantize config'}: no calibration sources")
        if int(self.per_image) < 1:
            raise ConfigError(f"{self.source_file or 'quantize config'}: per_image must be at least 1")


def load_quantize_config(path: str | Path, data_root: str | Path | None = None) -> QuantizeConfig:
    """Read a quantisation config (see ``configs/quantize.yaml``).

    ``data_root``: explicit, else ``$DETECTOR_SHARED_DATA``, else the file's ``data_root`` relative to the
    file's folder.

    Raises:
        ConfigError: the file is missing or malformed (the message names the file and the key).
    """
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"{p}: quantize config not found") from e
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{p}: unreadable quantize config ({type(e).__name__}: {e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a quantize config must be a mapping, got {type(data).__name__}")
    known = {"data_root", "method", "preset", "seed", "per_image", "tile", "sources"}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{p}: unknown key(s) {unknown}; expected some of {sorted(known)}")
    sources = []
    for i, s in enumerate(data.get("sources") or []):
        if not isinstance(s, dict) or not isinstance(s.get("path"), str):
            raise ConfigError(f"{p}: sources[{i}] must be a mapping with a 'path' string, got {s!r}")
        tiles = s.get("tiles")
        if not isinstance(tiles, int) or tiles < 1:
            raise ConfigError(f"{p}: sources[{i}].tiles must be a positive integer, got {tiles!r}")
        sources.append(CalibSource(path=s["path"], tiles=tiles))
    if data_root is None:
        env = os.environ.get("DETECTOR_SHARED_DATA")
        data_root = env if env else (p.parent / str(data.get("data_root", "."))).resolve()
    tile = data.get("tile")
    if tile is not None and (not isinstance(tile, int) or tile < 32 or tile % 32):
        raise ConfigError(f"{p}: tile must be a multiple of 32, got {tile!r}")
    return QuantizeConfig(
        sources=tuple(sources),
        data_root=Path(data_root),
        method=str(data.get("method", "nncf")),
        preset=str(data.get("preset", "mixed")),
        seed=int(data.get("seed", 0)),
        per_image=int(data.get("per_image", 2)),
        tile=tile,
        source_file=str(p),
    )


# ----------------------------------------------------------------------------------------------------------
# calibration tiles
# ----------------------------------------------------------------------------------------------------------


class _TileRecorder:
    """A Predictor that keeps the tiles the pipeline feeds it and detects nothing."""

    def __init__(self, meta: ModelMeta) -> None:
        self.meta = meta
        self.tiles: list[np.ndarray] = []

    def predict_batch(self, tiles: np.ndarray) -> list[Detections]:
        self.tiles.extend(np.array(t) for t in tiles)
        return [Detections.empty(self.meta.names, self.meta.task == "obb") for _ in tiles]


def _eval_folders() -> list[Path]:
    """The folders ``configs/eval.yaml`` evaluates on, relative to the data root."""
    from detector.resources import config_path

    p = config_path("eval.yaml")
    if not p.is_file():
        return []
    sets = (yaml.safe_load(p.read_text()) or {}).get("sets") or {}
    out = []
    for spec in sets.values():
        rel = Path(str(spec.get("path", "")))
        out.append(rel.parent if rel.suffix else rel)
    return out


def _images(config: QuantizeConfig, source: CalibSource) -> list[Path]:
    root = Path(config.data_root)
    target = root / source.path
    rel = Path(source.path)
    for ev in _eval_folders():
        if rel == ev or ev in rel.parents or (rel.parts and rel.parts[: len(ev.parts)] == ev.parts):
            raise ConfigError(
                f"{config.source_file}: calibration source {source.path!r} lies in the eval set folder "
                f"{str(ev)!r} (configs/eval.yaml): calibrate on training images only"
            )
    if target.is_dir():
        files = [f for f in target.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()]
    else:
        files = [
            Path(f)
            for f in glob.glob(str(target), recursive=True)
            if Path(f).suffix.lower() in IMAGE_SUFFIXES
        ]
    if not files:
        raise ConfigError(
            f"{config.source_file}: calibration source {source.path!r} has no images under {root}"
        )
    return sorted(files)


def calibration_tiles(
    config: QuantizeConfig, meta: ModelMeta
) -> tuple[list[np.ndarray], list[dict[str, Any]]]:
    """The calibration tiles (``(S, S, 3)`` uint8 RGB, as the pipeline feeds the model) and, per source, a
    record of what was drawn (path, images, tiles).

    Images are drawn in a seeded random order; each contributes at most ``per_image`` of its tiles (seeded),
    until the source's ``tiles`` are reached. Tiles that are all nodata are never fed (the pipeline skips
    them).

    Raises:
        ConfigError: a source is missing, holds no images, or lies in an eval set.
    """
    from detector.pipeline import Detector
    from detector.tiling import TileConfig

    rng = np.random.default_rng(config.seed)
    tiles: list[np.ndarray] = []
    record = []
    for source in config.sources:
        files = _images(config, source)
        order = rng.permutation(len(files))
        got: list[np.ndarray] = []
        used = 0
        for k in order:
            if len(got) >= source.tiles:
                break
            recorder = _TileRecorder(meta)
            Detector(recorder, prefetch=False).predict(
                files[k], tile=TileConfig(tile=config.tile, overlap=0.2)
            )
            if not recorder.tiles:
                continue
            take = rng.permutation(len(recorder.tiles))[: min(config.per_image, source.tiles - len(got))]
            got.extend(recorder.tiles[i] for i in sorted(take))
            used += 1
        if len(got) < source.tiles:
            log.warning(
                "%s: only %d of the %d calibration tiles asked for (%d images)",
                source.path,
                len(got),
                source.tiles,
                used,
            )
        tiles.extend(got)
        record.append({"path": source.path, "images": used, "tiles": len(got)})
        log.info("calibration: %d tiles from %d images of %s", len(got), used, source.path)
    return tiles, record


# ----------------------------------------------------------------------------------------------------------
# quantisation
# ----------------------------------------------------------------------------------------------------------


def sha256(path: str | Path) -> str:
    """The sha256 of a file, hex."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def head_decode_nodes(proto: Any) -> list[str]:
    """Names of the nodes that decode boxes in the YOLO head (kept in float): everything in the head module
    except its convolution branches (``cv2``/``cv3`` and their one-to-one twins)."""
    prefixes = {n.name.split("dfl/")[0] for n in proto.graph.node if "/dfl/" in n.name}
    if not prefixes:  # a head without DFL: the module that holds the last Sigmoid
        sig = [n.name for n in proto.graph.node if n.op_type == "Sigmoid"]
        prefixes = {sig[-1].rsplit("/", 1)[0] + "/"} if sig else set()
    branch = re.compile(r"(one2one_)?cv[23]/")
    out = []
    for n in proto.graph.node:
        for p in prefixes:
            if n.name.startswith(p) and not branch.match(n.name[len(p) :]):
                out.append(n.name)
    return out


def _nncf_quantize(proto: Any, tiles: list[np.ndarray], config: QuantizeConfig, input_name: str) -> Any:
    try:
        import nncf
    except ImportError as e:
        raise ModelError(f"method 'nncf' needs the [openvino] extra (nncf): {e}") from e
    dataset = nncf.Dataset(tiles, lambda t: {input_name: to_input(t[None])})
    preset = (
        nncf.QuantizationPreset.MIXED if config.preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE
    )
    nncf_log = logging.getLogger("nncf")  # NNCF logs every node it leaves alone at INFO: keep that for -v
    level = nncf_log.level
    if not log.isEnabledFor(logging.DEBUG):
        nncf_log.setLevel(logging.WARNING)
    try:
        return nncf.quantize(
            proto,
            dataset,
            preset=preset,
            subset_size=len(tiles),
            ignored_scope=nncf.IgnoredScope(names=head_decode_nodes(proto), validate=False),
        )
    finally:
        nncf_log.setLevel(level)


def activations_to_uint8(proto: Any) -> int:
    """Rewrite signed (int8) activation quantisers as unsigned ones with the zero point moved by 128, in place.

    ``QuantizeLinear`` to int8 with zero point ``z`` gives ``clamp(round(x / s) + z, -128, 127)``; to uint8
    with ``z + 128`` it gives exactly that plus 128, and the paired ``DequantizeLinear`` subtracts the same
    zero point, so the network computes the same values. NNCF writes asymmetric activations as int8, which
    OpenVINO's CPU plugin (2026.4) mis-computes once it fuses them into its int8 convolutions (mean score
    error 0.02 instead of 0.0005, most detections lost); with uint8 activations, the layout onnxruntime's
    quantiser writes, both runtimes agree. Weights (stored quantised, symmetric int8) are left alone.

    Returns:
        How many zero points were rewritten.
    """
    from onnx import TensorProto, numpy_helper

    inits = {i.name: i for i in proto.graph.initializer}
    outs: set[str] = set()
    zps: set[str] = set()
    for n in proto.graph.node:
        if n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in inits:
            if inits[n.input[2]].data_type == TensorProto.INT8:
                outs.add(n.output[0])
                zps.add(n.input[2])
    for n in proto.graph.node:  # every dequantiser of those outputs must use the same zero point
        if (
            n.op_type == "DequantizeLinear"
            and n.input[0] in outs
            and (len(n.input) < 3 or n.input[2] not in zps)
        ):
            raise ModelError(f"{n.name}: dequantises an int8 activation with another zero point")
    for name in zps:
        z = inits[name]
        shifted = numpy_helper.to_array(z).astype(np.int16) + 128
        z.CopyFrom(numpy_helper.from_array(shifted.astype(np.uint8), name))
    keep = [v for v in proto.graph.value_info if v.name not in outs]  # their recorded type was int8
    del proto.graph.value_info[:]
    proto.graph.value_info.extend(keep)
    return len(zps)


def _ort_quantize(src: Path, dst: Path, tiles: list[np.ndarray], proto: Any, input_name: str) -> None:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class _Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter(tiles)

        def get_next(self) -> dict[str, np.ndarray] | None:
            t = next(self._it, None)
            return None if t is None else {input_name: to_input(t[None])}

    quantize_static(
        str(src),
        str(dst),
        _Reader(),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
        nodes_to_exclude=head_decode_nodes(proto),
        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
    )


def quantize_onnx(
    model: str | Path,
    out: str | Path,
    config: QuantizeConfig,
    *,
    method: str | None = None,
    tiles: list[np.ndarray] | None = None,
) -> Path:
    """Quantise an ONNX model of ours to INT8 and write it, with its metadata, atomically to ``out``.

    Args:
        model: the fp32 ``.onnx`` (made by ``detector export``).
        out: the ``.onnx`` to write.
        config: calibration and method settings (:func:`load_quantize_config`).
        method: overrides ``config.method``.
        tiles: calibration tiles to use instead of drawing them from ``config.sources`` (tests).

    Returns:
        ``out`` as a :class:`~pathlib.Path`.

    Raises:
        ModelError: the model is not one of ours, or quantisation fails, or its result does not load.
        ConfigError: a calibration source is unusable.
    """
    import onnx

    from detector.backends.onnx import OnnxPredictor
    from detector.model import read_meta

    src, dst = Path(model), Path(out)
    if src.suffix.lower() != ".onnx":
        raise ModelError(f"{src}: can only quantise .onnx models (export a .pt first with `detector export`)")
    meta = read_meta(src)
    if meta.extra.get("quantization"):
        raise ModelError(f"{src} is already quantised ({meta.extra['quantization'].get('method')})")
    method = method or config.method
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if tiles is None:
        tiles, record = calibration_tiles(config, meta)
    else:
        record = [{"path": "(given)", "images": 0, "tiles": len(tiles)}]
    if not tiles:
        raise ModelError(f"{src}: no calibration tiles")
    proto = onnx.load(str(src))
    input_name = proto.graph.input[0].name
    log.info("quantising %s with %s on %d calibration tiles", src.name, method, len(tiles))
    with atomic_path(dst) as tmp:
        try:
            if method == "nncf":
                qproto = _nncf_quantize(proto, tiles, config, input_name)
                log.info("%d int8 activation quantisers rewritten as uint8", activations_to_uint8(qproto))
            else:
                _ort_quantize(src, tmp, tiles, proto, input_name)
                qproto = onnx.load(str(tmp))
        except (ModelError, ConfigError):
            raise
        except Exception as e:
            raise ModelError(f"quantising {src} with {method} failed: {type(e).__name__}: {e}") from e
        extra = dict(meta.extra)
        extra["quantization"] = {
            "int8": True,
            "method": method,
            "settings": _settings(method, config),
            "calibration": {
                "config": Path(config.source_file).name if config.source_file else "",
                "seed": config.seed,
                "per_image": config.per_image,
                "tile": config.tile or meta.imgsz,
                "tiles": len(tiles),
                "sources": record,
            },
            "source_model": {"file": src.name, "name": meta.name, "sha256": sha256(src)},
            "quantized": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "versions": _versions(method),
        }
        qmeta = ModelMeta.from_json(meta.to_json())
        qmeta = ModelMeta(
            **{**_fields(qmeta), "name": f"{meta.name}-int8" if meta.name else "int8", "extra": extra}
        )
        props = {p.key: p.value for p in proto.metadata_props}
        props[META_KEY] = qmeta.to_json()
        del qproto.metadata_props[:]
        for k, v in props.items():
            e = qproto.metadata_props.add()
            e.key, e.value = k, v
        if getattr(qproto, "ir_version", 0) > 10:  # older onnxruntime builds read IR <= 10
            qproto.ir_version = 10
        onnx.checker.check_model(qproto)
        onnx.save(qproto, str(tmp))
        try:
            OnnxPredictor(tmp, threads=1)  # it loads, and its metadata matches its graph
        except Exception as e:
            raise ModelError(f"{dst}: the quantised model does not load: {type(e).__name__}: {e}") from e
        os.chmod(tmp, 0o644)
    log.info("wrote %s (INT8, %s, %d calibration tiles, from %s)", dst, method, len(tiles), src.name)
    return dst


def _fields(meta: ModelMeta) -> dict[str, Any]:
    return {k: getattr(meta, k) for k in meta.__dataclass_fields__}


def _settings(method: str, config: QuantizeConfig) -> dict[str, Any]:
    if method == "nncf":
        return {
            "preset": config.preset,
            "format": "QDQ",
            "activations": "uint8 asymmetric",
            "head_decoding": "float",
        }
    return {
        "format": "QDQ",
        "weights": "int8 per-channel symmetric",
        "activations": "uint8 asymmetric",
        "calibration": "minmax",
        "head_decoding": "float",
    }


def _versions(method: str) -> dict[str, str]:
    import onnx
    import onnxruntime

    out = {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__}
    if method == "nncf":
        import nncf

        out["nncf"] = nncf.__version__
    return out


def quantization_record(path: str | Path) -> dict[str, Any] | None:
    """The ``quantization`` record of a model file's metadata, ``None`` for a float model."""
    from detector.model import read_meta

    rec = read_meta(path).extra.get("quantization")
    return dict(rec) if rec else None


def _main(argv: list[str] | None = None) -> None:  # pragma: no cover - `python -m training.quantize`
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("--calib", required=True)
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--method", choices=METHODS, default=None)
    ap.add_argument("--data", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = load_quantize_config(args.calib, args.data)
    print(
        json.dumps(
            quantization_record(quantize_onnx(args.model, args.out, cfg, method=args.method)), indent=1
        )
    )


if __name__ == "__main__":  # pragma: no cover
    _main()
