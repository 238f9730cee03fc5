#!/usr/bin/env bash
# Makes 127.0.0.1:5432 usable by the tests: user `postgres` with trust auth, database `test`.
# Idempotent, and fast when the server already answers (one pg_isready). On a machine without
# PostgreSQL it installs Debian's `postgresql` package (root only), creates a cluster if the
# package did not, opens TCP on loopback to `postgres` without a password (Debian's default
# pg_hba.conf asks for one), and starts the server without systemd (pg_ctlcluster).
#
# Set SIGSTEAD_TEST_POSTGRES_URL to use another server: this script then does nothing.
set -euo pipefail

if [ -n "${SIGSTEAD_TEST_POSTGRES_URL:-}" ]; then
  echo "== postgres: using SIGSTEAD_TEST_POSTGRES_URL, not managing a local server"
  exit 0
fi

ready() { command -v pg_isready >/dev/null && pg_isready -q -h 127.0.0.1 -p 5432 -U postgres; }
as_postgres() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

create_test_db() {
  # The tests need `test` and trust auth over TCP; both are checked through TCP itself.
  if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname='test'" \
      | grep -q 1; then
    psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE test"
  fi
}

if ready && psql -h 127.0.0.1 -U postgres -d postgres -w -tAc "SELECT 1" >/dev/null 2>&1; then
  create_test_db
  echo "== postgres: 127.0.0.1:5432 already serving"
  exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
  echo "PostgreSQL is not usable on 127.0.0.1:5432 and this runner is not root:" >&2
  echo "  install it (apt-get install postgresql), allow trust auth for postgres on 127.0.0.1," >&2
  echo "  create database 'test', or set SIGSTEAD_TEST_POSTGRES_URL" >&2
  exit 1
fi

if ! command -v pg_lsclusters >/dev/null || [ -z "$(ls /usr/lib/postgresql 2>/dev/null)" ]; then
  echo "== postgres: apt-get install postgresql"
  apt-get update -qq
  # The package's postinst may try to start a service; without systemd that is a harmless no-op.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi

version=$(ls /usr/lib/postgresql | sort -V | tail -1)
if ! pg_lsclusters -h | awk '{print $1, $2}' | grep -qx "$version main"; then
  echo "== postgres: creating cluster $version/main"
  pg_createcluster "$version" main --port 5432 >/dev/null
fi

conf_dir=/etc/postgresql/$version/main
hba=$conf_dir/pg_hba.conf
marker="# sigstead tests: trust on loopback"
if ! grep -qF "$marker" "$hba"; then
  # First match wins in pg_hba.conf, so the trust lines go on top. Loopback only: nothing else
  # can reach this server without a password.
  tmp=$(mktemp)
  {
    echo "$marker"
    echo "host all all 127.0.0.1/32 trust"
    echo "host all all ::1/128 trust"
    cat "$hba"
  } >"$tmp"
  cat "$tmp" >"$hba"
  rm -f "$tmp"
fi

# The e2e and replica tests open many connections at once (two log replicas, the CA, the TSA
# and the test's own pools); Debian's default of 100 is close to that under pytest.
conf=$conf_dir/conf.d/sigstead-tests.conf
if [ ! -f "$conf" ]; then
  mkdir -p "$conf_dir/conf.d"
  printf "listen_addresses = '127.0.0.1'\nport = 5432\nmax_connections = 300\n" >"$conf"
fi

status=$(pg_lsclusters -h | awk -v v="$version" '$1==v && $2=="main" {print $4}')
if [ "$status" = "online" ]; then
  pg_ctlcluster "$version" main reload
else
  echo "== postgres: starting cluster $version/main"
  pg_ctlcluster "$version" main start
fi

for _ in $(seq 1 100); do
  ready && break
  sleep 0.1
done
if ! ready; then
  echo "PostgreSQL $version/main did not come up; see /var/log/postgresql/postgresql-$version-main.log" >&2
  exit 1
fi
create_test_db
echo "== postgres: 127.0.0.1:5432 ready (PostgreSQL $version, trust auth on loopback, database test)"
