# The README's commands: `make run` serves the API locally, `make test` runs every check.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test testbin

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

run: $(STAMP)
	$(PY) -m local.run

# etcd + kube-apiserver for the cluster tier, built once from the Go module proxy into a cache.
testbin: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" tools/k8s-testbin/build.sh

test: $(STAMP)
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	KUBEBUILDER_ASSETS="$${KUBEBUILDER_ASSETS:-$$(PATH="$(CURDIR)/$(VENV)/bin:$$PATH" tools/k8s-testbin/build.sh)}" \
		$(PY) -m pytest
