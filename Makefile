# The README's commands: `make run` serves the API locally, `make test` runs every check.
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run check test test-fast testbin deploy manifests sandbox bump

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

# The engine runs each stage in bubblewrap and gives stages with network a filtered way out
# with nftables (Debian's packages): installed here when missing and we may (root); otherwise
# `make run` starts without its engine, or without filtered egress, and says so.
sandbox:
	@{ command -v bwrap && command -v nft; } >/dev/null || { [ "$$(id -u)" = 0 ] && \
		{ apt-get update -qq && apt-get install -y -qq bubblewrap nftables >/dev/null; } || \
		echo "bubblewrap or nftables is missing: sudo apt-get install bubblewrap nftables"; }

run: $(STAMP) sandbox
	$(PY) -m local.run $(ARGS)

# etcd + kube-apiserver for the cluster tier, built once from the Go module proxy into a cache.
testbin: $(STAMP)
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" tools/k8s-testbin/build.sh

# The generated files of deploy/: the Knative manifests (from the route table), the dashboard.
manifests: $(STAMP)
	$(PY) deploy/knative/generate.py
	$(PY) deploy/grafana/generate.py

# A new version everywhere it shows (tools/bump.py): make bump PART=major|minor|patch
bump: $(STAMP)
	$(PY) tools/bump.py $(PART)

# Apply everything to the current kube context (docs/deploying.md).
deploy:
	kubectl apply -f deploy/knative/crd.yaml -f deploy/knative/rbac.yaml \
		-f deploy/knative/config.yaml -f deploy/knative/services.yaml -f deploy/knative/routing.yaml \
		-f deploy/knative/engine.yaml

# The fast loop: format, lint, types, import layers and the generated files' drift, no tests.
check: $(STAMP)
	$(VENV)/bin/hadolint Containerfile
	$(PY) deploy/knative/generate.py --check
	$(PY) deploy/grafana/generate.py --check
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

ASSETS = KUBEBUILDER_ASSETS="$${KUBEBUILDER_ASSETS:-$$(PATH="$(CURDIR)/$(VENV)/bin:$$PATH" tools/k8s-testbin/build.sh)}"

# Every tier; `make test ARGS="-k images"` passes ARGS to pytest.
test: check sandbox
	$(ASSETS) $(PY) -m pytest $(ARGS)

# The fast loop (docs/testing.md): every tier but the tests marked slow.
test-fast: check sandbox
	$(ASSETS) $(PY) -m pytest -m "not slow" $(ARGS)
