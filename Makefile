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
	SFCLUSTER_REQUIRE_HARNESS=1 $(BIN)/pytest tests -v -p no:cacheprovider

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

clean: harness-down
	rm -rf build $(VENV)
