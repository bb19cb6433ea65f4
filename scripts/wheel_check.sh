#!/usr/bin/env bash
# The documented CPU deployment, checked end to end: build the wheel, install it into a fresh venv WITHOUT
# extras (no torch, no repository on the path), and run `detector predict` with the default model on a real
# image from ../shared/data. Fails unless the run writes at least one detection. Used by `make wheel-test`
# (and so by .ci/run).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
DATA="$(cd "${SHARED_DATA:-$ROOT/../shared/data}" && pwd)"
IMAGE="$DATA/gdit-airport/test/images/airport_100_jpg.rf.f764c95324c38a84bc2af17b1243f913.jpg"
WORK="$ROOT/build/wheel-test"
rm -rf "$WORK" && mkdir -p "$WORK/dist"
"$ROOT/.venv/bin/pip" wheel --quiet --no-deps "$ROOT" -w "$WORK/dist"
"$PYTHON" -m venv "$WORK/venv"
"$WORK/venv/bin/pip" install --quiet "$WORK"/dist/*.whl
cd "$WORK"  # not the repository: the installed package must find its model and configs by itself
"$WORK/venv/bin/python" -c "import importlib.util as u, sys; sys.exit('torch is installed' if u.find_spec('torch') else 0)"
"$WORK/venv/bin/detector" predict "$IMAGE" -o "$WORK/out" --format geojson
"$WORK/venv/bin/python" - "$WORK/out" <<'PY'
import json, pathlib, sys
files = sorted(pathlib.Path(sys.argv[1]).glob("*.geojson"))
if not files:
    sys.exit(f"wheel check: no GeoJSON written in {sys.argv[1]}")
n = sum(len(json.loads(f.read_text())["features"]) for f in files)
if n == 0:
    sys.exit("wheel check: the installed wheel found no aircraft on a real airport image")
print(f"wheel check: installed wheel (no extras) wrote {n} detections to {files[0].name}")
PY
