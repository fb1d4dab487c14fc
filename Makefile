# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: browser demo test chaos bench bench-hop bench-allocation bench-kompetanse bench-replay bench-chain install services clean

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

# Start RabbitMQ and PostgreSQL if they are not running (as on a fresh CI machine).
services:
	@bash scripts/ensure-services.sh

demo: install services
	$(BIN)/chain demo $(ARGS)

# The console's end-to-end test drives Debian's Chromium (installed once if missing).
browser:
	@bash scripts/ensure-chromium.sh

# The contracts: docs/asyncapi.json validated by the official AsyncAPI CLI, installed once
# per machine into .tools/ (npm; about 2 minutes the first time, then cached).
ASYNCAPI_CLI := 4.1.1
ASYNCAPI_DIR := .tools/asyncapi
ASYNCAPI_STAMP := $(ASYNCAPI_DIR)/.installed-$(ASYNCAPI_CLI)

$(ASYNCAPI_STAMP):
	@bash scripts/ensure-debian.sh npm nodejs npm
	npm install --prefix $(ASYNCAPI_DIR) --no-audit --no-fund --prefer-offline --loglevel=error @asyncapi/cli@$(ASYNCAPI_CLI)
	echo '{"analyticsEnabled":"false","infoMessageShown":"true","userID":"chain"}' > $(ASYNCAPI_DIR)/analytics.json
	rm -f $(ASYNCAPI_DIR)/.installed-*
	touch $@

.PHONY: contracts
contracts: $(ASYNCAPI_STAMP)
	ASYNCAPI_METRICS_CONFIG_PATH=$(CURDIR)/$(ASYNCAPI_DIR)/analytics.json \
		$(ASYNCAPI_DIR)/node_modules/.bin/asyncapi validate docs/asyncapi.json --fail-severity warn

# The deployment files: docker-compose.yml as Compose reads it (no Docker engine needed),
# every Kubernetes manifest parsed.
.PHONY: deploy-check
deploy-check: install
	@bash scripts/ensure-debian.sh docker-compose docker-compose
	docker-compose -f docker-compose.yml config -q
	$(BIN)/python -c "import pathlib, yaml; [list(yaml.safe_load_all(p.read_text())) for p in pathlib.Path('deploy/k8s').glob('*.yaml')]"

test: install services browser contracts deploy-check
	$(BIN)/pytest $(ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache

# Faults injected, nothing lost: 10,000 persons while services, relays, RabbitMQ and
# PostgreSQL are killed and restarted, then two replicas with duplicated and reordered
# deliveries. On a throwaway RabbitMQ node and PostgreSQL cluster of its own (never the
# machine's shared ones), removed at the end. About 8-15 minutes; ARGS="--persons 2000
# --seed 7 --duration 120" for another size, seed or fault window (`python -m sim.chaos -h`).
# Figures in bench/results/chaos.{md,json}, logs in var/chaos/logs-<port>/.
chaos: install
	$(BIN)/python -m sim.chaos $(ARGS)

# Benchmarks (ratios against a baseline measured in the same run); results in bench/results/.
bench: bench-hop bench-allocation bench-kompetanse bench-replay bench-chain
	$(BIN)/python -m bench.summary

bench-hop: install services
	$(BIN)/python -m bench.hop $(ARGS)

# The allocation optimiser against the greedy baseline and the hindsight optimum (no services).
bench-allocation: install
	$(BIN)/python -m bench.allocation $(ARGS)

# The kompetanse API's audited reads (requests/s, p50/p99) against a bare FastAPI endpoint.
bench-kompetanse: install services
	$(BIN)/python -m bench.kompetanse $(ARGS)

bench-replay: install services
	$(BIN)/python -m bench.replay $(ARGS)

# The whole chain as processes: persons/s, latency per hop and end to end, peak RSS
# (a few minutes; ARGS="--year" for all of 2023, "--profile" to py-spy the busiest process).
bench-chain: install services
	$(BIN)/python -m bench.chain $(ARGS)
