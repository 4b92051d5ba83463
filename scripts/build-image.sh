#!/usr/bin/env bash
# Builds ferry's runtime image as a directory image: Debian bookworm minbase + python3 + a venv with
# mrmd-python, numpy and pandas, plus ferry's runtime hooks. Idempotent and cached: a complete
# image is only refreshed (the hooks); a half-done debootstrap is resumed.
#   usage: build-image.sh IMAGES_DIR [NAME] [HOOKS_FILE]
# Run by scripts/setup.sh and by `ferry image build` (which carries a copy of this script).
set -euo pipefail
images=${1:?usage: build-image.sh IMAGES_DIR [NAME] [HOOKS_FILE]}
name=${2:-mrmd-python}
hooks=${3:-$(cd "$(dirname "$0")/.." && pwd)/image/ferry_runtime_hooks.py}
img="$images/$name"
log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap (scripts/setup.sh does)" >&2; exit 1; }

if [ ! -f "$img/.complete" ]; then
  log "building the runtime image $name (debootstrap + mrmd-python, numpy, pandas; a few minutes, cached)"
  rootfs="$img/rootfs"
  mkdir -p "$img"
  if [ ! -f "$img/.debootstrap-done" ]; then
  rm -rf "$rootfs"
  mirror=${DEBIAN_MIRROR:-$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
    | grep -E '^(URIs:|deb )' | grep -oE 'https?://[^ ]*/debian/?( |$)' | head -1 | tr -d ' ' || true)}
  mirror=${mirror:-http://deb.debian.org/debian}
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm "$rootfs" "$mirror" >"$img/debootstrap.log" 2>&1 \
    || { tail -30 "$img/debootstrap.log"; exit 1; }
  touch "$img/.debootstrap-done"
  fi
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  cp -L /etc/resolv.conf "$rootfs/etc/resolv.conf"
  pip_env=()
  for v in $(env | grep -oE '^PIP_[A-Z_]+' || true); do
    [ "$v" = PIP_FIND_LINKS ] && continue
    pip_env+=("$v=${!v}")
  done
  rm -rf "$rootfs/opt/venv"
  chroot "$rootfs" /usr/bin/python3 -m venv /opt/venv
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "${pip_env[@]}" chroot "$rootfs" /opt/venv/bin/pip install -q --no-cache-dir mrmd-python numpy pandas
  rm -rf "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"*
  chroot "$rootfs" /opt/venv/bin/python -c 'import mrmd_python, numpy, pandas' 2>/dev/null \
    || chroot "$rootfs" /opt/venv/bin/python -c 'import numpy, pandas'
  { echo "mrmd-python@"; chroot "$rootfs" /opt/venv/bin/pip freeze; date -u +%FT%TZ; } | sha256sum | cut -c1-16 > "$img/image-id"
  touch "$img/.complete"
fi
# ferry's own hooks inside the image (cheap; refreshed on every run so that fixes reach old caches).
site=$(ls -d "$img"/rootfs/opt/venv/lib/python3*/site-packages | head -1)
install -m 0644 "$hooks" "$site/ferry_runtime_hooks.py"
echo "import ferry_runtime_hooks" > "$site/ferry_runtime_hooks.pth"
log "runtime image: $img"
