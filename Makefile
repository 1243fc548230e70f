# igbook: two commands matter. `make book` builds the site, `make test` runs every check.
# Both create .venv from requirements.txt on first use (and again when it changes).

PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
JB     := $(BIN)/jupyter-book
NPROC  := $(shell nproc 2>/dev/null || echo 2)

# Kernels must choose their own matplotlib backend (ipykernel picks the inline one only when
# MPLBACKEND is unset): with MPLBACKEND=Agg every plt.show() in a chapter draws nothing.
unexport MPLBACKEND
export PYDEVD_DISABLE_FILE_VALIDATION := 1
export OMP_NUM_THREADS ?= 2

.PHONY: book test test-package test-notebooks test-book test-site venv lab serve clean strip bench chapter-times help

help:
	@echo "make book   build the website into _build/html (executes every chapter)"
	@echo "make test   package tests, every notebook under nbval, warnings-as-errors book build"
	@echo "make lab    JupyterLab on the book;  make serve  serve _build/html on localhost:8000"
	@echo "make bench  run the benchmarks in benchmarks/ (prints tables, writes benchmarks/results)"

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	@touch $(STAMP)

book: $(STAMP)
	$(JB) build . --keep-going
	@echo "The site is in $(CURDIR)/_build/html/index.html"

test: test-package test-notebooks test-book test-site

test-package: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python -m pytest -q -n $(NPROC) --dist loadfile -m "not browser" tests

test-notebooks: $(STAMP)
	$(BIN)/python -m pytest -q -p no:randomly -n $(NPROC) --dist loadfile --nbval-lax --nbval-current-env --nbval-cell-timeout=600 book

test-book: $(STAMP)
	rm -rf _build/html _build/.doctrees
	$(JB) build . -W -n --keep-going

# The built site in headless Chromium (every page: JS errors, MathJax, images, widgets, links,
# download and launch buttons, light/dark screenshots in _build/screenshots). Needs test-book first.
test-site: $(STAMP)
	$(BIN)/python -m pytest -q -p no:randomly -p no:xdist -m browser tests/test_site.py tests/test_site_live.py tests/test_site_layout.py

strip: $(STAMP)
	$(BIN)/nbstripout --drop-empty-cells --extra-keys "metadata.kernelspec.display_name metadata.language_info.version metadata.widgets" book/*.ipynb

bench: $(STAMP)
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

chapter-times: $(STAMP)
	$(BIN)/python tools/time_chapters.py

lab: $(STAMP)
	$(BIN)/jupyter lab book

serve:
	$(PYTHON) -m http.server --directory _build/html 8000

clean:
	rm -rf _build .pytest_cache .hypothesis
