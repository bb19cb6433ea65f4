"""One benchmark measurement in a fresh process (run by ``scripts/bench.py``, never imported by the package).

Usage: ``python scripts/_bench_worker.py JOB.json RESULT.json``

Every measurement runs in its own process so that its peak resident memory (``ru_maxrss``) is its own and the
libraries it imports are only those it needs: the ``ours`` and ``memory`` jobs import ``detector`` (numpy,
onnxruntime, rasterio, shapely) and never torch; the ``sahi`` job imports SAHI, Ultralytics and torch.

Job kinds (``job["kind"]``):

* ``ours``: ``Detector.load(onnx, runtime=...).predict(scene)``: one warm-up call, then ``repeats`` timed calls.
* ``sahi``: SAHI ``get_sliced_prediction`` with ``AutoDetectionModel`` (``model_type="ultralytics"``) on the
  same scene, tile and overlap: one warm-up call, then ``repeats`` timed calls.
* ``memory``: one ``Detector.predict`` on a large generated GeoTIFF (after one model call on blank tiles, so
  that onnxruntime's first-call set-up is not timed).
* ``dask``: ``detector.distributed.predict_scenes`` on a local cluster of ``workers`` processes (a batch of
  scenes, or scenes split into blocks of tiles), with every worker's peak RSS.

``job["batch"]`` is ``TileConfig.batch``: ``None`` lets the backend choose (1 on the CPU, 8 on CUDA); every
result says the tiles per model call actually used (``"batch"``).

For ``ours`` and ``sahi``, the peak RSS reported is the one reached by the end of the timed calls. After it, the
``ours`` job can measure the model-only floor (bare ``session.run`` of the predictor's own onnxruntime session
on real tiles of the scene, batched as the pipeline batched them, input normalised before the clock starts),
and both can run an accuracy pass at a low confidence (``ap_conf``) whose detections are saved for the AP.
Detections are saved as ``.npz`` (``xyxy``, ``xywhr``, ``scores``, ``class_ids`` in scene pixels, class ids of
the classes of ``configs/taxonomy.yaml``, :func:`detector.taxonomy.default_classes`).
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from anywhere: the repository's package first
    sys.path.insert(0, str(ROOT))


def rss_bytes() -> int:
    """Current resident set size of this process in bytes."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:  # pragma: no cover - psutil is a bench dependency
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far in bytes (``ru_maxrss`` is KiB on Linux)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


def timed(fn: Any, repeats: int) -> tuple[list[float], Any]:
    """Call ``fn()`` ``repeats`` times: ``(seconds per call, last result)``."""
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return times, result


def summary(times: list[float]) -> dict[str, Any]:
    return {"times": times, "median": statistics.median(times), "min": min(times), "max": max(times)}


def save_detections(
    path: str | None, xyxy: Any, xywhr: Any, scores: Any, class_ids: Any, names: Any = None
) -> None:
    if not path:
        return
    extra = {} if names is None else {"names": np.asarray(list(names), dtype=str)}
    np.savez(
        path,
        **extra,
        xyxy=np.asarray(xyxy, np.float64).reshape(-1, 4),
        xywhr=np.asarray(xywhr, np.float64).reshape(-1, 5) if xywhr is not None else np.zeros((0, 5)),
        rotated=np.array(xywhr is not None),
        scores=np.asarray(scores, np.float32).reshape(-1),
        class_ids=np.asarray(class_ids, np.int64).reshape(-1),
    )


# --------------------------------------------------------------------------------------------------------------
# our pipeline


