VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test sweep fuzz demo lint format bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,dev]'
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q

sweep: $(STAMP)
	DEPNET_SWEEP_RUNS=5000 $(PY) -m pytest -q -s -o timeout=3600 tests/test_sim_sweep.py

fuzz: $(STAMP)  # the peer-input fuzzer's long run (tests/test_peer_fuzz.py); CI runs a short one
	DEPNET_FUZZ=long $(PY) -m pytest -q -s --timeout=0 tests/test_peer_fuzz.py

demo: $(STAMP)
	$(VENV)/bin/depnet demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

bench: $(STAMP)
	$(VENV)/bin/depnet bench ledger --txs 50000 --json

clean:
	rm -rf $(VENV) build *.egg-info
