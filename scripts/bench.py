"""Benchmark the CPU inference path and write ``BENCHMARKS.md`` (``make bench``).

Every figure of one report comes from one run on one machine, with the same weights, tile size and overlap
on both sides. By default the model is the shipped one, ``weights/detector.onnx``, at its own tile size (its
input size, 640 px) and :class:`~detector.tiling.TileConfig`'s overlap; SAHI runs the Ultralytics ``.pt`` that
``scripts/onnx_to_pt.py`` rebuilds from it into the cache (same parameters, outputs checked against
onnxruntime). ``--dota`` compares the DOTA-trained ``yolov8n-obb`` at 1024 px instead (the earlier report).
Sections:

(a) **Ours vs SAHI** on the labelled DOTA demo scenes and a 2560 x 2560 headline scene (a mosaic of those
    scenes, with their labels): our path (``Detector.load(onnx).predict``, onnxruntime fp32), its INT8 copy
    (``weights/detector-int8.onnx``, ``runtime="openvino"``; the row says so when the file is missing), and SAHI
    + Ultralytics on the CPU (``get_sliced_prediction``), SAHI run twice: with its defaults (a whole-image pass
    on top of the slices; Ultralytics' torch threads) and with torch set to the threads our side uses.
    Seconds per scene, megapixels per second, peak RSS, and AP50 per class through :mod:`detector.evaluate`
    on the same labels for every side.
(b) **Pipeline overhead** over the model-only floor: bare ``onnxruntime`` ``session.run`` time for the tiles
    of each scene (the pipeline's own plan), in the pipeline's own calls (the tiles per call it used: the
    backend's choice, 1 on the CPU, unless ``--batch``), with its session.
(c) **Memory** of ``Detector.predict`` on generated, internally tiled, DEFLATE-compressed GeoTIFFs of
    growing size (5k and 10k px sides by default; real-imagery texture), in fresh processes.
(d) **Dask** (``detector.distributed.predict_scenes``) with 1 and 2 local workers on a batch of generated
    2560 px scenes and on a generated 20000 px scene split into blocks of tiles, with every worker's peak RSS.
(t) **Tiling**: tile size and overlap in pixels on the headline scene, seconds and mAP50 for each (the
    measurement behind the default tiling).
(w) **Whole processes** on the headline scene, as a user starts them: ``detector predict`` (fp32, and INT8 on
    OpenVINO) against a fresh Python process running SAHI's default, start to exit.

Each measurement runs in a fresh subprocess (``scripts/_bench_worker.py``), so peak RSS values do not mix and
the ONNX side never imports torch. Measurements run one after another, never in parallel. Progress goes to
stderr; the report is written atomically, and the change-detection section that ``scripts/change_bench.py``
writes into the same file (between its ``<!-- change-bench:start -->`` / ``end`` markers) is carried over
unchanged. ``--quick`` is a development run (noisy numbers: the headline mosaic at 1800 px, 1 timed call,
2500 and 3300 px GeoTIFFs, 2 scenes in the Dask batch) that refuses to write ``BENCHMARKS.md``. GDAL settings
in the environment (``GDAL_CACHEMAX=...``) reach every measurement and are listed in the report; thread-count
variables (``OMP_NUM_THREADS`` ...) are removed so that every library runs with its own defaults.

Usage::

    python scripts/bench.py --data ../shared/data --out BENCHMARKS.md
    python scripts/bench.py --quick                     # -> build/bench/BENCHMARKS.quick.md
    python scripts/bench.py --dota --sections a,b       # the DOTA yolov8n-obb at 1024 px
    python scripts/bench.py --sections c,d --memory-sides 5000,10000
    python scripts/bench.py --sections w                # whole processes only (detector predict vs SAHI)
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import shlex
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the repository's package first
    sys.path.insert(0, str(ROOT))

from _bench_report import fmt_mb, fmt_s, machine_info, render  # noqa: E402
from _bench_scenes import BenchScene, build_mosaic, texture_sources, write_textured_geotiff  # noqa: E402

from detector.writers import atomic_path  # noqa: E402

WORKER = Path(__file__).resolve().with_name("_bench_worker.py")
ONNX_TO_PT = Path(__file__).resolve().with_name("onnx_to_pt.py")
#: The shipped default model (fp32, onnxruntime) and its INT8 copy (run with OpenVINO).
DEFAULT_ONNX = ROOT / "weights" / "detector.onnx"
DEFAULT_INT8 = ROOT / "weights" / "detector-int8.onnx"
#: ``--dota``: the DOTA-trained starting model at 1024 px, with the checkpoint it was exported from.
DOTA_ONNX = ROOT / "weights" / "pretrained" / "yolov8n-obb.onnx"
DOTA_PT = ROOT / "weights" / "pretrained" / "yolov8n-obb.pt"
DOTA_TILE, DOTA_OVERLAP = 1024, 0.2
DEFAULT_CACHE = ROOT / "build" / "bench"
EVAL_SET = "dota/demo"
SECTIONS = ("a", "b", "c", "d", "t", "w")
#: Section (t): tile sizes and overlaps (pixels) tried on the headline scene.
SWEEP_TILES = (640, 1024)
SWEEP_OVERLAPS = (64, 128, 160, 192)
#: Timed calls per setting of (t) (after one warm-up): the AP pass is what decides; the seconds are indicative.
SWEEP_REPEATS = 1
#: Section (d): scenes of the batch (generated GeoTIFFs of this side) and the Dask worker counts.
DASK_BATCH = 6
DASK_BATCH_SIDE = 2560
DASK_WORKERS = (1, 2)
#: Section (d): side of the one huge generated scene split into blocks of tiles.
DASK_SPLIT_SIDE = 20000
#: Markers of the section that ``scripts/change_bench.py`` writes into the same report (carried over as it is).
CHANGE_START, CHANGE_END = "<!-- change-bench:start -->", "<!-- change-bench:end -->"
#: Environment variables that set thread pools; removed from the children so every library uses its defaults.
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


class BenchError(RuntimeError):
    """A benchmark step failed (the message says which and where its log is)."""


def log(msg: str) -> None:
    """Progress line on stderr."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------------
