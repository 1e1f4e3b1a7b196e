# rover-safety: `make run` (simulated pins) and `make test` set up everything they need first.
# The system's Python (Debian / Raspberry Pi OS): the service user can run a venv made from it, unlike one made
# from a Python under a user's home.
PYTHON   ?= $(shell [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo python3)
VENV     ?= .venv
VIAM_VENV ?= .venv-viam
CONFIG   ?= config/example.yaml
BIN      := $(VENV)/bin
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_PACKAGES := python3-venv python3-dev gcc pkg-config libsystemd-dev systemd iproute2 util-linux shellcheck \
                chromium chromium-driver prometheus
VIAM_SDK := viam-sdk==0.85.1

.PHONY: run test lint typecheck bench protos deps install uninstall clean

run: $(BIN)/.installed
	$(BIN)/rover-safety serve --config $(CONFIG) --simulate

test: $(BIN)/.installed $(VIAM_VENV)/.installed lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	shellcheck systemd/install.sh .ci/run

typecheck: $(BIN)/.installed
	@mkdir -p build/typecheck/rover_safety
	@for d in sessions daemon drivers config api; do ln -sfn ../../../$$d build/typecheck/rover_safety/$$d; done
	$(BIN)/mypy -p rover_safety.config -p rover_safety.drivers -p rover_safety.sessions -p rover_safety.daemon
	$(BIN)/mypy scripts benchmarks

bench: $(BIN)/.installed
	$(BIN)/python -m benchmarks.bench_stop
	$(BIN)/python -m benchmarks.bench_stop_path

protos: $(BIN)/.installed
	$(BIN)/python scripts/gen_protos.py

# Debian / Raspberry Pi OS packages: only those missing are installed (systemd-python builds against libsystemd).
deps:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "installing: $$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; fi

$(BIN)/.installed: setup.cfg pyproject.toml | deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,systemd]'
	touch $@

# The official Viam SDK pins its own protobuf, so it lives in a venv of its own (used by the SDK tests).
$(VIAM_VENV)/.installed: | deps
	$(PYTHON) -m venv $(VIAM_VENV)
	$(VIAM_VENV)/bin/pip install -q '$(VIAM_SDK)'
	touch $@

# On a rover: install the package in /opt/rover-safety, the unit, a default /etc/rover-safety/config.yaml (never
# overwritten), the rover-safety user, and enable --now. `make uninstall` keeps the config.
install: deps
	$(SUDO) systemd/install.sh

uninstall:
	$(SUDO) systemd/install.sh --uninstall

clean:
	rm -rf $(VENV) $(VIAM_VENV) build *.egg-info .mypy_cache .ruff_cache .pytest_cache
