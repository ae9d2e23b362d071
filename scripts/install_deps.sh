#!/usr/bin/env bash
# Installs the Debian packages qlora.cpp builds against (idempotent; needs root or sudo).
set -euo pipefail
packages=(build-essential cmake pkg-config git ca-certificates python3
  nlohmann-json3-dev libcli11-dev libfmt-dev libopenblas-dev libopenblas-openmp-dev libyaml-cpp-dev libpcre2-dev
  libgtest-dev libgmock-dev libomp-dev libdnnl-dev unzip
  libopenmpi-dev openmpi-bin  # data-parallel training (src/dist, tests/dist)
  clang-14 libclang-rt-14-dev)  # clang: the sanitizer and fuzzer build (scripts/test_clang.sh)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" -ne 0 ] && sudo="sudo"
  $sudo apt-get update -q
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
fi
