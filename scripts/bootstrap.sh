#!/usr/bin/env bash
# Set up everything edgepos needs on a fresh Debian machine (run as root), idempotently:
# system packages that are missing, a virtual environment in .venv, and edgepos itself
# installed editable with its test extras (this compiles the Cython evaluator).
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf 'bootstrap: %s\n' "$*" >&2; }

need_apt=()
command -v python3 >/dev/null || need_apt+=(python3)
python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
command -v gcc >/dev/null || need_apt+=(gcc)
python3 - <<'PY' 2>/dev/null || need_apt+=(python3-dev)
import sysconfig, os, sys
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)
PY

# PC/SC: pcscd with the vpcd virtual readers (our virtual cards connect to it), pcsc-tools for
# an independent client, swig and libpcsclite-dev because pyscard builds from source.
# Mosquitto (the MQTT broker) and PostgreSQL (the host's production ledger): the tests start
# them when they are installed but not running. fonts-dejavu-core: the Cyrillic font the
# host's PDF documents embed (host/documents/pdfout.py). chromium: the browser tests drive it
# (Playwright, executable_path=/usr/bin/chromium; never a browser download).
for pkg in pcscd vsmartcard-vpcd pcsc-tools swig libpcsclite-dev mosquitto mosquitto-clients postgresql \
           fonts-dejavu-core chromium; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done

if [ ${#need_apt[@]} -gt 0 ]; then
    log "installing system packages: ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
    log "creating virtual environment .venv"
    python3 -m venv .venv
fi
log "installing edgepos (editable, compiles the native evaluator)"
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel Cython
.venv/bin/python -m pip install -q --no-build-isolation -e '.[test]'
log "ready: .venv/bin/edgepos"
