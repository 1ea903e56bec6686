# Two commands: `make run` and `make test`. Everything else is set up on the way.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell sha256sum requirements.txt | cut -c1-12)

.PHONY: run test setup audio db lint bench tools clean

$(STAMP): requirements.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	@rm -f $(VENV)/.installed-*
	@touch $(STAMP)

setup: $(STAMP)

db: setup
	$(PY) -m ivr db upgrade

# Prompts must play with no internet: gTTS when Google answers, the offline voice otherwise.
audio: setup
	$(PY) -m ivr audio build --engine auto

run: db audio
	$(PY) -m ivr serve --host 127.0.0.1 --port 5000

# Programs from Debian that some tests use: chromium (headless browser tests), ffmpeg (its
# ffprobe reads the codec of rendered prompts), openssl, jq and xxd (an auditor checks an
# evidence package with standard tools). Installed when we may (root with apt-get);
# otherwise those tests are skipped with a loud message, except in CI, where they fail.
TOOLS := chromium:chromium ffprobe:ffmpeg openssl:openssl jq:jq xxd:xxd

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

test: setup tools audio lint
	$(PY) -m pytest

lint: setup
	$(VENV)/bin/ruff check ivr tests benchmarks wsgi.py gunicorn.conf.py

bench: setup
	$(PY) benchmarks/consent_calls.py

clean:
	rm -rf $(VENV) .pytest_cache
