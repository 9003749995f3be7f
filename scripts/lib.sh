# Shared set-up steps for scripts/run.sh and scripts/test.sh. Every step is idempotent.

step() { printf '\n== %s\n' "$*"; }

ensure_venv() {
  local reqs="$1" stamp=".venv/.installed-$(basename "$1")"
  if [ ! -x .venv/bin/python ]; then
    step "creating .venv (Python 3.11)"
    "${PYTHON:-python3.11}" -m venv .venv 2>/dev/null || python3 -m venv .venv
  fi
  # Reinstall only when a requirements file changed since the last install.
  if [ ! -f "$stamp" ] || [ requirements.txt -nt "$stamp" ] || [ "$reqs" -nt "$stamp" ]; then
    step "installing $reqs"
    .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
    .venv/bin/python -m pip install -q --disable-pip-version-check -r "$reqs"
    touch "$stamp"
  fi
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }

apt_install() {
  step "installing system packages: $*"
  { as_root apt-get update -qq && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null; } \
    || echo "could not install $*: please install them with your package manager" >&2
}

ensure_pdf_libs() {
  # WeasyPrint (PDF exports and reports) loads Pango, HarfBuzz and fontconfig at run time.
  ldconfig -p 2>/dev/null | grep -q libpango-1.0 || apt_install libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz0b libfontconfig1 fonts-dejavu-core
}

ensure_chromium() {
  # The public pages and the storefront tracker are tested in Debian's headless Chromium.
  [ -x /usr/bin/chromium ] || apt_install chromium
}

ensure_postgres() {
  if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    step "starting PostgreSQL"
    as_root pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start
    for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  fi
}

ensure_redis() {
  if ! (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null; then
    step "starting Redis"
    as_root mkdir -p /var/lib/redis /var/log/redis
    as_root redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
    for _ in $(seq 1 30); do (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null && break; sleep 1; done
  fi
}
