#!/usr/bin/env bash
# Start a throw-away PostgreSQL server on 127.0.0.1:55432 for the multi-worker storage test.
# Prints the URL on success; prints a reason on stderr and exits non-zero otherwise.
set -u
port=${AUTODELTA_PG_PORT:-55432}
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$bin" ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >/dev/null 2>&1
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
fi
[ -n "$bin" ] || { echo "postgres: no server binaries and apt-get could not install them" >&2; exit 1; }
data=$(mktemp -d /tmp/autodelta-pg.XXXXXX)
run=""
if [ "$(id -u)" = 0 ]; then
  id postgres >/dev/null 2>&1 || useradd --system postgres >/dev/null 2>&1
  chown postgres "$data"
  run="runuser -u postgres --"
fi
$run "$bin/initdb" -D "$data" -A trust -U postgres >/dev/null 2>&1 || { echo "postgres: initdb failed" >&2; exit 1; }
started=""
for try_port in $(seq "$port" $((port + 9))); do  # a port in use moves us to the next one
  if $run "$bin/pg_ctl" -D "$data" -l "$data/log" -w -o "-p $try_port -k $data -c listen_addresses=127.0.0.1" \
      start >/dev/null 2>&1; then
    started=$try_port
    break
  fi
done
[ -n "$started" ] || { echo "postgres: server did not start: $(tail -n 2 "$data/log" 2>/dev/null | tr '\n' ' ')" >&2; exit 1; }
port=$started
echo "$data" > /tmp/autodelta-pg.datadir
echo "postgresql+psycopg2://postgres@127.0.0.1:$port/postgres"
