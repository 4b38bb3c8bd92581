PYTHON ?= python3
PYTEST_ARGS ?=

.PHONY: test lint typecheck unit bootstrap demo

bootstrap:
	bash hack/bootstrap.sh

# The README's first command: livekit-server + worker + speaking bot + listener (+ browser console).
demo:
	bash hack/bootstrap.sh --demo
	$(PYTHON) -m livenexus_worker.demo.run

lint:
	$(PYTHON) -m ruff check worker operator tests benchmarks

typecheck:
	$(PYTHON) -m mypy

# The README's test command: lint, types, then every test including the real-server ones.
test: bootstrap lint typecheck
	$(PYTHON) -m pytest -p no:cacheprovider -ra $(PYTEST_ARGS)

unit:
	$(PYTHON) -m pytest -p no:cacheprovider -q -m "not model and not livekit and not kube and not browser" $(PYTEST_ARGS)
