#!/usr/bin/env bash
# Set up and run the product: migrate, build the demo shop (first run only), print an admin
# login, then run the django-q2 worker in the background and the web server in the foreground.
# Ctrl-C stops both. Usage: bash scripts/run.sh   (PORT=8000 HOST=127.0.0.1 by default)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

ensure_venv requirements.txt
ensure_pdf_libs
export DEBUG="${DEBUG:-true}"
PY=.venv/bin/python

step "database"
$PY manage.py migrate --noinput -v0
step "demo shop"
$PY manage.py seed_demo --if-empty
$PY manage.py setup_schedules
step "admin login"
$PY manage.py ensure_admin --url "http://${HOST:-127.0.0.1}:${PORT:-8000}/admin/"

step "worker (django-q2 qcluster) and web server"
$PY manage.py qcluster &
WORKER=$!
trap 'kill $WORKER 2>/dev/null; wait $WORKER 2>/dev/null' EXIT INT TERM
$PY manage.py runserver --noreload "${HOST:-127.0.0.1}:${PORT:-8000}"
