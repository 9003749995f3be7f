#!/usr/bin/env bash
# Set up and run the whole test suite: lint, then pytest on SQLite, then again on PostgreSQL
# (including the django-q2 cluster tests on the ORM and Redis brokers).
# Usage: bash scripts/test.sh [extra pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_venv requirements-dev.txt
ensure_pdf_libs
ensure_chromium
ensure_postgres
ensure_redis

export REDIS_TEST_URL="${REDIS_TEST_URL:-redis://127.0.0.1:6379/15}"
PG_URL="${TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/shop}"

step "ruff"
.venv/bin/ruff check .

step "pytest on SQLite"
env -u DATABASE_URL .venv/bin/python -m pytest "$@"

step "pytest on PostgreSQL ($PG_URL)"
DATABASE_URL="$PG_URL" .venv/bin/python -m pytest "$@"
