#!/usr/bin/env bash
# Installs the Debian packages kmseg needs to build and test (idempotent; only
# calls apt-get when something is missing). See README "Dependencies".
set -euo pipefail
pkgs=(build-essential clang libopenblas-dev libpng-dev libjpeg62-turbo-dev libclang-rt-14-dev unzip chromium libopenmpi-dev openmpi-bin)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi

# kmseg's default teacher, the LiteMedSAM checkpoint (README "Teacher"); a
# no-op when it is already installed.
bash "$(dirname "$0")/install-teacher.sh"
