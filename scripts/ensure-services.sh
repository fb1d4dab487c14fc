#!/usr/bin/env bash
# Make sure RabbitMQ and PostgreSQL run locally; start them if not (never installs them twice).
set -euo pipefail

pg_up() { pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; }
rabbit_up() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null && rabbitmq-diagnostics -q check_running >/dev/null 2>&1; }

if ! pg_up; then
  if ! command -v pg_ctlcluster >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  fi
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -1)" main start || true
  for _ in $(seq 60); do pg_up && break; sleep 1; done
fi
pg_up || { echo "PostgreSQL is not reachable on 127.0.0.1:5432" >&2; exit 1; }

# RabbitMQ's open-file limit. Every quorum queue and stream holds file handles from a
# budget of 90% of it, and once the budget is spent a new connection waits in the AMQP
# handshake for good (seen here: Debian's 1024 ran out at about a dozen environments of
# the chain's queues, with test runs, the demo and benchmarks side by side). The limit is
# raised in rabbitmq-env.conf, which rabbitmq-server reads at start; a running broker with
# a low limit is restarted once, before any test has connected.
WANT_FILES=16384
rabbit_files() { rabbitmqctl -q eval 'file_handle_cache:ulimit().' 2>/dev/null | tr -dc '0-9'; }
raise_rabbit_files() {
  local conf=/etc/rabbitmq/rabbitmq-env.conf
  if [ -d /etc/rabbitmq ] && ! grep -q 'ulimit -n' "$conf" 2>/dev/null; then
    printf '# open files for quorum queues, streams and connections (scripts/ensure-services.sh)\nulimit -n %s 2>/dev/null || ulimit -n "$(ulimit -Hn)"\n' "$WANT_FILES" >> "$conf"
  fi
}

if ! rabbit_up; then
  if ! command -v rabbitmq-server >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
  fi
  raise_rabbit_files
  rabbitmq-server -detached || true
  for _ in $(seq 90); do rabbit_up && break; sleep 1; done
fi
rabbit_up || { echo "RabbitMQ is not reachable on 127.0.0.1:5672" >&2; exit 1; }
if [ "$(rabbit_files)" -lt 4096 ] 2>/dev/null; then
  echo "RabbitMQ runs with $(rabbit_files) open files at most: raising the limit and restarting it" >&2
  raise_rabbit_files
  rabbitmqctl -q stop >/dev/null 2>&1 || true
  rabbitmq-server -detached || true
  for _ in $(seq 90); do rabbit_up && break; sleep 1; done
  rabbit_up || { echo "RabbitMQ did not come back on 127.0.0.1:5672" >&2; exit 1; }
fi
