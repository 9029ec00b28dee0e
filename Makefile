# The two commands a new user needs:
#   make demo   create .venv, install, reconstruct the bundled CT slice with the shipped AE-LPN
#   make test   create .venv, install with test extras, lint, run the whole suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint venv clean bench

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch first, pinned: the CPU build on this kind of machine (a looser pin pulls a CUDA build)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[test,mri,ctdata,jpeg12]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(BIN)/recon ct --input bundled:ct-small --views 60 --noise 0.01 \
	    --solver pnp-admm --prior aelpn-ct --out out/demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# the suite runs on every core (pytest-xdist); `make test TEST_WORKERS=0` runs it in one process
TEST_WORKERS ?= auto

test: $(STAMP) lint
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS)

bench: $(STAMP)
	$(BIN)/python scripts/bench_ct_operator.py

clean:
	rm -rf $(VENV) out .pytest_cache
