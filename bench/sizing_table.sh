#!/usr/bin/env bash
# The table of docs/sizing.md: `sigstead up` with 1, then 2 (or the given) workers on a fresh
# data directory each, and `sigstead bench` against each for every workload, 8 s a run.
#
#   bash bench/sizing_table.sh sqlite [WORKERS...]   # default: 1 2
#   bash bench/sizing_table.sh pg [WORKERS...]       # each worker a replica on one PostgreSQL
#
# Needs `sigstead` on PATH (the venv), wrk, and for `pg` the server of .ci/postgres.sh (database
# `bench_sizing` is dropped and created). Run it on an otherwise idle machine: the load
# generator shares the cores with the server, and other work moves every figure.
set -euo pipefail
mode=${1:?usage: sizing_table.sh sqlite|pg [WORKERS...]}
shift
if [ $# -gt 0 ]; then workers=("$@"); else workers=(1 2); fi
pg=postgresql://postgres@127.0.0.1:5432
dir=$(mktemp -d -t sigstead-sizing-XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
sigstead dev-issuer init --dir "$dir/issuer" >/dev/null

for n in "${workers[@]}"; do
  port=$((3400 + n))
  database=()
  if [ "$mode" = pg ]; then
    psql -q -h 127.0.0.1 -U postgres -d test \
      -c "DROP DATABASE IF EXISTS bench_sizing" -c "CREATE DATABASE bench_sizing" >/dev/null
    database=(--database-url "$pg/bench_sizing")
  fi
  sigstead up --workers "$n" --data-dir "$dir/data$n" --port "$port" \
    --oidc-config "$dir/issuer/oidc.yaml" "${database[@]}" >"$dir/up$n.log" 2>&1 &
  server=$!
  for _ in $(seq 120); do
    curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break
    sleep 0.5
  done
  url=http://127.0.0.1:$port
  token=$(sigstead dev-issuer token --dir "$dir/issuer" --email bench@example.com)
  echo "== $mode, $n worker(s)"
  sigstead bench --url "$url" write -c 16 -d 8 | grep -v '^$'
  sigstead bench --url "$url" write -c 256 -d 8 --no-baselines | grep '^write'
  sigstead bench --url "$url" read -c 16 -d 8 --no-baselines | grep '^read'
  sigstead bench --url "$url" timestamp -c 64 -d 8 --no-baselines | grep '^timestamp'
  sigstead bench --url "$url" cert -c 64 -d 8 --no-baselines --identity-token "$token" | grep '^cert'
  sigstead bench --url "$url" write-v2 -c 64 -d 8 --no-baselines | grep '^write'
  kill "$server"
  wait "$server" || true
done
