# Everything runs from the project virtualenv .venv/, made from any python3 >= 3.11 on PATH (or $(PYTHON3)).
PYTHON3 ?= python3
VENV ?= .venv
PYTHON := $(CURDIR)/$(VENV)/bin/python
PYTEST_ARGS ?=
# Console scripts (livenexus-worker, ...) and the venv's python come first for tests and tools they start.
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export VIRTUAL_ENV := $(CURDIR)/$(VENV)

.PHONY: test lint typecheck unit bootstrap demo venv images clean-venv

venv:
	PYTHON3=$(PYTHON3) VENV=$(VENV) bash hack/venv.sh

bootstrap: venv
	VENV=$(VENV) bash hack/bootstrap.sh

# The README's first command: livekit-server + worker + speaking bot + listener (+ browser console).
demo: venv
	VENV=$(VENV) bash hack/bootstrap.sh --demo
	$(PYTHON) -m livenexus_dev.demo.run

# Worker and operator images, built daemonless with buildah on a locally made Debian base.
images: bootstrap
	bash hack/build-images.sh

lint:
	$(PYTHON) -m ruff check common worker operator console dev tests benchmarks
	$(CURDIR)/$(VENV)/bin/lint-imports

typecheck:
	$(PYTHON) -m mypy

# The README's test command: lint, types, then every test including the real-server and real-node ones.
test: bootstrap lint typecheck
	$(PYTHON) -m pytest -p no:cacheprovider -ra $(PYTEST_ARGS)

unit: venv
	$(PYTHON) -m pytest -p no:cacheprovider -q -m "not model and not livekit and not kube and not node and not browser" $(PYTEST_ARGS)

clean-venv:
	rm -rf $(VENV) .bootstrap-stamp
