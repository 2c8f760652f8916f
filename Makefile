# The README's two commands: `make demo` and `make test`. Each does all the set-up it needs on a
# fresh Debian machine (venv, Docker engine + docker-compose, the harness image).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: venv test unit integration demo harness harness-down bench clean

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

test: venv
	bash scripts/ensure-docker.sh
	SFCLUSTER_REQUIRE_HARNESS=1 $(BIN)/pytest tests -v -p no:cacheprovider --durations=25

unit: venv
	$(BIN)/pytest tests/unit -q

integration: venv
	bash scripts/ensure-docker.sh
	SFCLUSTER_REQUIRE_HARNESS=1 $(BIN)/pytest tests/integration -v

demo: venv
	bash scripts/ensure-docker.sh
	PATH="$(CURDIR)/$(BIN):$$PATH" bash scripts/demo.sh

harness: venv
	bash scripts/ensure-docker.sh
	$(BIN)/python -m tests.harness.harness up

harness-down: venv
	$(BIN)/python -m tests.harness.harness down

# The benchmarks of issue #6 (bench/README.md): sfcluster vs `ray up` vs the bare lower bound on
# N = 2, 4, 8 bench nodes; writes docs/BENCHMARKS.md and docs/bench-time-to-ready.png. Takes
# 30-60 minutes on 2 cores: run nothing else meanwhile. Smaller: make bench BENCH_ARGS="--sizes 2 --reps-sfcluster 1 --reps-bare 1 --reps-rayup 1 --cycles 2"
BENCH_ARGS ?=
bench: venv
	bash scripts/ensure-docker.sh
	bash tests/harness/build-image.sh
	bash bench/setup.sh
	$(BIN)/python -m bench.run $(BENCH_ARGS)

clean: harness-down
	rm -rf build $(VENV)
