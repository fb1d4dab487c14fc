# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | sha1sum | cut -c1-12)

.PHONY: browser demo test bench bench-hop bench-allocation bench-kompetanse bench-replay install services clean

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

test: install services browser
	$(BIN)/pytest $(ARGS)

clean:
	rm -rf $(VENV) var .pytest_cache

# Benchmarks (ratios against a baseline measured in the same run); results in bench/results/.
bench: bench-hop bench-allocation bench-kompetanse bench-replay

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
