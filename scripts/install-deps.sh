#!/usr/bin/env bash
# install-deps.sh — installs what moeprune needs to build and test on Debian 12:
# a C compiler (gcc, and clang for the sanitizer and fuzzing builds), CMake and
# cJSON. Uses sudo when not run as root; skips apt when everything is present.
set -euo pipefail
pkgs=(build-essential cmake clang libclang-rt-14-dev libcjson-dev pkg-config)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""
[ "$(id -u)" -ne 0 ] && sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq "${missing[@]}"
