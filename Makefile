# Two commands: `make run` and `make test`. Everything else is set up on the way.
# `make run` installs the service's packages only (requirements.txt); `make test` adds the
# development set (requirements-dev.txt: pytest, playwright, ruff, ...). Each set is
# reinstalled when its files change.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
RUN_STAMP := $(VENV)/.installed-run-$(shell cat requirements.txt | sha256sum | cut -c1-12)
DEV_STAMP := $(VENV)/.installed-dev-$(shell cat requirements.txt requirements-dev.txt | sha256sum | cut -c1-12)
PIP := $(PY) -m pip install --disable-pip-version-check --no-input

.PHONY: run test setup setup-dev audio db lint bench tools clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip

$(RUN_STAMP): requirements.txt | $(PY)
	@echo "Installing the service's packages (requirements.txt) into $(VENV); the first time takes about a minute:"
	$(PIP) --progress-bar on -r requirements.txt
	@rm -f $(VENV)/.installed-run-*
	@touch $@

$(DEV_STAMP): requirements.txt requirements-dev.txt | $(PY)
	@echo "Installing the service's and the development packages (requirements-dev.txt) into $(VENV):"
	$(PIP) --progress-bar on -r requirements-dev.txt
	@rm -f $(VENV)/.installed-dev-* $(VENV)/.installed-run-*
	@touch $@ $(RUN_STAMP)

# The service's packages only.
setup: $(RUN_STAMP)

# The service's packages and the development ones.
setup-dev: $(DEV_STAMP)

db: setup
	$(PY) -m ivr db upgrade

# Prompts must play with no internet: gTTS when Google answers, the offline voice otherwise.
audio: setup
	$(PY) -m ivr audio build --engine auto

# The port `make run` serves on: `make run PORT=5050` (or IVR_PORT=5050 in the environment).
# The server then checks Twilio's signatures against http://127.0.0.1:PORT unless
# IVR_PUBLIC_URL says otherwise.
IVR_PORT ?= 5000
PORT ?= $(IVR_PORT)
# With no Twilio account configured (neither TWILIO_ACCOUNT_SID nor IVR_TWILIO_API_URL set),
# the server answers as Twilio itself on this port (ivr/adapters/twilio_standin.py): agent
# transfers and the call page's recordings then work with no account.
TWILIO_STANDIN_PORT ?= 5099

run: db audio
	@if [ -z "$$IVR_TWILIO_API_URL" ] && [ -z "$$TWILIO_ACCOUNT_SID" ]; then \
	  export IVR_TWILIO_API_URL=http://127.0.0.1:$(TWILIO_STANDIN_PORT); fi; \
	IVR_PUBLIC_URL="$${IVR_PUBLIC_URL:-http://127.0.0.1:$(PORT)}" \
	  $(PY) -m ivr serve --host 127.0.0.1 --port $(PORT)

# Programs from Debian that some tests use: chromium (headless browser tests), ffmpeg (its
# ffprobe reads the codec of rendered prompts), openssl, jq and xxd (an auditor checks an
# evidence package with standard tools), graphviz's dot (the flow diagrams of the registry).
# Installed when we may (root with apt-get); otherwise those tests are skipped with a loud
# message, except in CI, where they fail.
TOOLS := chromium:chromium ffprobe:ffmpeg openssl:openssl jq:jq xxd:xxd dot:graphviz

tools:
	@missing=""; for t in $(TOOLS); do \
	  command -v $${t%%:*} >/dev/null 2>&1 || missing="$$missing $${t#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing Debian packages:$$missing"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null) \
	      || echo "!!! could not install$$missing: the tests that need them will be skipped"; \
	  else echo "!!! missing$$missing and not root: the tests that need them will be skipped"; fi; \
	fi

# The suite on TEST_WORKERS pytest-xdist workers (default: one per core), then, alone, the
# modules that time how soon something answers (the `serial` marker, tests/conftest.py).
TEST_WORKERS ?= $(shell nproc 2>/dev/null || echo 2)

test: setup-dev tools audio lint
	$(PY) -m pytest -n $(TEST_WORKERS) -m "not serial" --durations=15
	$(PY) -m pytest -m serial --durations=15

# ruff, the layer rules of pyproject.toml's [tool.importlinter] (imports point down only) and
# mypy ([tool.mypy]: strict for ivr/domain and ivr/audit, checked elsewhere).
lint: setup-dev
	$(VENV)/bin/ruff check ivr tests benchmarks wsgi.py gunicorn.conf.py
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy

bench: setup-dev
	$(PY) benchmarks/consent_calls.py

clean:
	rm -rf $(VENV) .pytest_cache
