# Two commands on a fresh machine:  make demo  |  make test
# Each creates its own virtual environment (.venv) and installs what it needs. torch is installed
# first from TORCH_SPEC (default: plain `torch`, so a GPU machine gets its CUDA build; CI sets
# TORCH_SPEC=torch==2.13.0 for the CPU wheel).

PYTHON     ?= python3
VENV       ?= .venv
TORCH_SPEC ?= torch
BIN        := $(VENV)/bin
SAMPLE     := mmv_zoo/sample_data/bbbc007
HOLDOUT    := 20P1_POS0007_D_1UL
DEMO       := demo_out
STAMP      := $(VENV)/.installed
DEMO_MIN_F1 ?= 0
# the napari tests need a display: Xvfb when it is installed (CI installs it), else they are skipped
XVFB       := $(shell command -v xvfb-run >/dev/null 2>&1 && echo "xvfb-run -a -s \"-screen 0 1600x1000x24\"")

.PHONY: demo test lint install clean check-zoo zoo-readme screenshots

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[test,onnx,napari]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mmv-zoo validate --all
	$(BIN)/lint-imports --no-cache
	$(XVFB) $(BIN)/python -m pytest -q

# the napari widgets' screenshots in docs/napari/, taken by their tests from the real viewer, and the
# gallery's in docs/gallery/, from headless Chromium
screenshots: $(STAMP)
	MMV_ZOO_SCREENSHOTS=docs/napari $(XVFB) $(BIN)/python -m pytest -q tests/test_napari.py
	MMV_ZOO_SCREENSHOTS=docs/gallery $(BIN)/python -m pytest -q tests/test_gallery.py

# every bundled entry, trained a few steps, exported with all weight formats and run through the
# independent BioImage.IO checker (../shared/tools/check_bioimageio_package.sh, its own environment)
check-zoo: $(STAMP)
	$(BIN)/python scripts/check_zoo_exports.py

# zoo/README.md, the table of every entry, generated from the entries (a test fails when it is stale)
zoo-readme: $(STAMP)
	$(BIN)/python scripts/zoo_readme.py

lint: $(STAMP)
	$(BIN)/ruff check .

demo: $(STAMP)
	rm -rf $(DEMO)
	$(BIN)/mmv-zoo list
	$(BIN)/mmv-zoo train nuclei_semseg_2d --data $(SAMPLE)/train --out $(DEMO)/runs
	$(BIN)/mmv-zoo export $(DEMO)/runs/nuclei_semseg_2d/* --out $(DEMO)/nuclei_semseg_2d.zip \
		--sample $(SAMPLE)/holdout/images/$(HOLDOUT).tif
	$(BIN)/mmv-zoo predict $(DEMO)/runs/nuclei_semseg_2d/* $(SAMPLE)/holdout/images --out $(DEMO)/predictions
	$(BIN)/mmv-zoo predict nuclei_semseg_2d $(SAMPLE)/holdout/images --out $(DEMO)/shipped_model_predictions
	$(BIN)/python scripts/demo_report.py --image $(SAMPLE)/holdout/images/$(HOLDOUT).tif \
		--truth $(SAMPLE)/holdout/labels/$(HOLDOUT).tif \
		--prediction $(DEMO)/predictions/$(HOLDOUT).ome.tiff --figure $(DEMO)/demo_figure.png \
		--bundled $(DEMO)/shipped_model_predictions/$(HOLDOUT).ome.tiff \
		--min-f1 $(DEMO_MIN_F1)
	@echo "package: $(DEMO)/nuclei_semseg_2d.zip (BioImage.IO 0.5, tested by bioimageio.core)"

clean:
	rm -rf $(DEMO) runs build *.egg-info
