# Two commands do all set-up on a fresh machine:  make demo  |  make test
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.demo-installed

.PHONY: demo test test-fast lint typecheck unit bench schema proto mosquitto browser systemd-analyze rabbitmq clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
	  { echo "Python >= 3.11 is required (found: $$($(PYTHON) --version))"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $(STAMP)

## Simulated plant (10 CNC machines and an energy meter) + embedded MQTT broker + gateway, until Ctrl-C.
demo: $(DEMO_STAMP)
	@echo "Status page: http://127.0.0.1:8080/   metrics: http://127.0.0.1:8080/metrics"
	$(BIN)/edge-gateway run -c config/demo-plant.yaml --with-simulators --console

# the `demo` extra (the embedded broker) stays out of production installs
$(DEMO_STAMP): $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,demo]'
	@touch $(DEMO_STAMP)

## Lint, type-check and run every test (starts its own Mosquitto on a free port).
test: $(STAMP) mosquitto browser systemd-analyze rabbitmq lint typecheck
	$(BIN)/pytest -q

## The fast lane while working: lint, types and every test not marked `slow` (no subprocess
## gateways); CI runs `make test`, the full run.
test-fast: $(STAMP) mosquitto lint typecheck
	$(BIN)/pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .

typecheck: $(STAMP)
	$(BIN)/mypy

# $(call install_or_advise,<Debian packages>,<why>,<advice without root>,<exit status without>):
# as root with apt-get the packages are installed (an `apt-get update` only if the first try
# fails); otherwise, or when the install fails, the advice is printed and make goes on or
# stops with the exit status (1 for what every test needs, 0 for what a few tests skip without).
define install_or_advise
	if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing $(1) ($(2))"; \
	  (apt-get install -y --no-install-recommends $(1) >/dev/null 2>&1 || \
	    (apt-get update >/dev/null && apt-get install -y --no-install-recommends $(1) >/dev/null)) || \
	    { echo "could not install $(1): $(3)"; exit $(4); }; \
	else \
	  echo "$(3)"; exit $(4); \
	fi
endef

mosquitto:
	@command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || { \
	  $(call install_or_advise,mosquitto,tests need a real MQTT broker,The tests need the Mosquitto broker binary. Install it with: sudo apt-get install mosquitto,1); }

# The status-page test loads the page in Debian's headless Chromium through chromedriver.
browser:
	@[ -x /usr/bin/chromium ] && { command -v chromedriver >/dev/null 2>&1 || [ -x /usr/bin/chromedriver ]; } || { \
	  $(call install_or_advise,chromium chromium-driver,the status-page test drives a real browser,The status-page test needs Chromium; it is skipped without. Install: sudo apt-get install chromium chromium-driver,0); }

# The shipped unit is read by systemd-analyze (verify, offline security score), no systemd running.
systemd-analyze:
	@command -v systemd-analyze >/dev/null 2>&1 || { \
	  $(call install_or_advise,systemd,its systemd-analyze checks systemd/edge-gateway.service,The unit-file test needs systemd-analyze; it is skipped without. Install: sudo apt-get install systemd,0); }

# The broker-failover test kills a node of a real 3-node RabbitMQ cluster (Debian's package,
# MQTT plugin); the nodes run as the test's user in its temporary directory, no service.
rabbitmq:
	@[ -x /usr/lib/rabbitmq/bin/rabbitmq-server ] || command -v rabbitmq-server >/dev/null 2>&1 || { \
	  $(call install_or_advise,rabbitmq-server,the failover test kills a node of a RabbitMQ cluster,The clustered-broker failover test needs RabbitMQ; it is skipped without. Install: sudo apt-get install rabbitmq-server,0); }

## Regenerate config/schema.json from the models (a test keeps them equal).
schema: $(STAMP)
	$(BIN)/edge-gateway schema -o config/schema.json

## Regenerate the Sparkplug B module from the vendored .proto (a test keeps them equal).
PROTO_DIR := edge/egress/formats/sparkplug_proto
proto: $(STAMP)
	cd $(PROTO_DIR) && ../../../../$(BIN)/python -m grpc_tools.protoc -I. --python_out=. --pyi_out=. sparkplug_b.proto

bench: $(STAMP) mosquitto
	$(BIN)/pip install --quiet -e '.[test,bench]' && $(BIN)/python -m bench

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache var
