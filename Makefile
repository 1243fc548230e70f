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

.PHONY: book lint test test-package test-execute test-notebooks test-book test-site test-lab venv lab serve clean strip bench chapter-times help student student-site macros

help:
	@echo "make book   build the website into _build/html (executes every chapter)"
	@echo "make test   package tests, every notebook under nbval, warnings-as-errors book build"
	@echo "make lint   ruff check and ruff format --check (package, tests, tools, benchmarks, chapters)"
	@echo "make lab    JupyterLab on the book;  make serve  serve _build/html on localhost:8000"
	@echo "make student       student notebooks (no solutions, self-checks kept) in _build/student"
	@echo "make student-site  the website without solutions, in _build/student-site/_build/html"
	@echo "make bench  run the benchmarks in benchmarks/ (prints tables, writes benchmarks/results)"

venv: $(STAMP)

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -r requirements.txt
	$(BIN)/python -m pip install --disable-pip-version-check -q --no-deps -r requirements-nodeps.txt
	@touch $(STAMP)

book: $(STAMP)
	$(JB) build . --keep-going
	@echo "The site is in $(CURDIR)/_build/html/index.html"

test: lint test-package test-execute test-site test-lab

# nbval and the warnings-as-errors build both execute every chapter. The build runs one kernel
# at a time and each chapter runs on one thread, so on a 2-core machine nbval (one worker) runs
# beside the build instead of after it: one core each.
NBVAL_WORKERS ?= $(NPROC)
test-execute: $(STAMP)
	$(MAKE) --no-print-directory -j2 test-notebooks test-book NBVAL_WORKERS=$(shell [ $(NPROC) -gt 2 ] && echo $$(($(NPROC) - 1)) || echo 1)

# Lint and format check over the package, tests, tools, benchmarks and the chapters' code cells
# (configuration in pyproject.toml, [tool.ruff]). Fix with: ruff check --fix . && ruff format .
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-package: $(STAMP)
	MPLBACKEND=Agg $(BIN)/python -m pytest -q -n $(NPROC) --dist loadfile -m "not browser and not lab" tests

test-notebooks: $(STAMP)
	$(BIN)/python -m pytest -q -p no:randomly -n $(NBVAL_WORKERS) --dist loadfile --nbval-lax --nbval-current-env --nbval-cell-timeout=600 book

test-book: $(STAMP)
	rm -rf _build/html _build/.doctrees
	$(JB) build . -W -n --keep-going

# The built site in headless Chromium (every page: JS errors, MathJax, images, widgets, links,
# download and launch buttons, light/dark screenshots in _build/screenshots). Needs test-book first.
test-site: $(STAMP)
	$(BIN)/python -m pytest -q -p no:randomly -p no:xdist -m browser tests/test_site.py tests/test_site_live.py tests/test_site_layout.py

# Every chapter in JupyterLab (headless Chromium; jupyterlab-myst rendering, Run All without
# errors, solutions folded, no output wider than its cell; screenshots in _build/screenshots/lab).
test-lab: $(STAMP)
	$(BIN)/python -m pytest -q -p no:randomly -p no:xdist -m lab tests/test_lab.py

strip: $(STAMP)
	$(BIN)/nbstripout --drop-empty-cells --extra-keys "metadata.kernelspec.display_name metadata.language_info.version metadata.widgets" book/*.ipynb

bench: $(STAMP)
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

chapter-times: $(STAMP)
	$(BIN)/python tools/time_chapters.py

# JupyterLab from this environment: jupyterlab-myst renders the Markdown as the book (macros from
# each notebook's frontmatter, written from _config.yml by tools/book_macros.py); .md pages open
# rendered (as on Binder, binder/postBuild).
LAB_OVERRIDES := $(VENV)/share/jupyter/lab/settings/overrides.json
lab: $(STAMP)
	@$(BIN)/python tools/book_macros.py --check || echo "run: $(BIN)/python tools/book_macros.py"
	@test -f $(LAB_OVERRIDES) || { mkdir -p $(dir $(LAB_OVERRIDES)) && echo '{"@jupyterlab/docmanager-extension:plugin": {"defaultViewers": {"markdown": "Markdown Preview"}}}' > $(LAB_OVERRIDES); }
	$(BIN)/jupyter lab book

macros: $(STAMP)
	$(BIN)/python tools/book_macros.py

# The student edition, from the same sources: solutions removed, self-checks kept for students to
# fill in (tools/student_edition.py); book/instructors.md explains how to hand it out.
student: $(STAMP)
	$(BIN)/python tools/student_edition.py --out _build/student

student-site: student
	$(JB) build _build/student --path-output _build/student-site --keep-going
	@echo "The student site is in $(CURDIR)/_build/student-site/_build/html/index.html"

serve:
	$(PYTHON) -m http.server --directory _build/html 8000

clean:
	rm -rf _build .pytest_cache .hypothesis
