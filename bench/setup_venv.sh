#!/usr/bin/env bash
# setup_venv.sh - the PyTorch reference environment for the benchmarks.
#
# Creates .venv at the repository root on top of Debian's python3 so that torch
# is Debian's python3-torch 1.13 (the build the fixtures were made with), then
# adds segmentation-models-pytorch 0.3.4 and segment-anything from PyPI with
# --no-deps so that pip never pulls a PyPI torch. The light pure-Python
# dependencies are pinned and installed explicitly. Safe to run again: it only
# installs what is missing and always re-runs the import check.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV="$ROOT/.venv"
PY=/usr/bin/python3

need_apt=()
$PY -c 'import torch' 2>/dev/null || need_apt+=(python3-torch)
$PY -c 'import torchvision' 2>/dev/null || need_apt+=(python3-torchvision)
$PY -c 'import PIL' 2>/dev/null || need_apt+=(python3-pil)
$PY -c 'import numpy' 2>/dev/null || need_apt+=(python3-numpy)
$PY -c 'import yaml' 2>/dev/null || need_apt+=(python3-yaml)
$PY -c 'import requests' 2>/dev/null || need_apt+=(python3-requests)
$PY -c 'import typing_extensions' 2>/dev/null || need_apt+=(python3-typing-extensions)
$PY -c 'import venv, ensurepip' 2>/dev/null || need_apt+=(python3-venv)
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "setup_venv: apt-get install ${need_apt[*]}"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO=sudo
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}"
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup_venv: creating $VENV"
    $PY -m venv --system-site-packages "$VENV"
fi
VPY="$VENV/bin/python"

# name==version pairs; everything with --no-deps. The versions are the ones
# current when smp 0.3.4 / timm 0.9.2 were released (mid 2023).
PKGS=(
    segmentation-models-pytorch==0.3.4
    segment-anything==1.0
    timm==0.9.2
    pretrainedmodels==0.7.4
    efficientnet-pytorch==0.7.1
    huggingface-hub==0.16.4
    safetensors==0.4.5
    munch==2.5.0
    tqdm==4.65.0
    filelock==3.12.2
    fsspec==2023.6.0
    packaging==23.1
)
missing=()
for p in "${PKGS[@]}"; do
    name=${p%%==*}
    want=${p##*==}
    have=$("$VPY" -c "import importlib.metadata as m, sys
try: print(m.version(sys.argv[1]))
except m.PackageNotFoundError: print('')" "$name")
    [ "$have" = "$want" ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup_venv: pip install --no-deps ${missing[*]}"
    # pretrainedmodels and efficientnet-pytorch are sdists; build them with the
    # venv's own setuptools (wheel is needed for that) instead of an isolated
    # build environment.
    "$VPY" -m pip install -q --upgrade --no-deps wheel setuptools
    "$VPY" -m pip install -q --no-deps --no-build-isolation "${missing[@]}"
fi

"$VPY" - <<'PY'
import sys
import torch, torchvision
import segmentation_models_pytorch as smp
import segment_anything
assert torch.__file__.startswith("/usr/lib/python3/dist-packages/"), \
    f"torch comes from {torch.__file__}, expected Debian's python3-torch"
assert torch.__version__.startswith("1.13"), f"torch {torch.__version__}, expected 1.13"
print(f"setup_venv: ok: python {sys.version.split()[0]}, torch {torch.__version__} "
      f"({torch.__file__}), torchvision {torchvision.__version__}, smp {smp.__version__}, "
      f"segment_anything from {segment_anything.__file__}")
PY
