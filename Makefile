VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv test sweep fuzz scenarios-long demo lint format bench bench-network bench-sweep bench-idle clean

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

# The long scenario variants (`slow = true` in configs/scenarios/*.toml): 7 validators,
# 10 power cycles of every node. Each prints its run time, blocks and recovery time.
scenarios-long: $(STAMP)
	DEPNET_SLOW=1 $(PY) -m pytest -q -s -m slow tests/test_scenarios.py

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

# Saturation: a closed loop of 1,000 txs in flight per node, 4 validators, 30 s.
bench-network: $(STAMP)
	$(VENV)/bin/depnet bench network --rate 0 --duration 30 --json

# Offered vs committed tx/s and latency, one fresh network per rate; draws the curve.
bench-sweep: $(STAMP)
	$(VENV)/bin/depnet bench network --sweep 500,1000,2000,3000,4000,6000,0 --duration 25 \
		--plot docs/perf/curve.png --out docs/perf/sweep.json --json

# An idle network for 60 s: blocks/s and CPU per node.
bench-idle: $(STAMP)
	$(VENV)/bin/depnet bench network --idle --duration 60 --warmup 0 --json

clean:
	rm -rf $(VENV) build *.egg-info
