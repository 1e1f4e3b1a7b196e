# rover-safety: `make run` (simulated pins) and `make test` set up everything they need first.
# The system's Python (Debian / Raspberry Pi OS): the service user can run a venv made from it, unlike one made
# from a Python under a user's home.
PYTHON   ?= $(shell [ -x /usr/bin/python3 ] && echo /usr/bin/python3 || echo python3)
VENV     ?= .venv
VIAM_VENV ?= .venv-viam
CONFIG   ?= config/example.yaml
BIN      := $(VENV)/bin
SUDO     := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# What the daemon needs on a rover (systemd-python builds against libsystemd; gen-cert asks `ip` for the addresses),
# and what only the tests need on top (a browser for the web page, a Prometheus to scrape, a clock to fake).
APT_PACKAGES := python3-venv python3-dev gcc pkg-config libsystemd-dev systemd iproute2
TEST_APT_PACKAGES := $(APT_PACKAGES) util-linux shellcheck chromium chromium-driver prometheus faketime
VIAM_SDK := viam-sdk==0.85.1
# A new pin of the SDK makes a new venv.
VIAM_STAMP := $(VIAM_VENV)/.installed-$(subst ==,-,$(VIAM_SDK))

.PHONY: run test lint typecheck bench bench-budget protos deps test-deps install uninstall clean

run: $(BIN)/.installed
	$(BIN)/rover-safety serve --config $(CONFIG) --simulate

test: $(BIN)/.installed $(VIAM_STAMP) lint typecheck | test-deps
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/.installed | test-deps
	$(BIN)/ruff check .
	$(BIN)/lint-imports --no-cache
	shellcheck systemd/install.sh .ci/run

# build/typecheck/rover_safety/NAME links each folder setup.cfg's package_dir maps to rover_safety.NAME (mypy_path).
# The tests are checked like the product; tests/support/viam_client.py runs in the Viam SDK's venv, so it is checked
# against that venv's packages (viam-sdk and grpclib ship their types).
typecheck: $(BIN)/.installed $(VIAM_STAMP)
	@mkdir -p build/typecheck/rover_safety
	@sed -n 's/^ *rover_safety\.\([a-z_]*\) *= *\([a-z_]*\) *$$/\1 \2/p' setup.cfg | \
	  while read -r name dir; do ln -sfn ../../../$$dir build/typecheck/rover_safety/$$name; done
	$(BIN)/mypy -p rover_safety.config -p rover_safety.drivers -p rover_safety.sessions -p rover_safety.daemon \
	  -p rover_safety.client -p rover_safety.parts -p rover_safety.web
	$(BIN)/mypy scripts benchmarks tests --exclude '^tests/support/viam_client\.py$$'
	$(BIN)/mypy --python-executable $(VIAM_VENV)/bin/python tests/support/viam_client.py

bench: $(BIN)/.installed
	$(BIN)/python -m benchmarks.bench_stop
	$(BIN)/python -m benchmarks.bench_stop_path
	$(BIN)/python -m benchmarks.bench_metrics
	$(BIN)/python -m benchmarks.bench_gil
	$(BIN)/python -m benchmarks.bench_budget --quick --out build/bench/budget-quick.json

# The daemon held to a Raspberry Pi's share of one core (a cgroup's CPU bandwidth; root), in full (make bench runs
# --quick), then the stop-latency CDF (docs/stop-latency-cdf.png).
bench-budget: $(BIN)/.installed
	$(BIN)/python -m benchmarks.bench_budget $(BUDGET_ARGS)
	$(BIN)/python -m benchmarks.plot_cdf

protos: $(BIN)/.installed
	$(BIN)/python scripts/gen_protos.py

# Debian / Raspberry Pi OS packages: only those missing are installed.
apt_install = @missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || echo $$p; done); \
	if [ -n "$$missing" ]; then echo "installing: $$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing; fi

deps:
	$(call apt_install,$(APT_PACKAGES))

test-deps:
	$(call apt_install,$(TEST_APT_PACKAGES))

$(BIN)/.installed: setup.cfg pyproject.toml | deps
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,systemd]'
	touch $@

# The official Viam SDK pins its own protobuf, so it lives in a venv of its own (used by the SDK tests).
$(VIAM_STAMP): | deps
	rm -rf $(VIAM_VENV)
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

# Issue 9's table (docs/RELIABILITY.md): the reliability tests inject each fault into a real `rover-safety serve`
# (some under a real systemd, some in network namespaces: root), record their figures in build/reliability.json,
# and the existing tests that prove the rest are run and linked; then the page is rendered from that run, even
# when a test failed (the exit code is the tests'). The hour-long soak is run by hand:
# `$(BIN)/python scripts/soak.py --minutes 60` (its last result is kept in the page).
RELIABILITY_TESTS := tests/test_reliability.py tests/test_reliability_load.py tests/test_reliability_systemd.py \
	tests/test_systemd.py::test_sigkill_of_the_daemon_safe_stops_the_outputs_then_it_restarts \
	tests/test_systemd.py::test_frozen_daemon_is_killed_by_the_watchdog_outputs_off_and_back \
	tests/test_exit_paths.py::test_losing_pigpiod_exits_non_zero_without_burning_cpu \
	tests/test_hil.py::test_losing_pigpiod_is_noticed_at_once_and_refuses_motion \
	tests/test_hil.py::test_a_hung_pigpiod_is_noticed_within_one_window

.PHONY: reliability
reliability: $(BIN)/.installed | test-deps
	rm -f build/reliability.json
	$(BIN)/python -m pytest -p tests.support.fault_links -p no:cacheprovider $(RELIABILITY_TESTS) $(PYTEST_ARGS); \
	  status=$$?; $(BIN)/python scripts/reliability_report.py && exit $$status