# running workers


def child_env(cache: Path) -> dict[str, str]:
    """The environment of every measurement: offline Ultralytics, and no thread-count overrides."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_ENV}
    env["YOLO_OFFLINE"] = "1"
    env.setdefault("YOLO_CONFIG_DIR", str(cache / "ultralytics-config"))
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
    return env


def run_worker(job: dict[str, Any], name: str, cache: Path, timeout: float) -> dict[str, Any]:
    """Run one job in a fresh process; its result plus ``wall_s`` and ``child_maxrss`` (from ``wait4``)."""
    jobs = cache / "jobs"
    jobs.mkdir(parents=True, exist_ok=True)
    job_file, result_file, log_file = (
        jobs / f"{name}.json",
        jobs / f"{name}.result.json",
        jobs / f"{name}.log",
    )
    job_file.write_text(json.dumps(job, indent=1, default=str))
    result_file.unlink(missing_ok=True)
    t0 = time.perf_counter()
    with open(log_file, "w") as logf:
        proc = subprocess.Popen(
            [sys.executable, str(WORKER), str(job_file), str(result_file)],
            cwd=ROOT,
            env=child_env(cache),
            stdout=logf,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        timer = threading.Timer(timeout, _kill_group, (proc.pid,))
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not result_file.is_file():
        tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-25:])
        why = "timed out" if proc.returncode == -signal.SIGKILL else f"exit status {proc.returncode}"
        raise BenchError(f"{name} failed ({why}); log {log_file}:\n{tail}")
    result = json.loads(result_file.read_text())
    result["wall_s"] = wall
    result["child_maxrss"] = int(usage.ru_maxrss) * 1024  # KiB on Linux
    return result


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def load_npz(path: Path) -> Any:
    """Detections saved by a worker (scene pixels, class ids of the taxonomy's classes)."""
    from detector.detections import Detections
    from detector.taxonomy import default_classes

    z = np.load(path)
    return Detections(
        xyxy=z["xyxy"],
        scores=z["scores"],
        class_ids=z["class_ids"],
        class_names=tuple(str(x) for x in z["names"]) if "names" in z else default_classes(),
        xywhr=z["xywhr"] if bool(z["rotated"]) else None,
    )


# --------------------------------------------------------------------------------------------------------------
# the sections


@dataclass
class Settings:
    data: Path
    out: Path
    cache: Path
    onnx: Path
    pt: Path
    int8: Path | None
    tile: int
    overlap: float
    batch: int | None
    conf: float
    ap_conf: float | None
    repeats: int
    scenes: list[str] | None
    headline: int
    memory_sides: list[int]
    sections: tuple[str, ...]
    sahi_threads: int
    quick: bool
    timeout: float
    json_out: Path
    command: str
    dota: bool = False
    rebuild_pt: bool = False
    dask_workers: tuple[int, ...] = DASK_WORKERS
    dask_batch: int = DASK_BATCH
    dask_split_pixels: int | None = None
    dask_split_side: int = DASK_SPLIT_SIDE

    @property
    def overlap_px(self) -> int:
        """The overlap in pixels (``overlap`` is a fraction of the tile below 1, pixels from 1 up)."""
        from detector.tiling import TileConfig

        return TileConfig(tile=self.tile, overlap=self.overlap).overlap_px(self.tile)

    @property
    def overlap_ratio(self) -> float:
        """The same overlap as SAHI takes it: a fraction of the slice."""
        return self.overlap_px / self.tile


def ensure_pt(onnx: Path, pt: Path) -> Path:
    """The Ultralytics ``.pt`` that SAHI runs, rebuilt from ``onnx`` by ``scripts/onnx_to_pt.py`` when missing
    or older than the ONNX file (the rebuild checks its outputs against onnxruntime)."""
    if pt.is_file() and pt.stat().st_mtime >= onnx.stat().st_mtime:
        return pt
    log(f"rebuilding {pt} from {onnx} for the SAHI side (scripts/onnx_to_pt.py)")
    pt.parent.mkdir(parents=True, exist_ok=True)
    env = child_env(pt.parent)
    done = subprocess.run(
        [sys.executable, str(ONNX_TO_PT), str(onnx), "-o", str(pt)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0 or not pt.is_file():
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise BenchError(f"scripts/onnx_to_pt.py {onnx} failed (exit status {done.returncode}):\n{tail}")
    return pt


def comparison_scenes(s: Settings) -> tuple[list[BenchScene], dict[str, Any]]:
    """The labelled demo scenes asked for, plus the headline mosaic; and the eval set's spec."""
    from detector.evaluate import load_eval_config, load_eval_set

    cfg = load_eval_config()
    images, spec = load_eval_set(EVAL_SET, s.data, config=cfg)
    spec = {**spec, "iou_type": spec.get("iou_type", cfg.get("iou_type", "aabb"))}
    by_name = {im.image.stem: im for im in images}
    chosen = images
    if s.scenes is not None:
        unknown = [n for n in s.scenes if n not in by_name]
        if unknown:
            raise BenchError(f"--scenes: {unknown} not in {EVAL_SET} (have {', '.join(by_name)})")
        chosen = [by_name[n] for n in s.scenes]
    scenes = [BenchScene(im.image.stem, im.image, int(im.width), int(im.height), im) for im in chosen]
    if s.headline:
        path = s.cache / f"headline_{s.headline}.png"
        mosaic, layout = build_mosaic(images, s.headline, path)
        left_out = sorted({im.image.name for im in images} - {m["image"] for m in layout})
        if left_out:
            log(f"headline: {', '.join(left_out)} do not fit in {s.headline} x {s.headline} px, left out")
        placed = ", ".join(f"{m['image']} at ({m['x']}, {m['y']})" for m in layout)
        content = sum(m["width"] * m["height"] for m in layout) / 1e6
        scenes.append(
            BenchScene(
                f"headline {s.headline}x{s.headline}",
                path,
                s.headline,
                s.headline,
                mosaic,
                headline=True,
                note=f"mosaic of the {EVAL_SET} scenes ({placed}; {content:.2f} MP of imagery, the rest black), "
                "labels shifted with them",
            )
        )
    return scenes, spec


def section_a(
    s: Settings, scenes: list[BenchScene], spec: dict[str, Any], with_sahi: bool, with_floor: bool
) -> dict[str, Any]:
    """Time ours (and SAHI twice) on every scene; keep the detections for AP; measure the floor for (b)."""
    out: dict[str, Any] = {}
    dets_dir = s.cache / "detections"
    dets_dir.mkdir(parents=True, exist_ok=True)
    for k, sc in enumerate(scenes, 1):
        safe = sc.name.replace(" ", "_")
        for stale in dets_dir.glob(f"{safe}.*.npz"):
            stale.unlink()
        row: dict[str, Any] = {}
        common = {
            "scene": str(sc.path),
            "tile": s.tile,
            "overlap": s.overlap,
            "repeats": s.repeats,
            "conf": s.conf,
        }
        log(f"[{k}/{len(scenes)}] {sc.name} ({sc.width}x{sc.height}): ours (ONNX)")
        row["ours"] = run_worker(
            {
                **common,
                "kind": "ours",
                "weights": str(s.onnx),
                "batch": s.batch,
                "ap_conf": s.ap_conf if sc.labels is not None and with_sahi else None,
                "floor": with_floor,
                "floor_repeats": 1 if s.quick else max(s.repeats, 3),
                "floor_rounds": 1 if s.quick else floor_rounds(s.repeats),
                "save": str(dets_dir / f"{safe}.ours.npz"),
                "save_ap": str(dets_dir / f"{safe}.ours.ap.npz"),
            },
            f"a-{safe}-ours",
            s.cache,
            s.timeout,
        )
        log(f"    ours: {fmt_s(row['ours']['median'])} s median, peak {fmt_mb(row['ours']['peak_rss'])} MB")
        if with_sahi and s.int8 is not None and s.int8.is_file():
            log(f"[{k}/{len(scenes)}] {sc.name}: ours INT8 (OpenVINO)")
            row["int8"] = run_worker(
                {
                    **common,
                    "kind": "ours",
                    "weights": str(s.int8),
                    "runtime": "openvino",
                    "batch": s.batch,
                    "ap_conf": s.ap_conf if sc.labels is not None else None,
                    "save": str(dets_dir / f"{safe}.int8.npz"),
                    "save_ap": str(dets_dir / f"{safe}.int8.ap.npz"),
                },
                f"a-{safe}-int8-openvino",
                s.cache,
                s.timeout,
            )
            log(
                f"    INT8: {fmt_s(row['int8']['median'])} s median, peak {fmt_mb(row['int8']['peak_rss'])} MB"
            )
        if with_sahi:
            log(f"[{k}/{len(scenes)}] {sc.name}: SAHI + Ultralytics, defaults")
            row["sahi"] = run_worker(
                {
                    **common,
                    "kind": "sahi",
                    "weights": str(s.pt),
                    "overlap": s.overlap_ratio,
                    "threads": None,
                    "standard_pred": True,
                    "ap_conf": s.ap_conf if sc.labels is not None else None,
                    "save": str(dets_dir / f"{safe}.sahi.npz"),
                    "save_ap": str(dets_dir / f"{safe}.sahi.ap.npz"),
                },
                f"a-{safe}-sahi-default",
                s.cache,
                s.timeout,
            )
            log(
                f"    SAHI default: {fmt_s(row['sahi']['median'])} s median, peak {fmt_mb(row['sahi']['peak_rss'])} MB"
            )
            log(f"[{k}/{len(scenes)}] {sc.name}: SAHI + Ultralytics, torch threads {s.sahi_threads}")
            row["sahi_threads"] = run_worker(
                {
                    **common,
                    "kind": "sahi",
                    "weights": str(s.pt),
                    "overlap": s.overlap_ratio,
                    "threads": s.sahi_threads,
                    "standard_pred": True,
                    "ap_conf": None,
                    "save": str(dets_dir / f"{safe}.sahi{s.sahi_threads}t.npz"),
                },
                f"a-{safe}-sahi-{s.sahi_threads}threads",
                s.cache,
                s.timeout,
            )
            log(
                f"    SAHI {s.sahi_threads} threads: {fmt_s(row['sahi_threads']['median'])} s median, "
                f"peak {fmt_mb(row['sahi_threads']['peak_rss'])} MB"
            )
        out[sc.name] = row
    if with_sahi:
        out["_accuracy"] = accuracy(s, scenes, spec)
    return out


def accuracy(s: Settings, scenes: list[BenchScene], spec: dict[str, Any]) -> dict[str, Any]:
    """AP50 per class (low-confidence pass) and P/R at the operating threshold (the timed runs' detections)."""
    from detector.evaluate import evaluate_detections

    dets_dir = s.cache / "detections"
    demo = [x for x in scenes if x.labels is not None and not x.headline]
    groups = {
        f"{EVAL_SET} ({len(demo)} scene{'s' if len(demo) != 1 else ''})": demo,
        **{x.name: [x] for x in scenes if x.headline and x.labels is not None},
    }
    out: dict[str, Any] = {}
    for label, group in groups.items():
        if not group:
            continue
        images = [x.labels for x in group]
        res: dict[str, Any] = {}
        sides = ["ours", "sahi"]
        if all((dets_dir / f"{x.name.replace(' ', '_')}.int8.npz").is_file() for x in group):
            sides.append("int8")
        for side in sides:
            names = [x.name.replace(" ", "_") for x in group]
            kw = dict(classes=spec.get("classes"), iou_type=spec["iou_type"], conf=s.conf, name=label)
            entry: dict[str, Any] = {}
            if s.ap_conf is not None:
                low = [load_npz(dets_dir / f"{n}.{side}.ap.npz") for n in names]
                entry["ap"] = evaluate_detections(images, low, **kw).to_dict()
            timed = [load_npz(dets_dir / f"{n}.{side}.npz") for n in names]
            entry["operating"] = evaluate_detections(images, timed, **kw).to_dict()
            res[side] = entry
        out[label] = res
    return out


def floor_rounds(repeats: int) -> int:
    """Rounds of pipeline and floor timed in alternation for (b): 8 at the default 3 repeats."""
    return 2 * repeats + 2


def section_b(s: Settings, scenes: list[BenchScene], timings: dict[str, Any]) -> dict[str, Any]:
    """Pipeline time over the model-only floor measured right after it in the same process (``ours`` jobs)."""
    rows = {}
    for sc in scenes:
        ours = timings.get(sc.name, {}).get("ours")
        if not ours or "floor" not in ours:
            continue
        fl = ours["floor"]
        per_call = {int(k): v["median"] for k, v in fl["per_call"].items()}
        n = ours["tiles_run"]
        rows[sc.name] = {
            "tiles": n,
            "batch": ours.get("batch", s.batch),
            "batches": fl["batches"],
            "per_call": per_call,
            "floor_b1": n * per_call[1],
            "floor": fl["seconds"],
            "pipeline": fl["alternated"]["pipeline"]["median"],
            "floor_one_stream": (fl["alternated"].get("floor_one_stream") or {}).get("median"),
            "overhead": fl["alternated"]["overhead"],
            "rounds": fl["alternated"]["rounds"],
            "intra_op_threads": ours.get("intra_op_threads"),
            "streams": ours.get("streams", 1),
            "inter_op_threads": fl["inter_op_threads"],
            "provider": fl["providers"][0],
        }
    return {"scenes": rows}


def section_c(s: Settings, sources_images: list[Any] | None) -> dict[str, Any]:
    """Generate the large GeoTIFFs (cached) and run one fresh ``Detector.predict`` on each."""
    sources = texture_sources(sources_images)
    rows = {}
    for side in s.memory_sides:
        path = s.cache / f"textured_{side}.tif"
        t0 = time.perf_counter()
        log(f"memory: {side}x{side} GeoTIFF {path} (generated once, then cached)")
        write_textured_geotiff(path, side, sources)
        gen = time.perf_counter() - t0
        tiles, size = _n_tiles(s, side)
        log(f"memory: {side}x{side}: {tiles} tiles of {size} px, Detector.predict in a fresh process")
        r = run_worker(
            {
                "kind": "memory",
                "weights": str(s.onnx),
                "scene": str(path),
                "tile": s.tile,
                "overlap": s.overlap,
                "batch": s.batch,
                "conf": s.conf,
            },
            f"c-memory-{side}",
            s.cache,
            s.timeout,
        )
        r["file_mb"] = path.stat().st_size / 1e6
        r["generate_s"] = gen
        rows[side] = r
        log(f"    {fmt_s(r['seconds'])} s, peak {fmt_mb(r['peak_rss'])} MB, {r['n_dets']} detections")
    return rows


def section_d(s: Settings, sources_images: list[Any] | None) -> dict[str, Any]:
    """Dask: a batch of generated scenes, and the largest generated scene split into blocks of tiles, each with
    1 and 2 local worker processes (``detector.distributed.predict_scenes``), with every worker's peak RSS."""
    sources = texture_sources(sources_images)
    batch = []
    for k in range(s.dask_batch):
        path = s.cache / f"textured_{DASK_BATCH_SIDE}_seed{k + 1}.tif"
        write_textured_geotiff(path, DASK_BATCH_SIDE, sources, seed=k + 1)
        batch.append(str(path))
    big_side = s.dask_split_side
    big = s.cache / f"textured_{big_side}.tif"
    jobs = {"batch": batch}
    if big_side:
        log(f"dask: {big_side}x{big_side} GeoTIFF {big} (generated once, then cached)")
        write_textured_geotiff(big, big_side, sources)
        jobs["split"] = [str(big)]
    out: dict[str, Any] = {"batch_side": DASK_BATCH_SIDE, "split_side": big_side, "runs": {}}
    for what, scenes in jobs.items():
        for n in s.dask_workers:
            log(f"dask: {what} ({len(scenes)} scene{'s' if len(scenes) > 1 else ''}) on {n} worker(s)")
            r = run_worker(
                {
                    "kind": "dask",
                    "weights": str(s.onnx),
                    "scenes": scenes,
                    "workers": n,
                    "tile": s.tile,
                    "overlap": s.overlap,
                    "batch": s.batch,
                    "conf": s.conf,
                    "split": what == "split",
                    "split_pixels": s.dask_split_pixels,
                },
                f"d-dask-{what}-{n}workers",
                s.cache,
                s.timeout,
            )
            log(
                f"    {fmt_s(r['seconds'])} s, {r['tiles']} tiles, worker peaks "
                + ", ".join(fmt_mb(x) for x in r["worker_peak_rss"].values())
                + " MB"
            )
            out["runs"][f"{what}-{n}"] = {**r, "what": what, "workers": n}
    return out


def section_t(s: Settings, scenes: list[BenchScene], spec: dict[str, Any]) -> dict[str, Any]:
    """Tile size and overlap (pixels) on the headline scene: seconds and AP50 through our path, one fresh
    process per setting (the evidence for the default tiling)."""
    from detector.evaluate import evaluate_detections

    head = next((x for x in scenes if x.headline and x.labels is not None), None)
    if head is None:
        log("tiling sweep: no labelled headline scene (--headline 0), skipped")
        return {}
    dets_dir = s.cache / "detections"
    dets_dir.mkdir(parents=True, exist_ok=True)
    rows: dict[str, Any] = {}
    # every tile size and overlap on the balanced grid (the default), plus the plain grid (grow 1) at the default
    settings = [(t, o, None) for t in SWEEP_TILES for o in SWEEP_OVERLAPS] + [(s.tile, s.overlap_px, 1.0)]
    for tile, overlap, grow in settings:
        key = f"{tile}-{overlap}" + ("-plain" if grow == 1.0 else "")
        grid = "plain grid" if grow == 1.0 else "balanced grid"
        log(f"tiling sweep: tile {tile} px, overlap {overlap} px, {grid} on {head.name}")
        r = run_worker(
            {
                "kind": "ours",
                "weights": str(s.onnx),
                "scene": str(head.path),
                "tile": tile,
                "overlap": overlap,
                "grow": grow,
                "batch": s.batch,
                "repeats": SWEEP_REPEATS,
                "conf": s.conf,
                "ap_conf": s.ap_conf,
                "save_ap": str(dets_dir / f"sweep-{key}.ap.npz"),
            },
            f"t-sweep-{key}",
            s.cache,
            s.timeout,
        )
        if s.ap_conf is not None:
            ev = evaluate_detections(
                [head.labels],
                [load_npz(dets_dir / f"sweep-{key}.ap.npz")],
                classes=spec.get("classes"),
                iou_type=spec["iou_type"],
                conf=s.conf,
                name=head.name,
            ).to_dict()
            r["map50"] = ev.get("map50")
            r["ap50"] = {n: (c.get("ap50") or {}).get("all") for n, c in ev.get("classes", {}).items()}
        rows[key] = {**r, "tile": tile, "overlap_px": overlap, "grid": grid}
        log(f"    {fmt_s(r['median'])} s, {r['tiles_run']} tiles, mAP50 {r.get('map50')}")
    return {
        "scene": head.name,
        "largest_object_px": largest_object_px(head.labels),
        "repeats": SWEEP_REPEATS,
        "rows": rows,
    }


#: The SAHI side of (w): a whole Python process that imports SAHI, loads the weights and slices one scene with
#: SAHI's defaults (argv: weights, scene, slice, overlap ratio, conf, torch threads); it writes nothing. With
#: threads > 0 it first predicts one blank 64 px image, as a user who wants that many threads must: Ultralytics'
#: first prediction sets torch to ``cpu_count - 1`` threads, undoing a count set before it.
SAHI_PROCESS = """
import sys
from sahi import AutoDetectionModel
from sahi.predict import get_sliced_prediction
weights, scene, tile, overlap, conf = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
threads = int(sys.argv[6])
model = AutoDetectionModel.from_pretrained(
    model_type="ultralytics", model_path=weights, device="cpu", confidence_threshold=conf
)
if threads:
    import numpy, torch
    model.perform_inference(numpy.zeros((64, 64, 3), numpy.uint8))
    torch.set_num_threads(threads)
result = get_sliced_prediction(
    scene, model, slice_height=tile, slice_width=tile, overlap_height_ratio=overlap, overlap_width_ratio=overlap,
    verbose=0,
)
print(len(result.object_prediction_list))
"""


def section_w(s: Settings, scenes: list[BenchScene]) -> dict[str, Any]:
    """Whole processes on the headline scene, as a user starts them, each ``max(repeats, 3)`` times in
    alternation: ``detector predict SCENE -o DIR`` with its defaults (GeoJSON and quicklook written), the same
    with the INT8 model on OpenVINO (its model cache warmed by one run first), and SAHI in a fresh Python
    process (:data:`SAHI_PROCESS`: import, load, one sliced prediction, nothing written), with its default
    threads and with ``--sahi-threads``. Wall time from
    start to exit; medians."""
    head = next((sc for sc in scenes if sc.headline), None)
    if head is None:
        return {}
    out = s.cache / "whole"

    def predict(name: str, *options: str) -> list[str]:
        cli = "import sys; from detector.cli import main; sys.exit(main())"
        return [
            sys.executable,
            "-c",
            cli,
            "predict",
            str(head.path),
            "-o",
            str(out / name),
            "--overwrite",
            *options,
        ]

    def sahi(threads: int) -> list[str]:
        args = (s.pt, head.path, s.tile, s.overlap_ratio, s.conf, threads)
        return [sys.executable, "-c", SAHI_PROCESS, *(str(a) for a in args)]

    sides: dict[str, list[str]] = {
        "ours": predict("ours"),
        "sahi": sahi(0),
        "sahi_threads": sahi(s.sahi_threads),
    }
    if s.int8 is not None and s.int8.is_file():
        sides["int8"] = predict("int8", "-w", str(s.int8), "--runtime", "openvino")
    env = child_env(s.cache)
    env.setdefault("DETECTOR_OPENVINO_CACHE", str(s.cache / "openvino-cache"))

    def run(name: str) -> float:
        t0 = time.perf_counter()
        proc = subprocess.run(
            sides[name], cwd=ROOT, env=env, capture_output=True, text=True, timeout=s.timeout
        )
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise BenchError(f"whole process {name} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
        return wall

    if "int8" in sides:
        run("int8")  # fills OpenVINO's model cache, as any earlier run on the machine would have
    walls: dict[str, list[float]] = {k: [] for k in sides}
    for k in range(1 if s.quick else max(s.repeats, 3)):
        for name in sides:
            walls[name].append(run(name))
            log(f"whole process {name} [{k + 1}]: {walls[name][-1]:.2f} s")
    return {
        "scene": head.name,
        "walls": walls,
        "median": {k: float(np.median(v)) for k, v in walls.items()},
    }


def largest_object_px(labels: Any) -> float | None:
    """The long side (pixels) of the largest labelled object of a scene: what the overlap must hold whole."""
    sides = []
    for a in labels.annotations:
        poly = np.asarray(a.polygon, np.float64)
        if len(poly) >= 3:
            edges = np.hypot(*(np.roll(poly, -1, axis=0) - poly).T)
            sides.append(float(edges.max()))
    return max(sides) if sides else None


def carry_change_section(out: Path) -> str:
    """The change-bench section of the report already at ``out`` (markers included), or ``""``."""
    if not out.is_file():
        return ""
    text = out.read_text()
    start, end = text.find(CHANGE_START), text.find(CHANGE_END)
    if start < 0 or end < start:
        return ""
    return text[start : end + len(CHANGE_END)]


def _n_tiles(s: Settings, side: int) -> tuple[int, int]:
    """Tiles and tile side of a ``side`` px square scene (the benched models run any tile size: the balanced
    grid of ``TileConfig.grow``)."""
    from detector.tiling import TileConfig, plan_tiles

    plan = plan_tiles(side, side, TileConfig(s.tile, s.overlap), s.tile, any_size=True)
    return len(plan.windows), plan.size


# --------------------------------------------------------------------------------------------------------------
# command line


#: Defaults of a full run and of ``--quick`` (explicit flags win over both).
FULL = {
    "repeats": 3,
    "scenes": None,
    "headline": 2560,
    "memory_sides": "5000,10000",  # the 20000 px scene is measured split on Dask, in (d)
    "dask_batch": DASK_BATCH,
    "dask_split_side": DASK_SPLIT_SIDE,
}
QUICK = {
    "repeats": 1,
    "scenes": "",
    "headline": 1800,
    "memory_sides": "2500,3300",
    "dask_batch": 2,
    "dask_split_side": 3300,
}


def parse_args(argv: list[str] | None = None) -> Settings:
    from detector.tiling import TileConfig

    p = argparse.ArgumentParser(
        prog="bench.py",
        description="Benchmark the CPU inference path against SAHI and write BENCHMARKS.md.",
        epilog="Full-run defaults: the shipped model (weights/detector.onnx) at its own tile size, its INT8 copy "
        "on OpenVINO, --repeats 3, all dota/demo scenes, --headline 2560, --memory-sides 5000,10000, "
        f"--dask-batch {DASK_BATCH}. --dota: the DOTA yolov8n-obb at {DOTA_TILE} px, overlap {DOTA_OVERLAP}, no "
        "INT8. --quick: --repeats 1, no demo scene (the headline mosaic only), --headline 1800, --memory-sides "
        "2500,3300, --dask-batch 2, report at CACHE/BENCHMARKS.quick.md.",
    )
    default_data = os.environ.get("DETECTOR_SHARED_DATA") or str(ROOT.parent / "shared" / "data")
    p.add_argument(
        "--data", default=default_data, help="shared data root holding dota/demo (default: %(default)s)"
    )
    p.add_argument("--out", default=None, help="the report (default: BENCHMARKS.md)")
    p.add_argument("--json", default=None, help="raw results (default: CACHE/bench.json)")
    p.add_argument(
        "--cache",
        default=str(DEFAULT_CACHE),
        help="generated scenes, detections, worker logs (default: %(default)s)",
    )
    p.add_argument(
        "--dota",
        action="store_true",
        help=f"compare the DOTA-trained yolov8n-obb ({_rel(DOTA_ONNX)}, SAHI on {_rel(DOTA_PT)}) at "
        f"{DOTA_TILE} px, overlap {DOTA_OVERLAP}, instead of the shipped model",
    )
    p.add_argument("--onnx", default=None, help=f"our model (default: {_rel(DEFAULT_ONNX)})")
    p.add_argument(
        "--pt",
        default=None,
        help="the checkpoint SAHI runs (default: CACHE/<onnx stem>.pt, rebuilt from the ONNX file by "
        "scripts/onnx_to_pt.py; with --dota the checkpoint the ONNX file was exported from)",
    )
    p.add_argument(
        "--int8",
        default=None,
        help=f"INT8 model run with OpenVINO (default: {_rel(DEFAULT_INT8)}; 'none' skips it)",
    )
    p.add_argument(
        "--tile",
        type=int,
        default=None,
        help="tile / slice size in pixels, both sides (default: the model's input size)",
    )
    p.add_argument(
        "--overlap",
        type=float,
        default=None,
        help="tile overlap, both sides: a fraction below 1, pixels from 1 up (default: TileConfig's)",
    )
    p.add_argument(
        "--batch",
        type=int,
        default=None,
        help="our tiles per model call (default: the backend's own, as TileConfig(batch=None): 1 on the CPU, "
        "8 on CUDA; the report states the batch used)",
    )
    p.add_argument(
        "--conf",
        type=float,
        default=0.25,
        help="confidence of the timed calls, both sides (default: %(default)s)",
    )
    p.add_argument(
        "--ap-conf",
        default=None,
        help="confidence of the accuracy pass (default: conf_eval of configs/eval.yaml); 'none' skips it",
    )
    p.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="timed calls per scene after one warm-up; the median is reported",
    )
    p.add_argument(
        "--scenes", default=None, help="comma-separated dota/demo scene names ('' for none; default: all)"
    )
    p.add_argument("--headline", type=int, default=None, help="side of the headline mosaic scene (0: none)")
    p.add_argument(
        "--memory-sides", default=None, help="comma-separated sides in px of the generated GeoTIFFs of (c)"
    )
    p.add_argument(
        "--sections",
        default="a,b,c,d,t,w",
        help="a: vs SAHI, b: overhead over the floor, c: memory, d: Dask, t: tiling sweep, w: whole processes "
        "(default: a,b,c,d,t,w)",
    )
    p.add_argument(
        "--dask-workers",
        default=",".join(map(str, DASK_WORKERS)),
        help="worker counts of (d) (default: %(default)s)",
    )
    p.add_argument("--dask-batch", type=int, default=None, help="generated scenes in the batch of (d)")
    p.add_argument(
        "--dask-split-side",
        type=int,
        default=None,
        help=f"(d): side in px of the generated scene split into blocks (default {DASK_SPLIT_SIDE}; 0: none)",
    )
    p.add_argument(
        "--dask-split-pixels",
        type=int,
        default=None,
        help="(d): split scenes above this many pixels (default: detector.distributed.SPLIT_PIXELS)",
    )
    p.add_argument(
        "--sahi-threads",
        type=int,
        default=None,
        help="torch threads of the second SAHI row (default: the CPU count)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="development run, < 2 minutes on 2 idle cores; never BENCHMARKS.md",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        help="seconds before a measurement is killed (default: %(default)s)",
    )
    a = p.parse_args(argv)

    mode = QUICK if a.quick else FULL
    for key, value in mode.items():
        if getattr(a, key) is None:
            setattr(a, key, value)
    sections = tuple(x.strip() for x in a.sections.split(",") if x.strip())
    if not sections or any(x not in SECTIONS for x in sections):
        p.error(f"--sections: expected a comma-separated subset of {','.join(SECTIONS)}, got {a.sections!r}")
    cache = Path(a.cache).resolve()
    from detector.model import read_meta

    onnx = Path(a.onnx or (DOTA_ONNX if a.dota else DEFAULT_ONNX)).resolve()
    if not onnx.is_file():
        p.error(f"--onnx: {onnx} not found (run `make setup`)")
    if a.pt:
        pt = Path(a.pt).resolve()
    else:
        pt = DOTA_PT if a.dota and a.onnx is None else cache / f"{onnx.stem}.pt"
    if a.int8 is None:
        int8: Path | None = None if a.dota else DEFAULT_INT8
    else:
        int8 = None if str(a.int8).lower() == "none" else Path(a.int8).resolve()
    if a.tile is None:
        a.tile = DOTA_TILE if a.dota else int(read_meta(onnx).imgsz)
    if a.overlap is None:
        a.overlap = DOTA_OVERLAP if a.dota else TileConfig().overlap
    try:
        workers = tuple(int(x) for x in str(a.dask_workers).split(",") if x.strip())
    except ValueError:
        p.error(f"--dask-workers: expected comma-separated integers, got {a.dask_workers!r}")
    if not workers or min(workers) < 1:
        p.error(f"--dask-workers must be positive, got {a.dask_workers!r}")
    out = Path(a.out) if a.out else (cache / "BENCHMARKS.quick.md" if a.quick else ROOT / "BENCHMARKS.md")
    if a.quick and out.resolve() == (ROOT / "BENCHMARKS.md").resolve():
        p.error("--quick numbers are not publishable: write them anywhere but BENCHMARKS.md")
    try:
        sides = [int(x) for x in str(a.memory_sides).split(",") if x.strip()]
    except ValueError:
        p.error(f"--memory-sides: expected comma-separated integers, got {a.memory_sides!r}")
    if any(x < 1 for x in sides):
        p.error(f"--memory-sides must be positive, got {a.memory_sides!r}")
    if a.ap_conf is None:
        from detector.evaluate import load_eval_config

        ap_conf: float | None = float(load_eval_config().get("conf_eval", 0.001))
    elif str(a.ap_conf).lower() == "none":
        ap_conf = None
    else:
        ap_conf = float(a.ap_conf)
    scenes = None if a.scenes is None else [x.strip() for x in a.scenes.split(",") if x.strip()]
    if (
        a.repeats < 1
        or a.tile < 32
        or (a.batch is not None and a.batch < 1)
        or a.headline < 0
        or a.dask_batch < 1
    ):
        p.error("--repeats, --batch and --dask-batch must be >= 1, --tile >= 32, --headline >= 0")
    try:
        TileConfig(tile=a.tile, overlap=a.overlap).overlap_px(a.tile)
    except ValueError as e:
        p.error(f"--tile / --overlap: {e}")
    return Settings(
        data=Path(a.data).resolve(),
        out=out,
        cache=cache,
        onnx=onnx,
        pt=pt,
        int8=int8,
        tile=a.tile,
        overlap=a.overlap,
        batch=a.batch,
        conf=a.conf,
        ap_conf=ap_conf,
        repeats=a.repeats,
        scenes=scenes,
        headline=a.headline,
        memory_sides=sides,
        sections=sections,
        sahi_threads=a.sahi_threads or os.cpu_count() or 1,
        quick=a.quick,
        timeout=a.timeout,
        json_out=Path(a.json) if a.json else cache / ("bench.quick.json" if a.quick else "bench.json"),
        command=" ".join(
            shlex.quote(x) for x in ["scripts/bench.py", *(argv if argv is not None else sys.argv[1:])]
        ),
        dota=a.dota,
        rebuild_pt=not a.pt and not (a.dota and a.onnx is None),
        dask_workers=workers,
        dask_batch=a.dask_batch,
        dask_split_pixels=a.dask_split_pixels,
        dask_split_side=a.dask_split_side,
    )


def _rel(p: Path) -> str:
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


def main(argv: list[str] | None = None) -> int:
    s = parse_args(argv)
    t_start = time.perf_counter()
    if "a" in s.sections:
        if s.rebuild_pt:
            ensure_pt(s.onnx, s.pt)
        elif not s.pt.is_file():
            raise BenchError(
                f"{s.pt} not found (SAHI side): run `make setup` to fetch the pretrained weights"
            )
    if s.int8 is not None and not s.int8.is_file():
        log(f"INT8: {s.int8} not found; its rows say so")
    load_before = os.getloadavg()[0]
    if load_before > 0.5 * (os.cpu_count() or 1):
        log(
            f"warning: load average {load_before:.2f} on {os.cpu_count()} CPUs: the timings will be contaminated"
        )
    r: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(),
    }
    r["load_before"] = load_before
    r["gdal_env"] = {k: v for k, v in os.environ.items() if k.startswith(("GDAL_", "CPL_", "VSI_"))}
    r["eval_set"], r["thread_env"] = EVAL_SET, THREAD_ENV
    scenes: list[BenchScene] = []
    spec: dict[str, Any] = {}
    if "a" in s.sections or "b" in s.sections:
        scenes, spec = comparison_scenes(s)
        r["iou_type"] = spec.get("iou_type")
        r["eval_set_description"] = spec.get("description", "")
        r["a"] = section_a(s, scenes, spec, with_sahi="a" in s.sections, with_floor="b" in s.sections)
    if "b" in s.sections:
        r["b"] = section_b(s, scenes, r["a"])
    if "c" in s.sections:
        images = None
        try:
            from detector.evaluate import load_eval_set

            images, _ = load_eval_set(EVAL_SET, s.data)
        except ValueError as e:
            log(f"memory: {e}; texturing the generated scenes procedurally")
        r["c"] = section_c(s, images)
        r["c_texture"] = (
            f"the {EVAL_SET} imagery" if images else "procedural noise (no labelled scenes found)"
        )
    if "d" in s.sections:
        images = None
        try:
            from detector.evaluate import load_eval_set

            images, _ = load_eval_set(EVAL_SET, s.data)
        except ValueError as e:
            log(f"dask: {e}; texturing the generated scenes procedurally")
        r["d"] = section_d(s, images)
    if "t" in s.sections:
        if not scenes:
            scenes, spec = comparison_scenes(s)
        r["t"] = section_t(s, scenes, spec)
    if "w" in s.sections:
        if not scenes:
            scenes, spec = comparison_scenes(s)
        r["w"] = section_w(s, scenes)
    r["load_after"] = os.getloadavg()[0]
    r["took_s"] = time.perf_counter() - t_start
    r["_scenes"] = scenes
    change = carry_change_section(s.out)
    text = render(s, r)
    if change:
        text = text.rstrip("\n") + "\n\n" + change + "\n"
    with atomic_path(s.out) as tmp:
        tmp.write_text(text)
    raw = {k: v for k, v in r.items() if k != "_scenes"}
    raw["scenes"] = [
        {
            "name": x.name,
            "path": str(x.path),
            "width": x.width,
            "height": x.height,
            "headline": x.headline,
            "note": x.note,
        }
        for x in scenes
    ]
    raw["settings"] = {k: str(v) if isinstance(v, Path) else v for k, v in vars(s).items() if k != "results"}
    with atomic_path(s.json_out) as tmp:
        tmp.write_text(json.dumps(raw, indent=1, default=str))
    log(f"wrote {s.out} and {s.json_out} in {r['took_s'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as e:
        log(f"error: {e}")
        sys.exit(1)
