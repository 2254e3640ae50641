#!/usr/bin/env bash
# Provision everything the integration tests need on this machine. Idempotent; cached work
# (Kafka jars, the influxd binary in ~/.cache/parkmon) is reused, so a warm run takes seconds.
#
#   scripts/provision.sh          # system packages + `parkmon services build` (all services)
#   scripts/provision.sh --up     # ... and start them (`parkmon services up`)
#
# Python: $PARKMON_PYTHON, else .venv/bin/python, else python3 (with parkmon importable).
# Needs root for apt-get (skipped when every package is already installed), Go >= 1.21,
# cargo/rustc, Java 17, Maven; network access to Debian, Maven Central, the Go module proxy and
# crates.io. A cold build of influxd takes several minutes (see docs/operations-devservices.md).
set -euo pipefail

cd "$(dirname "$0")/.."
UP=0
[[ "${1:-}" == "--up" ]] && UP=1

log() { printf '[provision %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
t_start=$(date +%s)

# ---- system packages ----------------------------------------------------------------------------
packages=(mosquitto mosquitto-clients clang pkg-config docker-compose maven ca-certificates chromium)
command -v java >/dev/null 2>&1 || packages+=(openjdk-17-jre-headless)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then
    log "not root: run  sudo apt-get install -y --no-install-recommends ${missing[*]}"
    exit 2
  fi
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y --no-install-recommends "${missing[@]}" >/tmp/parkmon-apt.log 2>&1; then
    apt-get update >/tmp/parkmon-apt-update.log 2>&1
    apt-get install -y --no-install-recommends "${missing[@]}" >/tmp/parkmon-apt.log 2>&1 || {
      tail -30 /tmp/parkmon-apt.log >&2
      exit 1
    }
  fi
  # the Debian package enables a system-wide broker on :1883; parkmon runs its own instances
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet mosquitto 2>/dev/null; then
    systemctl disable --now mosquitto >/dev/null 2>&1 || true
  fi
else
  log "Debian packages present"
fi

for tool in go cargo java mvn; do
  command -v "$tool" >/dev/null 2>&1 || { log "missing toolchain: $tool"; exit 2; }
done

# ---- python -------------------------------------------------------------------------------------
PY="${PARKMON_PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
"$PY" -c "import parkmon.devservices" || {
  log "parkmon is not importable with $PY (pip install -e '.[dev]' first)"
  exit 2
}

# ---- services -----------------------------------------------------------------------------------
log "building / fetching services (cached in ${PARKMON_CACHE:-$HOME/.cache/parkmon})"
"$PY" -m apps.cli services build
if ((UP)); then
  "$PY" -m apps.cli services up
fi
log "provisioned in $(($(date +%s) - t_start)) s"
