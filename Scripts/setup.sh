#!/usr/bin/env bash
# Installs what dp-farm needs on a fresh Debian 12 machine with Swift 6.3 and python3 (with pip) present.
# Safe to run again: it installs only what is missing. Scripts/test.sh and Scripts/demo.sh call it.
#
#   Debian packages  libopenblas-dev libpng-dev libzmq3-dev libsqlite3-dev pkg-config (the C libraries the
#                    Swift targets link), protobuf-compiler (Scripts/gen_protos.sh), ffmpeg (frames -> video)
#   Python packages  torch 2.13.0+cpu (a CPU wheel from a local wheel folder: DP_WHEELS, default /opt/wheels,
#                    or pip's find-links), safetensors, numpy, pytest - for the checkpoint converter and its tests;
#                    Pillow for Scripts/demo/synth.py (the synthetic demo world) and its tests
#
# Environment: DP_SETUP_SKIP_APT=1 / DP_SETUP_SKIP_PIP=1 skip a part (e.g. on a machine you manage yourself).
set -euo pipefail

APT_PACKAGES=(libopenblas-dev libpng-dev libzmq3-dev libsqlite3-dev pkg-config protobuf-compiler ffmpeg)
TORCH_VERSION="2.13.0+cpu"
PIP_PACKAGES=("torch==$TORCH_VERSION" safetensors numpy pytest Pillow)

say() { echo "setup.sh: $*" >&2; }

as_root() {
  if [[ "$(id -u)" == 0 ]]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else say "need root for '$*' and sudo is not installed"; exit 1
  fi
}

# 1. Debian packages.
if [[ "${DP_SETUP_SKIP_APT:-0}" != 1 ]]; then
  missing=()
  for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    say "installing Debian packages: ${missing[*]}"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  fi
fi

# 2. Python packages.
PYTHON="${PYTHON:-python3}"
if [[ "${DP_SETUP_SKIP_PIP:-0}" != 1 ]]; then
  if ! "$PYTHON" - "$TORCH_VERSION" <<'EOF' 2>/dev/null
import sys
import numpy, pytest, safetensors, torch, PIL
sys.exit(0 if torch.__version__ == sys.argv[1] else 1)
EOF
  then
    say "installing Python packages: ${PIP_PACKAGES[*]}"
    wheels=()
    DP_WHEELS="${DP_WHEELS:-/opt/wheels}"
    [[ -d "$DP_WHEELS" ]] && wheels=(--find-links "$DP_WHEELS")
    # The +cpu pin matters: an unpinned 'torch' would fetch the multi-gigabyte CUDA build.
    if ! "$PYTHON" -m pip install -q "${wheels[@]}" "${PIP_PACKAGES[@]}"; then
      say "pip could not install ${PIP_PACKAGES[*]}; torch $TORCH_VERSION comes from a local wheel folder"
      say "(pip's find-links, now: $("$PYTHON" -m pip config get global.find-links 2>/dev/null || echo none);"
      say " or set DP_WHEELS=/folder/with/the/wheel)"
      exit 1
    fi
  fi
fi
