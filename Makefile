# Satchel: `make run` starts the whole stack on this machine; `make test` runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PACKAGES := shared auth-service file-service devstack
STAMP := $(VENV)/.installed

.DEFAULT_GOAL := help

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(STAMP): constraints.txt requirements-dev.txt $(foreach p,$(PACKAGES),$(p)/pyproject.toml)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip==24.3.1
	$(BIN)/pip install -q -c constraints.txt -r requirements-dev.txt $(foreach p,$(PACKAGES),-e ./$(p))
	touch $@

install: $(STAMP) ## Create .venv with both services, shared, devstack and test tools
	@scripts/system-deps.sh run

run: install ## Run the whole stack at http://127.0.0.1:8080 (Ctrl-C stops it)
	$(BIN)/satchel-stack run

test: test-unit test-infra test-e2e ## Every test: unit, deployment checks, end-to-end

test-unit: $(STAMP) ## Unit tests of shared, auth-service, file-service and the devstack
	$(BIN)/python -m pytest -q shared/tests auth-service/tests file-service/tests devstack/tests

test-infra: $(STAMP) ## Validate docker-compose.yml, the k8s overlays and the nginx config
	@scripts/system-deps.sh test
	$(BIN)/python -m pytest -q tests-infra

test-e2e: install ## Start the real stack on free ports and test it through the gateway
	$(BIN)/python -m pytest -q tests-e2e

fsck: install ## Check ref counts and blobs of the make-run stack (ARGS=--repair to fix)
	$(BIN)/satchel-stack admin fsck $(ARGS)

gc: install ## Remove unreferenced bytes of the make-run stack (ARGS="--dry-run")
	$(BIN)/satchel-stack admin gc $(ARGS)

.PHONY: backup restore
backup: install ## Back up the make-run stack (running or not) into DIR=new-dir (docs/operations.md)
	$(BIN)/satchel-stack admin backup "$(DIR)"

restore: install ## Restore DIR=backup into an empty SATCHEL_VAR (stack stopped), then fsck --repair
	$(BIN)/satchel-stack admin restore "$(DIR)"

bench: install ## Benchmarks vs this machine's limits (raw nginx, hashlib); BENCH_ARGS=--size-mib 256
	$(BIN)/python -m bench $(BENCH_ARGS)

lock: ## Re-pin every dependency into constraints.txt (after changing a pyproject)
	$(PYTHON) -m venv /tmp/satchel-lock && /tmp/satchel-lock/bin/pip install -q -r requirements-dev.txt $(foreach p,$(PACKAGES),./$(p))
	/tmp/satchel-lock/bin/pip freeze --exclude-editable | grep -v '^satchel-' > constraints.txt
	rm -rf /tmp/satchel-lock

clean: ## Remove the virtualenv and caches (keeps var/, your data)
	rm -rf $(VENV) .pytest_cache */.pytest_cache

.PHONY: help install run test test-unit test-infra test-e2e fsck gc bench lock clean
