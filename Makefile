# Both entry points build the environment in .venv/ from pyproject.toml on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dimefm-installed

.PHONY: demo test bench clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# Pinned pair: open_clip needs torchvision, and these two builds import together.
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[cpu,test]'
	# CLIP_benchmark for the agreement test; its zero-shot dependencies are in the test extra.
	$(PY) -m pip install -q --no-deps clip-benchmark==1.6.2
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dimefm demo --out runs/demo

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) benchmarks/bench_encode.py

clean-venv:
	rm -rf $(VENV)
