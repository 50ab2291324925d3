# The README's two commands, `make demo` and `make test`, each set everything up on a fresh machine.
# TORCH is installed before the package so that pip never swaps in a multi-GB CUDA build on a CPU machine:
# on a GPU machine use e.g. `make test TORCH=torch` (or `pip install -e .` against your own torch).
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
PY := $(VENV)/bin/python
STAMP := $(VENV)/.llave-installed
export HF_HUB_DISABLE_TELEMETRY := 1

.PHONY: install demo demo-full test bench clean

$(STAMP): setup.cfg pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	DS_BUILD_OPS=0 $(PY) -m pip install --quiet -c constraints.txt -e ".[deepspeed,eval,demo,video,test]"
	touch $@

install: $(STAMP)

# the quick grid (7.5 min on 2 cores); demo-full trains the whole grid with 3 seeds (31 min)
demo: $(STAMP)
	$(PY) examples/emoji_demo/run_demo.py

demo-full: $(STAMP)
	$(PY) examples/emoji_demo/run_demo.py --full

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/bench_loss.py
	$(PY) benchmarks/bench_grad_cache.py
	$(PY) benchmarks/bench_encode.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache demo_output bench_output
