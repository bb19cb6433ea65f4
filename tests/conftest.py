"""Shared test set-up: offline Ultralytics, a temporary config dir, and the path to the real data."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DETECTOR_SHARED_DATA", ROOT.parent / "shared" / "data"))
PRETRAINED = ROOT / "weights" / "pretrained"

# Ultralytics reads these at import; set them before any test imports it (tests only, never the package).
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="yolo-cfg-"))
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("DETECTOR_OPENVINO_CACHE", tempfile.mkdtemp(prefix="openvino-cache-"))  # not ~/.cache


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real labelled imagery); tests that need it are skipped where it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (set DETECTOR_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def pretrained_pt() -> Path:
    """The DOTA-trained ``yolov8n-obb.pt`` fetched by ``make setup``."""
    p = PRETRAINED / "yolov8n-obb.pt"
    if not p.is_file():
        pytest.skip(f"{p} missing: run `make setup` (fetches the pinned pretrained weights)")
    return p