def run_ours(job: dict[str, Any]) -> dict[str, Any]:
    from detector.pipeline import Detector
    from detector.tiling import TileConfig

    rss0 = rss_bytes()
    t0 = time.perf_counter()
    runtime = job.get("runtime") or "onnxruntime"
    det = Detector.load(job["weights"], conf=job["conf"], runtime=runtime)
    load_s = time.perf_counter() - t0
    rss_load = rss_bytes()
    grow = {} if job.get("grow") is None else {"grow": float(job["grow"])}
    cfg = TileConfig(tile=job["tile"], overlap=job["overlap"], batch=job["batch"], **grow)
    scene = job["scene"]
    t0 = time.perf_counter()
    det.predict(scene, tile=cfg)
    warmup_s = time.perf_counter() - t0
    times, dets = timed(lambda: det.predict(scene, tile=cfg), job["repeats"])
    peak = peak_rss_bytes()
    save_detections(job.get("save"), dets.xyxy, dets.xywhr, dets.scores, dets.class_ids, dets.class_names)
    out: dict[str, Any] = {
        **summary(times),
        "warmup_s": warmup_s,
        "load_s": load_s,
        "n_dets": len(dets),
        "tiles": int(dets.meta.get("tiles", -1)),
        "tiles_run": int(dets.meta.get("tiles_run", -1)),
        "width": int(dets.meta["width"]),
        "height": int(dets.meta["height"]),
        "rss_start": rss0,
        "rss_after_load": rss_load,
        "peak_rss": peak,
        "torch_imported": "torch" in sys.modules,
        "intra_op_threads": _ort_threads(det.predictor),
        "streams": _streams(det.predictor),
        "runtime": runtime,
        "tile_size": int(dets.meta.get("tile", -1)),
        "batch": det.tiles_per_call(cfg),
    }
    if job.get("floor") and runtime == "onnxruntime":
        # the pipeline's batches of this scene (every tile holds valid pixels here), plus batch 1
        n, b = out["tiles_run"], out["batch"]
        batches = [b] * (n // b) + ([n % b] if n % b else [])
        tiles = plan_tiles(det, scene, cfg)
        floor = measure_floor(det, tiles, [1, *batches], job["floor_repeats"])
        ab = alternate_with_floor(
            det, scene, cfg, tiles, batches, job.get("floor_rounds", job["floor_repeats"])
        )
        out["floor"] = {
            "batches": batches,
            "per_call": floor,
            "alternated": ab,
            "seconds": ab["floor"]["median"],
            "inter_op_threads": int(det.predictor.session.get_session_options().inter_op_num_threads),
            "providers": det.predictor.session.get_providers(),
        }
    if job.get("ap_conf") is not None:
        low = Detector.load(job["weights"], conf=job["ap_conf"], runtime=runtime)
        d = low.predict(scene, tile=cfg)
        save_detections(job.get("save_ap"), d.xyxy, d.xywhr, d.scores, d.class_ids, d.class_names)
        out["n_dets_ap"] = len(d)
    return out


def _streams(predictor: Any) -> int:
    """Model calls the predictor runs at once (:class:`detector.backends.base.Streams`; 1 when it has none)."""
    streams = getattr(predictor, "streams", None)
    return int(getattr(streams, "n", 1))


def _session_run(session: Any) -> Any:
    """``run(x, stream=0)``: bare ``session.run`` of an onnxruntime session on a normalised batch (one
    placeholder result per tile, as :meth:`detector.backends.base.Streams.map` wants)."""
    name_in, name_out = session.get_inputs()[0].name, session.get_outputs()[0].name

    def run(x: np.ndarray, stream: int = 0) -> list[None]:
        session.run([name_out], {name_in: x})
        return [None] * len(x)

    return run


def _run_calls(det: Any) -> Any:
    """``run(x)``: bare ``session.run`` of the onnxruntime predictor's own session on a normalised batch, split
    over its streams as the pipeline's calls are (:meth:`detector.backends.base.Streams.map`)."""
    part = _session_run(det.predictor.session)
    return lambda x: det.predictor.streams.map(part, x)


def _ort_threads(predictor: Any) -> int | None:
    session = getattr(predictor, "session", None)
    if session is None:
        return None
    try:
        return int(session.get_session_options().intra_op_num_threads)
    except Exception:  # pragma: no cover - depends on the onnxruntime version
        return None


# --------------------------------------------------------------------------------------------------------------
# SAHI + Ultralytics


def sahi_to_arrays(
    predictions: list[Any], class_map: dict[int, str]
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray]:
    """SAHI ``ObjectPrediction`` list -> ``(xyxy, xywhr | None, scores, class_ids)`` in our taxonomy.

    ``xyxy`` is SAHI's own box (for an OBB model, the box enclosing the rotated box, clipped to the image).
    ``xywhr`` comes from the 4-corner polygon SAHI keeps as the prediction's mask for OBB models (corners in
    Ultralytics' ``xyxyxyxy`` order: ``w = |p0 - p3|``, ``h = |p0 - p1|``, angle of ``p0 - p3``); it is
    ``None`` when SAHI gave no polygons. Raw classes outside ``class_map`` are dropped, as our backends do.
    """
    from detector.backends.decode import default_names
    from detector.backends.onnx import regularize_rboxes

    names = default_names(class_map)

    xyxy, polys, scores, cls = [], [], [], []
    for p in predictions:
        ours = class_map.get(int(p.category.id))
        if ours is None:
            continue
        xyxy.append(p.bbox.to_xyxy())
        scores.append(float(p.score.value))
        cls.append(names.index(ours))
        seg = p.mask.segmentation if getattr(p, "mask", None) is not None else None
        polys.append(np.asarray(seg[0], np.float64).reshape(-1, 2) if seg and len(seg[0]) == 8 else None)
    n = len(xyxy)
    xyxy_a = np.asarray(xyxy, np.float64).reshape(n, 4)
    xywhr = None
    if n and all(q is not None for q in polys):
        c = np.stack(polys)  # (n, 4, 2)
        side_w = c[:, 0] - c[:, 3]
        side_h = c[:, 0] - c[:, 1]
        xywhr = regularize_rboxes(
            np.column_stack(
                [
                    c.mean(axis=1),
                    np.hypot(*side_w.T),
                    np.hypot(*side_h.T),
                    np.arctan2(side_w[:, 1], side_w[:, 0]),
                ]
            )
        )
    return xyxy_a, xywhr, np.asarray(scores, np.float32), np.asarray(cls, np.int64)


def run_sahi(job: dict[str, Any]) -> dict[str, Any]:
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    import torch
    from sahi import AutoDetectionModel
    from sahi.predict import get_sliced_prediction

    from detector.model import default_class_map

    threads_import = torch.get_num_threads()
    model = AutoDetectionModel.from_pretrained(
        model_type="ultralytics",
        model_path=str(job["weights"]),
        device="cpu",
        confidence_threshold=job["conf"],
    )
    load_s = time.perf_counter() - t0
    rss_load = rss_bytes()
    threads_after_load = torch.get_num_threads()
    want = job.get("threads")
    if want:
        torch.set_num_threads(int(want))
    tile, overlap = job["tile"], job["overlap"]

    def predict(conf: float | None = None) -> Any:
        return get_sliced_prediction(
            job["scene"],
            model,
            slice_height=tile,
            slice_width=tile,
            overlap_height_ratio=overlap,
            overlap_width_ratio=overlap,
            perform_standard_pred=job["standard_pred"],
            verbose=0,
            confidence_threshold=conf,
        )

    t0 = time.perf_counter()
    predict()
    warmup_s = time.perf_counter() - t0
    # Ultralytics' first predict call runs select_device(), which calls torch.set_num_threads(cpu_count - 1):
    # a thread count set after loading does not survive it, so set it again before the timed calls.
    threads_after_first_call = torch.get_num_threads()
    if want:
        torch.set_num_threads(int(want))
    threads_timed = torch.get_num_threads()
    times, result = timed(predict, job["repeats"])
    threads_end = torch.get_num_threads()
    peak = peak_rss_bytes()
    class_map = default_class_map(tuple(model.category_names), job["weights"])
    preds = result.object_prediction_list
    xyxy, xywhr, scores, cls = sahi_to_arrays(preds, class_map)
    save_detections(job.get("save"), xyxy, xywhr, scores, cls)
    out: dict[str, Any] = {
        **summary(times),
        "warmup_s": warmup_s,
        "load_s": load_s,
        "n_dets": len(scores),
        "n_dets_raw": len(preds),
        "obb_polygons": xywhr is not None or len(scores) == 0,
        "rss_start": rss0,
        "rss_after_load": rss_load,
        "peak_rss": peak,
        "torch_threads": {
            "after_import": threads_import,
            "after_load": threads_after_load,
            "after_first_call": threads_after_first_call,
            "timed_calls": threads_timed,
            "after_timed_calls": threads_end,
        },
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "imgsz": model.model.overrides.get("imgsz") if hasattr(model.model, "overrides") else None,
        "is_obb": bool(getattr(model, "is_obb", False)),
    }
    if job.get("ap_conf") is not None:
        r = predict(job["ap_conf"])
        a = sahi_to_arrays(r.object_prediction_list, class_map)
        save_detections(job.get("save_ap"), *a)
        out["n_dets_ap"] = len(a[2])
    return out


# --------------------------------------------------------------------------------------------------------------
# the model-only floor


def plan_tiles(det: Any, scene_path: str, cfg: Any) -> list[np.ndarray]:
    """The RGB tiles of the scene's plan (``Detector.plan``: the pipeline's own tiles), in plan order."""
    from detector.raster import open_scene

    with open_scene(scene_path) as scene:
        plan = det.plan(scene, cfg)
        return [scene.read(w, out_shape=plan.out_shape)[0] for w in plan.windows]


def measure_floor(det: Any, tiles: list[np.ndarray], sizes: list[int], repeats: int) -> dict[str, Any]:
    """Bare ``session.run`` time per batch size, on the predictor's own session and real tiles of the scene
    (:func:`plan_tiles`), a batch split over the predictor's streams as the pipeline splits it (one tile runs
    alone, on one stream's threads).

    The input is normalised before the clock starts; decoding, NMS and everything else are left out.
    """
    from detector.backends.onnx import to_input

    run = _run_calls(det)
    out: dict[str, Any] = {}
    for b in sorted(set(sizes)):
        x = to_input(np.stack([tiles[i % len(tiles)] for i in range(b)]))
        run(x)  # warm-up for this shape
        times, _ = timed(lambda x=x: run(x), repeats)
        out[str(b)] = {**summary(times), "per_tile_median": statistics.median(times) / b}
    return out


def alternate_with_floor(
    det: Any, scene_path: str, cfg: Any, tiles: list[np.ndarray], batches: list[int], rounds: int
) -> dict[str, Any]:
    """Pipeline and floor timed in alternation, ``rounds`` times each, in this process.

    The floor is bare ``session.run`` on *every* tile of the scene's plan (``tiles``, :func:`plan_tiles`), in the
    pipeline's calls (``batches``, each split over the predictor's streams), inputs normalised before the clock
    starts. Alternating cancels the drift of a shared machine that two blocks of calls, one after the other,
    pick up as overhead.
    """
    from detector.backends.onnx import open_session, to_input

    run = _run_calls(det)
    # the same model in one stream on all the predictor's threads, one tile per call: what the floor was
    # before streams (detector.backends.base.Streams), for the report's reference column
    single = None
    if _streams(det.predictor) > 1:
        single = _session_run(open_session(det.predictor.path, threads=det.predictor.threads))
    inputs, start = [], 0
    for b in batches:
        inputs.append(to_input(np.stack(tiles[start : start + b])))
        start += b

    def floor() -> None:
        for x in inputs:
            run(x)

    def floor_single() -> None:
        for x in inputs:
            for k in range(len(x)):
                single(x[k : k + 1])

    pipe_t, floor_t, single_t = [], [], []
    if single is not None:
        floor_single()  # warm-up for this shape
    for _ in range(rounds):
        pipe_t += timed(lambda: det.predict(scene_path, tile=cfg), 1)[0]
        floor_t += timed(floor, 1)[0]
        if single is not None:
            single_t += timed(floor_single, 1)[0]
    p, f = statistics.median(pipe_t), statistics.median(floor_t)
    out = {"rounds": rounds, "pipeline": summary(pipe_t), "floor": summary(floor_t), "overhead": p / f - 1}
    if single_t:
        out["floor_one_stream"] = summary(single_t)
    return out


# --------------------------------------------------------------------------------------------------------------
# memory on large scenes


def run_memory(job: dict[str, Any]) -> dict[str, Any]:
    from detector.pipeline import Detector
    from detector.tiling import TileConfig

    rss0 = rss_bytes()
    det = Detector.load(job["weights"], conf=job["conf"])
    rss_load = rss_bytes()
    s = det.meta.imgsz
    cfg = TileConfig(tile=job["tile"], overlap=job["overlap"], batch=job["batch"])
    batch = det.tiles_per_call(cfg)
    det.predictor.predict_batch(np.zeros((batch, s, s, 3), np.uint8))  # first-call set-up out of the clock
    t0 = time.perf_counter()
    dets = det.predict(job["scene"], tile=cfg)
    seconds = time.perf_counter() - t0
    return {
        "seconds": seconds,
        "n_dets": len(dets),
        "tiles": int(dets.meta.get("tiles", -1)),
        "tiles_run": int(dets.meta.get("tiles_run", -1)),
        "width": int(dets.meta["width"]),
        "height": int(dets.meta["height"]),
        "rss_start": rss0,
        "rss_after_load": rss_load,
        "peak_rss": peak_rss_bytes(),
        "torch_imported": "torch" in sys.modules,
        "batch": batch,
    }


# --------------------------------------------------------------------------------------------------------------
# Dask


def _warm_worker(spec: Any, tile: Any) -> dict[str, int]:
    """On a worker: load the model (cached per process, as the tasks load it) and run one blank batch of the
    tiles per call the tasks will use; ``{"pid": ..., "batch": ...}``."""
    det = spec.load()
    s = det.meta.imgsz
    batch = det.tiles_per_call(tile)
    det.predictor.predict_batch(np.zeros((batch, s, s, 3), np.uint8))
    return {"pid": os.getpid(), "batch": batch}


def run_dask(job: dict[str, Any]) -> dict[str, Any]:
    """``detector.distributed.predict_scenes`` on a local cluster of ``workers`` processes.

    Each worker loads the model and runs one blank batch before the clock starts; the peak-RSS count of every
    worker is reset then, so the peaks are those of the timed run (model included, since it stays resident).
    ``split`` splits every scene into blocks of tiles (the default ``SPLIT_PIXELS``); otherwise scenes are never
    split.
    """
    import logging

    from distributed import Client

    from detector import distributed as dd
    from detector.batch import BatchConfig, ModelSpec
    from detector.tiling import TileConfig

    logging.getLogger("distributed").setLevel(logging.ERROR)
    split_pixels = (job.get("split_pixels") or dd.SPLIT_PIXELS) if job.get("split") else None
    cfg = BatchConfig(tile=TileConfig(tile=job["tile"], overlap=job["overlap"], batch=job["batch"]))
    t0 = time.perf_counter()
    with dd.local_cluster(int(job["workers"])) as cluster, Client(cluster) as client:
        spec = dd.with_worker_threads(ModelSpec(weights=job["weights"], conf=job["conf"]), client)
        warm = client.run(_warm_worker, spec, cfg.tile)
        start_s = time.perf_counter() - t0
        dd.reset_peak_rss(client)
        rss_ready = client.run(rss_bytes)
        t0 = time.perf_counter()
        results = list(
            dd.predict_scenes(
                client,
                job["scenes"],
                spec,
                cfg,
                split_pixels=split_pixels,
            )
        )
        seconds = time.perf_counter() - t0
        peaks = dd.worker_peak_rss(client)
    errors = [r for _, r in results if isinstance(r, str)]
    if errors:
        raise RuntimeError(f"{len(errors)} scene(s) failed on the cluster: {errors[0]}")
    dets = [r for _, r in results]
    return {
        "seconds": seconds,
        "start_s": start_s,
        "scenes": len(job["scenes"]),
        "tiles": sum(int(d.meta.get("tiles_run", 0)) for d in dets),
        "pixels": sum(int(d.meta["width"]) * int(d.meta["height"]) for d in dets),
        "n_dets": sum(len(d) for d in dets),
        "threads_per_worker": spec.threads,
        "worker_pids": [w["pid"] for w in warm.values()],
        "batch": max(w["batch"] for w in warm.values()),
        "worker_rss_ready": rss_ready,
        "worker_peak_rss": peaks,
        "client_peak_rss": peak_rss_bytes(),
        "split_pixels": split_pixels,
        "block_tiles": dd.BLOCK_TILES,
    }


KINDS = {"ours": run_ours, "sahi": run_sahi, "memory": run_memory, "dask": run_dask}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: _bench_worker.py JOB.json RESULT.json", file=sys.stderr)
        return 2
    job = json.loads(Path(argv[0]).read_text())
    kind = job.get("kind")
    if kind not in KINDS:
        print(f"unknown job kind {kind!r}; expected one of {sorted(KINDS)}", file=sys.stderr)
        return 2
    result = KINDS[kind](job)
    Path(argv[1]).write_text(json.dumps(result, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
