# Two entry points (see README): `make serve` runs spreadguard locally, `make test` runs the tests.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: serve test test-fast lint bench bench-audit clean

# The first run installs everything into .venv (a minute or two): pip shows each package as it goes.
$(STAMP): pyproject.toml
	@echo "==> first run: creating $(VENV) and installing spreadguard with its test tools (pip's progress follows)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e '.[test]'
	touch $(STAMP)
	@echo "==> installed: $(BIN)/spreadguard (or: . $(VENV)/bin/activate, then spreadguard)"

serve: $(STAMP)
	$(BIN)/spreadguard certs generate --out certs/
	$(BIN)/spreadguard serve --policies policies/ --tls-cert certs/tls.crt --tls-key certs/tls.key

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q

# the pure engine tests only: seconds, no servers
test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not server"

bench: $(STAMP)
	$(BIN)/python bench/benchmark.py

bench-audit: $(STAMP)
	$(BIN)/python bench/audit_benchmark.py

clean:
	rm -rf $(VENV) certs/*.crt certs/*.key
