# certlab: `make run` opens the workbench, `make test` runs every test.
# Both install what is missing (Debian packages, .venv with torch from PyPI) and skip what is there.
SHELL := /bin/bash
.DEFAULT_GOAL := run

VENV          := .venv
TORCH_VERSION := 2.13.0
TORCH_STAMP   := $(VENV)/.torch-$(TORCH_VERSION)
APT_STAMP     := target/.apt-ok
# dataset-fashion-mnist: the real data set; xvfb + mesa: the GUI without a display or GPU
# (screenshots, UI tests); xdotool/x11-apps/imagemagick: driving and capturing the window.
APT_PACKAGES  := python3-venv dataset-fashion-mnist xvfb xauth libgl1-mesa-dri libegl1 libxkbcommon-x11-0 \
                 slurmctld slurmd slurm-client munge \
                 mesa-vulkan-drivers libvulkan1 xdotool x11-apps imagemagick binutils libopenblas-dev

export LIBTORCH_USE_PYTORCH := 1
export PYTHON_SYS_EXECUTABLE := $(CURDIR)/$(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

CARGO ?= cargo
BIN   := target/release/certlab

.PHONY: run test build setup apt torch screenshots bench clean

setup: apt torch

apt: $(APT_STAMP)
$(APT_STAMP):
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian packages:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "certlab needs these Debian packages:$$missing"; \
	    echo "install them with: sudo apt-get install -y$$missing   (then run make again)"; \
	    exit 1; \
	  fi; \
	fi
	@mkdir -p $(dir $@) && touch $@

torch: $(TORCH_STAMP)
$(TORCH_STAMP):
	@echo "setting up $(VENV) with torch==$(TORCH_VERSION) from PyPI (once; a few GB)"
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check torch==$(TORCH_VERSION)
	@touch $@

build: setup
	$(CARGO) build --release

run: build
	$(BIN) gui

# Tests build in release so they share the compile of tch and eframe with `make build`.
test: setup
	$(CARGO) build --release --bins
	$(CARGO) test --release -- --test-threads=2

screenshots: build
	bash scripts/screenshots.sh

bench: build
	$(BIN) bench --device cpu

clean:
	$(CARGO) clean
