# The two commands of the README: `make run` and `make test`. Both install what
# they need into .venv first, from pyproject.toml.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: install run test

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Web on http://127.0.0.1:$(PORT) (`make run PORT=8010` for another port) and a
# django-q2 worker, on the embedded defaults (SQLite under var/, local sandbox
# backend and git host). The port is checked and the migrations finish first:
# if either fails, nothing starts. Ctrl-C stops both.
PORT ?= 8000
run: install
	@export DEBUG=$${DEBUG:-1}; \
	$(PY) -m config.port_check 127.0.0.1 '$(PORT)' || exit 1; \
	$(PY) manage.py migrate --noinput || { echo 'make run: the migrations failed (see above); neither the web server nor the worker was started' >&2; exit 1; }; \
	$(PY) manage.py qcluster & worker=$$!; \
	trap 'kill $$worker 2>/dev/null; wait $$worker' INT TERM EXIT; \
	$(PY) manage.py runserver '127.0.0.1:$(PORT)'

# The whole suite on the database DATABASE_URL names (SQLite when unset).
test: install
	$(PY) -m pytest
