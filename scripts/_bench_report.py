"""The markdown report of ``scripts/bench.py``: setup header, the sections, and the targets."""

from __future__ import annotations

import hashlib
import importlib.metadata
import math
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
#: Peak RSS target of (c) and of every Dask worker of (d), bytes.
MEMORY_TARGET = 1.5 * 1024**3
#: Speed targets of the default path on the headline scene: x SAHI default, x SAHI with the same threads.
SPEEDUP_DEFAULT, SPEEDUP_THREADS = 3.0, 2.0
#: Pipeline overhead target over the model-only floor, and the INT8 AP50 tolerance against fp32.
OVERHEAD_TARGET, INT8_AP_TOLERANCE = 0.10, 0.01
#: "Flat" memory: the peak grows by at most this fraction from the smallest to the largest scene of (c).
FLAT_GROWTH = 0.20
#: Package versions named in the header.
PACKAGES = ("onnxruntime", "torch", "ultralytics", "sahi", "numpy", "rasterio", "shapely", "opencv-python")


def fmt_s(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"


def fmt_mb(x: float | None) -> str:
    return "-" if x is None else f"{x / 2**20:.0f}"


def _ratio(a: float | None, b: float | None) -> str:
    return "-" if not a or not b else f"{a / b:.2f}x"


def _speed_cells(mpix: float, ours: float, sahi: tuple[float, float] | None) -> list[str]:
    """Section (a) cells: our seconds and MP/s, then, when SAHI ran, its default and thread-matched seconds
    and MP/s and the two SAHI / ours ratios."""
    cells = [fmt_s(ours), f"{mpix / ours:.2f}"]
    if sahi is not None:
        default, threads = sahi
        cells += [fmt_s(default), f"{mpix / default:.2f}", fmt_s(threads), f"{mpix / threads:.2f}"]
        cells += [_ratio(default, ours), _ratio(threads, ours)]
    return cells


def _ap(x: float | None) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


def _table(head: list[str], rows: list[list[str]], align: str | None = None) -> str:
    align = align or "l" + "r" * (len(head) - 1)
    sep = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(sep) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def machine_info() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        cpu = platform.processor() or "unknown"
    quota = None
    try:
        q, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        quota = None if q == "max" else round(int(q) / int(period), 2)
    except (OSError, ValueError):
        pass
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            versions[p] = "not installed"
    import rasterio

    versions["GDAL"] = rasterio.__gdal_version__
    versions["python"] = platform.python_version()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        commit = f"{commit}{' (uncommitted changes)' if dirty else ''}" if commit else "unknown"
    except (OSError, subprocess.SubprocessError):
        commit = "unknown"
    return {
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cgroup_cpu_quota": quota,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1e9, 1),
        "platform": platform.platform(),
        "versions": versions,
        "commit": commit,
    }


def file_info(path: Path) -> str:
    if not path.is_file():
        return f"`{_rel(path)}` (missing)"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return f"`{_rel(path)}` ({path.stat().st_size / 1e6:.1f} MB, sha256 {digest[:16]})"


def _rel(p: Path) -> str:
    try:
        return str(Path(p).resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


def render(s: Any, r: dict[str, Any]) -> str:
    """The report for settings ``s`` (``bench.Settings``) and results ``r`` (see ``bench.main``)."""
    EVAL_SET, THREAD_ENV = r["eval_set"], r["thread_env"]
    m = r["machine"]
    v = m["versions"]
    a = r.get("a") or {}
    b = r.get("b")
    c = r.get("c")
    scenes: list[Any] = r.get("_scenes", [])
    L: list[str] = ["# Benchmarks", ""]
    if s.quick:
        L += [
            "> **QUICK development run** (`--quick`): 1 timed call per scene, small scenes. Not for publication.",
            "",
        ]
    L += [
        f"Generated by `{s.command}` on {r['date']} (took {r['took_s'] / 60:.1f} min). Every number below comes "
        "from this one run on this one machine; rerun `make bench` rather than editing by hand.",
        "",
        "## Setup",
        "",
        f"- **Machine**: {m['cpu']}; {m['cpu_count']} logical CPUs"
        + (f" ({m['affinity']} usable)" if m["affinity"] and m["affinity"] != m["cpu_count"] else "")
        + (f", cgroup quota {m['cgroup_cpu_quota']} CPUs" if m["cgroup_cpu_quota"] else "")
        + f", {m['memory_gb']} GB RAM; {m['platform']}.",
        f"- **Load average** (1 min) before / after: {r['load_before']:.2f} / {r['load_after']:.2f}"
        + (
            " -- **the machine was busy: timings are contaminated**"
            if max(r["load_before"], r["load_after"]) > 0.5 * (m["cpu_count"] or 1)
            else ""
        )
        + ".",
        "- **GDAL settings** in the environment: "
        + (
            ", ".join(f"`{k}={v}`" for k, v in sorted(r.get("gdal_env", {}).items()))
            or "none (library defaults)"
        )
        + ".",
        f"- **Versions**: onnxruntime {v['onnxruntime']}, torch {v['torch']}, ultralytics {v['ultralytics']}, "
        f"sahi {v['sahi']}, numpy {v['numpy']}, rasterio {v['rasterio']} (GDAL {v['GDAL']}), shapely "
        f"{v['shapely']}, opencv {v['opencv-python']}, Python {v['python']}; repository at {m['commit']}.",
        f"- **Weights**: ours {file_info(s.onnx)}; SAHI runs {file_info(s.pt)}, "
        + (
            "rebuilt from it by `scripts/onnx_to_pt.py` (same parameters; outputs checked against onnxruntime)"
            if getattr(s, "rebuild_pt", False)
            else "the checkpoint it was exported from"
        )
        + (
            f"; INT8: {file_info(s.int8)} run with OpenVINO"
            if getattr(s, "int8", None) is not None
            else "; INT8 not run"
        )
        + ".",
        f"- **Tiling**: SAHI slices of {s.tile} px, overlap {_overlap(s)} (Ultralytics letterboxes a slice to the "
        "model's 640 px, so larger slices would be downscaled); ours: the default balanced grid (`TileConfig.grow`: "
        f"square tiles of {s.tile} px up to 1.25x that, whichever needs the fewest model pixels, overlap at least "
        f"{_overlap(s)}; the (a) table's `tiles` column); ours {_batch_text(s, _batches_used(r))}; operating confidence {s.conf} on both sides (SAHI's own default is 0.3); each tool's "
        "own within-tile NMS defaults (ours IoU 0.6, Ultralytics 0.7).",
        f"- **Threads**: ours: {_threads_ours(r)}, inter-op 1, plus one read-ahead thread. "
        + (
            f"SAHI default: torch threads as Ultralytics leaves them ({_threads_sahi(r, 'sahi')}). SAHI "
            f"{s.sahi_threads} threads: `torch.set_num_threads({s.sahi_threads})` after loading and again after "
            f"the warm-up call ({_threads_sahi(r, 'sahi_threads')}). "
            if _threads_sahi(r, "sahi") != "not measured"
            else ""
        )
        + f"Thread variables ({', '.join(THREAD_ENV)}) are removed from every measurement's environment.",
        f"- **Timing**: each side and scene in a fresh process: load, one warm-up call on the scene, then "
        f"{_calls(s.repeats, 'timed call')}; the **median** is reported "
        f"(min in the JSON). A call is the whole user-facing function on the image file: read/decode, tiling, "
        "model, decoding, merging. Peak RSS is the process's `ru_maxrss` at the end of the timed calls "
        "(imports, model and warm-up included).",
        "",
    ]
    # ---- (a)
    if a:
        has_sahi = any("sahi" in a.get(sc.name, {}) for sc in scenes)
        title = (
            "Our ONNX path vs SAHI 0.12 + Ultralytics (CPU)" if has_sahi else "Our ONNX path (SAHI not run)"
        )
        L += [f"## (a) {title}", ""]
        has_int8 = any("int8" in a.get(sc.name, {}) for sc in scenes)
        head = ["scene", "size (MP)", "tiles", "ours s", "ours MP/s"]
        if has_int8:
            head += ["INT8 OpenVINO s", "INT8 MP/s"]
        if has_sahi:
            head += [
                "SAHI default s",
                "SAHI default MP/s",
                f"SAHI {s.sahi_threads}t s",
                f"SAHI {s.sahi_threads}t MP/s",
                "SAHI default / ours",
                f"SAHI {s.sahi_threads}t / ours",
            ]
        rows = []
        tot = {"mp": 0.0, "ours": 0.0, "sahi": 0.0, "sahi_threads": 0.0, "int8": 0.0}
        for sc in scenes:
            row = a.get(sc.name)
            if not row:
                continue
            o = row["ours"]
            name = f"**{sc.name}**" if sc.headline else sc.name
            sahi = (row["sahi"]["median"], row["sahi_threads"]["median"]) if has_sahi else None
            cells = _speed_cells(sc.mpix, o["median"], sahi)
            if has_int8:
                q = row.get("int8", {}).get("median")
                cells[2:2] = [fmt_s(q), f"{sc.mpix / q:.2f}" if q else "-"]
            rows.append([name, f"{sc.width}x{sc.height} ({sc.mpix:.2f})", str(o["tiles"])] + cells)
            if not sc.headline:
                tot["mp"] += sc.mpix
                tot["ours"] += o["median"]
                tot["int8"] += row.get("int8", {}).get("median") or float("nan")
                if has_sahi:
                    tot["sahi"] += row["sahi"]["median"]
                    tot["sahi_threads"] += row["sahi_threads"]["median"]
        if sum(1 for sc in scenes if not sc.headline and sc.name in a) > 1:
            sahi = (tot["sahi"], tot["sahi_threads"]) if has_sahi else None
            cells = _speed_cells(tot["mp"], tot["ours"], sahi)
            if has_int8:
                q = tot["int8"]
                cells[2:2] = [fmt_s(q), "-" if math.isnan(q) else f"{tot['mp'] / q:.2f}"]
            rows.append([f"total of the {EVAL_SET} scenes", f"{tot['mp']:.2f}", ""] + cells)
        L += [_table(head, rows), ""]
        if getattr(s, "int8", None) is not None and not has_int8:
            L += [f"INT8 OpenVINO: `{_rel(s.int8)}` did not exist when this ran, so it has no row.", ""]
        L += [
            "Peak resident memory (MB, fresh process per side and scene) and detections at the operating threshold:",
            "",
        ]
        head = ["scene", "ours peak", "ours after load"]
        if has_sahi:
            head += ["SAHI default peak", "SAHI after load", f"SAHI {s.sahi_threads}t peak"]
        head += ["ours detections"] + (["SAHI detections"] if has_sahi else [])
        rows = []
        for sc in scenes:
            row = a.get(sc.name)
            if not row:
                continue
            o = row["ours"]
            cells = [sc.name, fmt_mb(o["peak_rss"]), fmt_mb(o["rss_after_load"])]
            if has_sahi:
                cells += [
                    fmt_mb(row["sahi"]["peak_rss"]),
                    fmt_mb(row["sahi"]["rss_after_load"]),
                    fmt_mb(row["sahi_threads"]["peak_rss"]),
                ]
            cells += [str(o["n_dets"])] + ([str(row["sahi"]["n_dets"])] if has_sahi else [])
            rows.append(cells)
        L += [_table(head, rows), ""]
        notes = [sc for sc in scenes if sc.note]
        for sc in notes:
            L += [f"- **{sc.name}**: {sc.note}."]
        if has_sahi:
            any_sahi = next(a[sc.name]["sahi"] for sc in scenes if sc.name in a and "sahi" in a[sc.name])
            L += [
                f"- SAHI default = `get_sliced_prediction(slice {s.tile}, overlap ratio {s.overlap_ratio:.4g})` "
                "with its defaults: "
                "`perform_standard_pred=True` adds a whole-image pass (downscaled to the model input) on top of the "
                "slices of every scene larger than one slice; SAHI forces plain NMS (axis-aligned boxes, its IOS "
                "metric, threshold 0.5) to merge OBB predictions. Ultralytics letterboxes each slice to "
                f"imgsz {any_sahi.get('imgsz')}.",
                f"- torch threads in the SAHI default process: {_threads_sahi(r, 'sahi', detail=True)}. Ultralytics' "
                "first prediction runs `select_device()`, which calls `torch.set_num_threads(cpu_count - 1)`: a "
                "count set right after loading is undone by the first call, so the two-thread row sets it again "
                "after the warm-up call and checks it before the timed calls.",
                "- torch was imported by our side's process: "
                + (
                    "yes"
                    if any(a[sc.name]["ours"].get("torch_imported") for sc in scenes if sc.name in a)
                    else "no"
                )
                + ".",
                "",
            ]
        acc = a.get("_accuracy") or {}
        if acc:
            L += ["### Accuracy (same labels, same metric, both sides)", ""]
            L += [
                f"AP50 per class (COCO 101-point, boxes compared as `{r.get('iou_type', 'aabb')}`: enclosing "
                f"axis-aligned boxes) from a separate pass at conf {s.ap_conf} on each side (SAHI then switches its "
                f"merge to NMS/IOU by itself, as it does below conf 0.1); precision / recall at conf {s.conf} "
                "from the timed calls' own detections. Classes without ground truth in the scenes are left out. "
                "Both sides run the same weights: this compares the two inference paths (tiling, merging, the "
                f"whole-image pass), not the model. About the scenes: {r.get('eval_set_description') or EVAL_SET}.",
                "",
            ]
            acc_int8 = any("int8" in res for res in acc.values())
            head = ["scenes", "class", "GT", "AP50 ours", "AP50 SAHI"]
            head += ["AP50 INT8"] if acc_int8 else []
            head += ["P / R ours", "P / R SAHI"]
            rows = []
            for label, res in acc.items():
                int8_ap = ((res.get("int8") or {}).get("ap") or {}).get("classes", {})
                ours_ap = (res["ours"].get("ap") or {}).get("classes", {})
                sahi_ap = (res["sahi"].get("ap") or {}).get("classes", {})
                ours_op = res["ours"]["operating"]["classes"]
                sahi_op = res["sahi"]["operating"]["classes"]
                for name in ours_op:
                    rows.append(
                        [
                            label,
                            name,
                            str(ours_op[name]["n_gt"]["all"]),
                            _ap((ours_ap.get(name) or {}).get("ap50", {}).get("all")),
                            _ap((sahi_ap.get(name) or {}).get("ap50", {}).get("all")),
                        ]
                        + ([_ap((int8_ap.get(name) or {}).get("ap50", {}).get("all"))] if acc_int8 else [])
                        + [
                            f"{_ap(ours_op[name]['precision'])} / {_ap(ours_op[name]['recall'])}",
                            f"{_ap(sahi_op.get(name, {}).get('precision'))} / {_ap(sahi_op.get(name, {}).get('recall'))}",
                        ]
                    )
                rows.append(
                    [
                        label,
                        "**mAP50**",
                        "",
                        f"**{_ap((res['ours'].get('ap') or {}).get('map50'))}**",
                        f"**{_ap((res['sahi'].get('ap') or {}).get('map50'))}**",
                    ]
                    + (
                        [f"**{_ap(((res.get('int8') or {}).get('ap') or {}).get('map50'))}**"]
                        if acc_int8
                        else []
                    )
                    + ["", ""]
                )
            L += [_table(head, rows, "llr" + "r" * (len(head) - 3)), ""]
    # ---- (b)
    if b and b["scenes"]:
        any_row = next(iter(b["scenes"].values()))
        b_used = _batches_used(r, "b")
        rest = "" if max(b_used, default=1) == 1 else "; full batches, the rest in one last batch"
        one = any(x.get("floor_one_stream") for x in b["scenes"].values())  # the reference column
        L += ["## (b) Pipeline overhead over the model-only floor", ""]
        L += [
            "The floor is bare `session.run` of the pipeline's own onnxruntime session (the same object, so the "
            f"same options: intra-op {any_row['intra_op_threads']}, inter-op {any_row['inter_op_threads']}, "
            f"{any_row['provider']}) on every tile of the scene's plan, inputs normalised before the clock "
            f"starts, in the pipeline's own calls: {_batch_text(s, b_used)}{rest}, each call's tiles split over "
            f"the predictor's {any_row.get('streams', 1)} stream(s) as the pipeline splits them (one tile per "
            "stream at once). Pipeline (`Detector.predict`) and "
            f"floor are timed in alternation in the same process, {any_row.get('rounds', 1)} rounds each, so that the "
            "drift of a shared machine falls on both; `pipeline s` and `floor s` are their medians, and `ms per tile, "
            "batch 1` is one tile's `session.run` alone, on one stream's threads (median of "
            f"{_calls(1 if s.quick else max(s.repeats, 3))}). Overhead = pipeline median / floor median - 1: reading "
            "and decoding the image, normalisation, decoding the outputs, NMS, moving to scene pixels, merging."
            + (
                " `floor, 1 stream s` (timed in the same alternation) is the same tiles one at a time on one "
                "session with all the threads as intra-op threads: the floor before streams, for reference."
                if one
                else ""
            ),
            "",
        ]
        # a column of its own for the pipeline's batch when it is not 1
        batched = [n for n in b_used if n != 1]
        head = ["scene", "tiles", "batches", "ms per tile, batch 1"]
        head += [f"ms per tile, batch {'/'.join(map(str, batched))}"] if batched else []
        head += ["tiles x batch 1 s", "floor s"] + (["floor, 1 stream s"] if one else [])
        head += ["pipeline s", "overhead"]
        rows = []
        for sc in scenes:
            x = b["scenes"].get(sc.name)
            if not x:
                continue
            pc, n = x["per_call"], _row_batch(s, x)
            rows.append(
                [
                    f"**{sc.name}**" if sc.headline else sc.name,
                    str(x["tiles"]),
                    "+".join(map(str, x["batches"])),
                    f"{pc[1] * 1000:.0f}",
                ]
                + ([f"{pc[n] / n * 1000:.0f}" if n in pc and n != 1 else "-"] if batched else [])
                + [
                    fmt_s(x["floor_b1"]),
                    fmt_s(x["floor"]),
                ]
                + (
                    ["-" if x.get("floor_one_stream") is None else fmt_s(x["floor_one_stream"])]
                    if one
                    else []
                )
                + [
                    fmt_s(x["pipeline"]),
                    "-" if x["overhead"] is None else f"{x['overhead'] * 100:+.1f}%",
                ]
            )
        L += [_table(head, rows), ""]
    # ---- (c)
    if c:
        c_used = _batches_used(r, "c")
        c_n = "/".join(map(str, c_used)) if c_used else "the backend's"
        c_tiles = "1 blank tile" if c_used == [1] else f"a batch of {c_n} blank tiles"
        tile_cfg = f"TileConfig(tile={s.tile}, overlap={s.overlap}, batch={s.batch})"
        L += ["## (c) Memory and throughput on large GeoTIFFs", ""]
        L += [
            "Generated 3-band uint8 GeoTIFFs, internally tiled 512 x 512, DEFLATE, textured with randomly placed, "
            f"rotated and flipped 512 px patches of {r.get('c_texture', EVAL_SET)} (cached in `{_rel(s.cache)}`, not "
            f"committed). One fresh process per file: `Detector.load` (ONNX), one model call on {c_tiles} "
            "(first-call set-up, not timed), then one timed `Detector.predict(file, "
            f"tile={tile_cfg})`: {_batch_text(s, c_used)}. Peak = `ru_maxrss` of the whole process; "
            "`after load` = its RSS with the model loaded. onnxruntime's memory depends on the batch size, so "
            + (
                "only sides with at least one full batch compare like for like."
                if max(c_used, default=1) > 1
                else "every side compares like for like here (every call holds one tile)."
            ),
            "",
        ]
        head = [
            "side (px)",
            "MP",
            "file MB",
            "tiles",
            "seconds",
            "MP/s",
            "s per tile",
            "peak RSS MB",
            "after load MB",
            "detections",
        ]
        rows = []
        for x in c.values():
            mp = x["width"] * x["height"] / 1e6
            rows.append(
                [
                    f"{x['width']} x {x['height']}",
                    f"{mp:.0f}",
                    f"{x['file_mb']:.0f}",
                    str(x["tiles"]),
                    fmt_s(x["seconds"]),
                    f"{mp / x['seconds']:.2f}",
                    f"{x['seconds'] / max(x['tiles_run'], 1):.3f}",
                    fmt_mb(x["peak_rss"]),
                    fmt_mb(x["rss_after_load"]),
                    str(x["n_dets"]),
                ]
            )
        L += [_table(head, rows), ""]
    # ---- (d)
    d = r.get("d")
    if d and d.get("runs"):
        L += ["## (d) Dask: a batch of scenes, and one huge scene split into blocks", ""]
        any_run = next(iter(d["runs"].values()))
        split_mp = (
            next((x["split_pixels"] for x in d["runs"].values() if x.get("split_pixels")), 0) or 0
        ) / 1e6
        L += [
            "`detector.distributed.predict_scenes` (what `batch.run(..., client=...)` and `detector predict "
            "--workers N` run) on a local cluster of N worker processes, one task at a time each, model threads "
            "= the host's CPUs shared by the workers; one fresh cluster per row. Before the clock starts every "
            f"worker loads the model and runs one blank batch, then its peak-RSS count is reset (`VmHWM`), so the "
            f"peaks are the timed run's (model included). The batch: {s.dask_batch} generated "
            f"{d['batch_side']} x {d['batch_side']} GeoTIFFs (as in (c), other seeds), one task per scene. The "
            f"split scene: a generated {d['split_side']} x {d['split_side']} GeoTIFF (as in (c)), split into blocks of "
            f"{any_run['block_tiles']} tiles (scenes over {split_mp:g} MP are split), merged once in tile order. "
            f"Ours {_batch_text(s, _batches_used(r, 'd'))}.",
            "",
        ]
        head = [
            "work",
            "workers",
            "threads / worker",
            "tiles",
            "seconds",
            "MP/s",
            "speed-up",
            "peak RSS per worker MB",
        ]
        rows = []
        for x in d["runs"].values():
            base = d["runs"].get(f"{x['what']}-1")
            what = (
                f"batch of {x['scenes']} x {d['batch_side']} px"
                if x["what"] == "batch"
                else f"{d['split_side']} px scene in blocks"
            )
            rows.append(
                [
                    what,
                    str(x["workers"]),
                    str(x["threads_per_worker"]),
                    str(x["tiles"]),
                    fmt_s(x["seconds"]),
                    f"{x['pixels'] / 1e6 / x['seconds']:.2f}",
                    _ratio(base["seconds"], x["seconds"]) if base else "-",
                    ", ".join(fmt_mb(v) for v in x["worker_peak_rss"].values()),
                ]
            )
        L += [_table(head, rows), ""]
    # ---- (t)
    sweep = r.get("t")
    if sweep and sweep.get("rows"):
        L += ["## (t) Tile size and overlap (the default tiling, by measurement)", ""]
        big = sweep.get("largest_object_px")
        L += [
            f"Our path on the **{sweep['scene']}** scene for each tile size and overlap in pixels, one fresh "
            f"process per setting, {_calls(sweep.get('repeats', s.repeats), 'timed call')} after a warm-up (the "
            "seconds are indicative; (a) times the default setting properly); mAP50 from the "
            f"accuracy pass at conf {s.ap_conf} (same labels and metric as (a)). The largest labelled object of "
            "the scene is "
            + (f"{big:.0f} px long" if big else "unknown")
            + ": an overlap at least that long puts every object whole into some tile.",
            "",
        ]
        head = ["tile px", "overlap px", "grid", "tiles", "seconds", "MP/s", "mAP50"]
        rows = []
        for x in sweep["rows"].values():
            mp = x["width"] * x["height"] / 1e6
            grid = x.get("grid", "balanced grid")
            mark = x["tile"] == s.tile and x["overlap_px"] == s.overlap_px and grid == "balanced grid"
            rows.append(
                [
                    f"**{x['tile']}**" if mark else str(x["tile"]),
                    f"**{x['overlap_px']}**" if mark else str(x["overlap_px"]),
                    f"**{grid}**" if mark else grid,
                    f"{x['tiles_run']} x {x['tile_size']} px"
                    if x.get("tile_size", -1) > 0
                    else str(x["tiles_run"]),
                    fmt_s(x["median"]),
                    f"{mp / x['median']:.2f}",
                    _ap(x.get("map50")),
                ]
            )
        L += [_table(head, rows), "", "Bold: the setting the rest of this report runs.", ""]
    # ---- (w)
    whole = r.get("w")
    if whole and whole.get("median"):
        L += ["## (w) Whole processes, as a user starts them", ""]
        L += [
            f"The **{whole['scene']}** scene, each command run {_calls(len(whole['walls']['ours']), 'time')} "
            "in alternation, wall time from start to exit (median): imports, loading the model, reading, the "
            "tiles, merging and, for ours, writing the default outputs (GeoJSON and the quicklook). "
            "`ours`: `detector predict SCENE -o DIR`; `INT8`: the same with `-w weights/detector-int8.onnx "
            "--runtime openvino` (OpenVINO's model cache filled by one run before, as any earlier run on the "
            "machine fills it); `SAHI`: a fresh Python process importing SAHI and loading the same weights for one "
            f"`get_sliced_prediction` with its defaults (slices of {s.tile} px, overlap ratio "
            f"{s.overlap_ratio:g}, the whole-image pass; torch threads as Ultralytics sets them), writing nothing; "
            f"`SAHI {s.sahi_threads} threads`: the same after one prediction on a blank 64 px image and "
            f"`torch.set_num_threads({s.sahi_threads})` (Ultralytics' first prediction resets the count).",
            "",
        ]
        med = whole["median"]
        names = {
            "ours": "ours (fp32, onnxruntime)",
            "int8": "ours INT8 (OpenVINO)",
            "sahi": "SAHI default",
            "sahi_threads": f"SAHI {s.sahi_threads} threads",
        }
        rows = [
            [names[k], fmt_s(v), ", ".join(fmt_s(x) for x in whole["walls"][k]), f"{med['sahi'] / v:.2f}x"]
            for k, v in med.items()
        ]
        L += [_table(["process", "median s", "runs s", "SAHI / this"], rows), ""]
    # ---- targets
    L += ["## Targets", ""] + [f"- {t}" for t in targets(s, r)] + [""]
    return "\n".join(L)


def _overlap(s: Any) -> str:
    px = getattr(s, "overlap_px", None)
    if px is None:
        return str(s.overlap)
    return f"{px} px ({s.overlap_ratio:.3g} of the tile)"


def _row_batch(s: Any, x: dict[str, Any]) -> int:
    """The tiles per model call of one result (every job says; results of older runs fall back to
    ``--batch``, else the 8 the pipeline used before it let the backend choose)."""
    return int(x.get("batch") or getattr(s, "batch", None) or 8)


def _batches_used(r: dict[str, Any], *sections: str) -> list[int]:
    """The tiles per model call our jobs of ``sections`` (default: every section) actually used, sorted."""
    found: list[Any] = []
    for sec in sections or ("a", "b", "c", "d", "t"):
        part = r.get(sec) or {}
        if sec == "a":
            found += [
                row[k] for row in part.values() if isinstance(row, dict) for k in ("ours", "int8") if k in row
            ]
        elif sec == "b":
            found += list((part.get("scenes") or {}).values())
        elif sec == "c":
            found += list(part.values())
        elif sec == "d":
            found += list((part.get("runs") or {}).values())
        elif sec == "t":
            found += list((part.get("rows") or {}).values())
    return sorted({int(x["batch"]) for x in found if isinstance(x, dict) and x.get("batch")})


def _batch_text(s: Any, used: list[int]) -> str:
    """``"1 tile per model call, the backend's own choice (...)"`` (or ``"8 tiles per model call, as
    `--batch 8` asks"``) for the report: ``used`` is what the jobs said they ran."""
    forced = getattr(s, "batch", None)
    how = (
        f"as `--batch {forced}` asks"
        if forced is not None
        else "the backend's own choice (`TileConfig(batch=None)`: 1 per stream on the CPU, 8 on CUDA)"
    )
    used = used or ([int(forced)] if forced is not None else [])
    if not used:
        return f"tiles per model call: {how}"
    n = "/".join(map(str, used))
    return f"{n} tile{'' if used == [1] else 's'} per model call, {how}"


def _calls(n: int, what: str = "call") -> str:
    return f"{n} {what}{'s' if n != 1 else ''}"


def _threads_ours(r: dict[str, Any]) -> str:
    """``"onnxruntime: 2 streams (tiles at once) of intra-op 1"`` from the first ``ours`` job that says."""
    for row in (r.get("a") or {}).values():
        if isinstance(row, dict) and "ours" in row and row["ours"].get("intra_op_threads"):
            ours = row["ours"]
            n = int(ours.get("streams") or 1)
            return f"onnxruntime {n} stream{'s' if n != 1 else ''} (tiles at once) of intra-op {ours['intra_op_threads']}"
    return f"onnxruntime intra-op os.cpu_count() = {os.cpu_count()}"


def _threads_sahi(r: dict[str, Any], key: str, detail: bool = False) -> str:
    seen = [
        row[key]["torch_threads"]
        for row in (r.get("a") or {}).values()
        if isinstance(row, dict) and key in row
    ]
    if not seen:
        return "not measured"
    t = seen[0]
    if detail:
        return (
            f"{t['after_import']} after import, {t['after_load']} after loading the model, "
            f"{t['after_first_call']} after the first prediction, {t['timed_calls']} during the timed calls"
        )
    return f"{t['timed_calls']} during the timed calls"


def targets(s: Any, r: dict[str, Any]) -> list[str]:
    """Pass/fail lines for the targets the numbers can answer."""
    out = []
    a, b, c = r.get("a") or {}, r.get("b"), r.get("c")
    head = next((sc for sc in r.get("_scenes", []) if sc.headline), None)

    def mark(ok: bool) -> str:
        return "**met**" if ok else "**NOT met**"

    if head and head.name in a and "sahi" in a[head.name]:
        row = a[head.name]
        d = row["sahi"]["median"] / row["ours"]["median"]
        t = row["sahi_threads"]["median"] / row["ours"]["median"]
        out.append(
            f"At least {SPEEDUP_DEFAULT:g}x faster than SAHI's default on the {head.name} scene: {d:.2f}x, "
            f"{mark(d >= SPEEDUP_DEFAULT)}."
        )
        out.append(
            f"At least {SPEEDUP_THREADS:g}x faster than SAHI with {s.sahi_threads} torch threads on the {head.name} "
            f"scene: {t:.2f}x, {mark(t >= SPEEDUP_THREADS)}."
        )
    acc = a.get("_accuracy") or {}
    for label, res in acc.items():
        ours = (res["ours"].get("ap") or {}).get("map50")
        sahi = (res["sahi"].get("ap") or {}).get("map50")
        if ours is not None and sahi is not None:
            out.append(
                f"mAP50 equal or better than SAHI on {label}: {ours:.3f} vs {sahi:.3f}, {mark(ours >= sahi)}."
            )
        q = ((res.get("int8") or {}).get("ap") or {}).get("map50")
        if ours is not None and q is not None:
            ok = abs(q - ours) <= INT8_AP_TOLERANCE + 1e-9
            out.append(
                f"INT8 (OpenVINO) mAP50 within {INT8_AP_TOLERANCE} of fp32 on {label}: {q:.3f} vs {ours:.3f}, "
                f"{mark(ok)}."
            )
    if b:
        worst = [(n, x["overhead"]) for n, x in b["scenes"].items() if x["overhead"] is not None]
        if head and head.name in b["scenes"] and b["scenes"][head.name]["overhead"] is not None:
            o = b["scenes"][head.name]["overhead"]
            out.append(
                f"Pipeline overhead <= {OVERHEAD_TARGET * 100:.0f}% on the headline scene: {o * 100:+.1f}%, "
                f"{mark(o <= OVERHEAD_TARGET)}."
            )
        if worst:
            n, o = max(worst, key=lambda kv: kv[1])
            out.append(f"Largest overhead of any scene: {o * 100:+.1f}% ({n}).")
    if c:
        peaks = {side: x["peak_rss"] for side, x in c.items()}
        top = max(peaks.values())
        out.append(
            f"Peak RSS <= 1.5 GB on every generated scene: max {top / 2**30:.2f} GB, {mark(top <= MEMORY_TARGET)}."
        )
        full = sorted((side for side, x in c.items() if x["tiles_run"] >= _row_batch(s, x)), key=int)
        if len(full) < len(peaks):
            n = max(_row_batch(s, x) for x in c.values())
            out.append(
                f"Sides with fewer than {n} tiles (one partial batch) are left out of the flatness check: "
                f"{', '.join(str(x) for x in sorted(set(peaks) - set(full), key=int))}."
            )
        if len(full) > 1:
            sides = full
            lo, hi = peaks[sides[0]], peaks[sides[-1]]
            g = hi / lo - 1
            out.append(
                f"Memory flat as the scene grows ({sides[0]} -> {sides[-1]} px, "
                f"{(int(sides[-1]) / int(sides[0])) ** 2:.1f}x the pixels): peak {fmt_mb(lo)} -> {fmt_mb(hi)} MB "
                f"({g * 100:+.1f}%; flat = at most {FLAT_GROWTH * 100:.0f}%), {mark(g <= FLAT_GROWTH)}."
            )
    d = r.get("d")
    if d and d.get("runs"):
        top = max(v for x in d["runs"].values() for v in x["worker_peak_rss"].values())
        out.append(
            f"Peak RSS <= 1.5 GB per Dask worker: max {top / 2**30:.2f} GB, {mark(top <= MEMORY_TARGET)}."
        )
    w = (r.get("w") or {}).get("median") or {}
    if "ours" in w and "sahi" in w:
        d = w["sahi"] / w["ours"]
        out.append(
            f"Whole process at least {SPEEDUP_DEFAULT:g}x faster than SAHI's default: {d:.2f}x, "
            f"{mark(d >= SPEEDUP_DEFAULT)}."
        )
    if "ours" in w and "sahi_threads" in w:
        d = w["sahi_threads"] / w["ours"]
        out.append(
            f"Whole process at least {SPEEDUP_THREADS:g}x faster than SAHI with {s.sahi_threads} threads: "
            f"{d:.2f}x, {mark(d >= SPEEDUP_THREADS)}."
        )
    if "ours" in w and "int8" in w:
        q = w["ours"] / w["int8"]
        out.append(
            f"Whole process INT8 (OpenVINO) at least 1.5x faster than fp32: {q:.2f}x, {mark(q >= 1.5)}."
        )
    if s.quick:
        out.append("Quick run: none of these verdicts counts; run `make bench` on an idle machine.")
    return out
