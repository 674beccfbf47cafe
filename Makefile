# cnnscope — the two commands a fresh machine needs: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PY     := $(BIN)/python
DEMO_OUT ?= demo-out

.PHONY: demo test test-fast lint bench venv clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# Re-install whenever pyproject.toml changes (the stamp is older than it).
$(VENV)/.installed: pyproject.toml | $(PY)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(PY) -m pip install -q -e '.[test]'
	touch $@

$(VENV)/.installed-bench: pyproject.toml $(VENV)/.installed-test
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $@

venv: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/cnnscope demo --out $(DEMO_OUT)

test: $(VENV)/.installed-test
	$(BIN)/ruff check src tests $(wildcard benchmarks)
	$(BIN)/pytest -q

test-fast: $(VENV)/.installed-test
	$(BIN)/pytest -q -m "not slow"

lint: $(VENV)/.installed-test
	$(BIN)/ruff check src tests $(wildcard benchmarks)

bench: $(VENV)/.installed-bench
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f --append-results || exit 1; done

clean:
	rm -rf $(VENV) $(DEMO_OUT) .pytest_cache .ruff_cache
