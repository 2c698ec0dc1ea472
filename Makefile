# worldmill developer commands. `make demo` and `make test` are all a newcomer needs: both create
# (or reuse) .venv/ in the repository root and install what they need into it first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.worldmill-installed
# Reinstall when the project definition changes or a package is added.
PACKAGES := $(wildcard contracts/worldmill/*/__init__.py services/worldmill/*/__init__.py gpu-runner/worldmill/*/__init__.py)
SRC_PATH := contracts:services:gpu-runner

.PHONY: setup browser demo test lint schemas clean

$(STAMP): pyproject.toml $(PACKAGES)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	# torch is pinned exactly (models extra): that pin resolves to the local CPU build.
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[stack,video,models,postgres,dev]'
	@touch $(STAMP)

setup: $(STAMP) browser

## The catalog's gallery test drives Debian's chromium (Playwright's own browser download cannot run here).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian chromium for the gallery test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; \
	  else echo "the gallery test needs chromium: run 'sudo apt-get install chromium'" >&2; fi; }

## The main job: the demo on the local stack (started and stopped for you if none is running).
demo: $(STAMP)
	$(BIN)/worldmill demo --json .worldmill/demo-summary.json

## The tests (real nats-server and SeaweedFS on free loopback ports). Exit 5 (no tests) is a failure.
test: $(STAMP) browser
	@$(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: that is a failure" >&2; exit 1; fi; exit $$rc

## Static checks: ruff, mypy (strict), architecture rules, exported schemas in sync.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check contracts services gpu-runner tests bench
	$(BIN)/mypy contracts/worldmill services/worldmill gpu-runner/worldmill
	PYTHONPATH=$(SRC_PATH) $(BIN)/lint-imports
	$(BIN)/worldmill schemas check
	$(BIN)/worldmill docs tables --check

schemas: $(STAMP)
	$(BIN)/worldmill schemas export

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
