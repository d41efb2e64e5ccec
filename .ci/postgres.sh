#!/usr/bin/env bash
# Install (if needed) and start a local PostgreSQL server for the multi-worker storage test.
# Prints the line to eval: `eval "$(bash .ci/postgres.sh)"` exports TUNER_TEST_POSTGRES_URL.
set -euo pipefail
{
  if ! command -v pg_ctlcluster >/dev/null; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql
  fi
  version=$(ls /usr/lib/postgresql | sort -n | tail -1)
  if ! pg_lsclusters -h | awk '{print $1, $2}' | grep -q "^$version main$"; then
    pg_createcluster "$version" main
  fi
  pg_ctlcluster "$version" main start || true
  for _ in $(seq 1 30); do
    pg_isready -q -h 127.0.0.1 -p 5432 && break
    sleep 1
  done
  su postgres -c "psql -q -c \"DO \\\$\\\$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'tuner') THEN CREATE ROLE tuner LOGIN PASSWORD 'tuner'; END IF; END \\\$\\\$;\""
  su postgres -c "psql -q -tc \"SELECT 1 FROM pg_database WHERE datname = 'tuner'\" | grep -q 1 || createdb -O tuner tuner"
} >&2
echo "export TUNER_TEST_POSTGRES_URL=postgresql://tuner:tuner@127.0.0.1:5432/tuner"
