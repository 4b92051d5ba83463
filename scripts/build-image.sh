#!/usr/bin/env bash
# Builds ferry's runtime image as a directory image: Debian bookworm minbase + python3 + a venv with
# exactly the packages of image/requirements.lock (mrmd-python, numpy, pandas, matplotlib, scipy and
# their dependencies, pinned by version and sha256, wheels only), plus ferry's runtime hooks.
# Idempotent and cached: a complete image built from the same lock is only refreshed (the hooks); a
# changed lock rebuilds the venv (not the debootstrap); a half-done debootstrap is resumed.
# The image id is derived from the lock and this recipe, so the same commit gives the same id.
#   usage: build-image.sh IMAGES_DIR [NAME] [HOOKS_FILE] [LOCK_FILE]
# Run by scripts/setup.sh and by `ferry image build` (which carries a copy of this script).
set -euo pipefail
images=${1:?usage: build-image.sh IMAGES_DIR [NAME] [HOOKS_FILE]}
name=${2:-mrmd-python}
hooks=${3:-$(cd "$(dirname "$0")/.." && pwd)/image/ferry_runtime_hooks.py}
lock=${4:-$(cd "$(dirname "$0")/.." && pwd)/image/requirements.lock}
img="$images/$name"
[ -f "$lock" ] || { echo "the package lock $lock is missing" >&2; exit 1; }
recipe=bookworm-minbase-python3-venv-v3
lock_sum=$(sha256sum "$lock" | cut -c1-64)
if [ -f "$img/.complete" ] && [ "$(cat "$img/.lock-sha256" 2>/dev/null)" != "$lock_sum" ]; then
  rm -f "$img/.complete"   # built from another lock: rebuild the venv
fi
if [ -f "$img/.complete" ] && [ "$(cat "$img/.recipe" 2>/dev/null)" != "$recipe" ]; then
  rm -f "$img/.complete"   # built by an older recipe (v2 shipped no bytecode): rebuild the venv
fi
log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
command -v debootstrap >/dev/null || { echo "debootstrap is missing: apt-get install debootstrap (scripts/setup.sh does)" >&2; exit 1; }

if [ ! -f "$img/.complete" ]; then
  log "building the runtime image $name (debootstrap + the locked mrmd-python, numpy, pandas, matplotlib, scipy; a few minutes, cached)"
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
  # debootstrap can leave its /proc (and other) mounts inside the rootfs: release them.
  { findmnt -rno TARGET | grep -F "$rootfs/" || true; } | sort -r | while read -r m; do umount -l "$m"; done
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  cp -L /etc/resolv.conf "$rootfs/etc/resolv.conf"
  pip_env=()
  for v in $(env | grep -oE '^PIP_[A-Z_]+' || true); do
    [ "$v" = PIP_FIND_LINKS ] && continue
    pip_env+=("$v=${!v}")
  done
  rm -rf "$rootfs/opt/venv"
  chroot "$rootfs" /usr/bin/python3 -m venv /opt/venv
  install -m 0644 "$lock" "$rootfs/tmp/requirements.lock"
  env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "${pip_env[@]}" chroot "$rootfs" /opt/venv/bin/pip install -q --no-cache-dir \
    --require-hashes --only-binary=:all: --no-deps -r /tmp/requirements.lock
  rm -f "$rootfs/tmp/requirements.lock"
  rm -rf "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"*
  # Bytecode ships in the image: without it every runtime's first imports write ~15 MB of .pyc
  # into its own writable layer, which every checkpoint and every move then copies (inside the
  # freeze). Timestamp mode (the default): a source a user replaces in the layer is recompiled.
  find "$rootfs/opt/venv" -name __pycache__ -type d -prune -exec rm -rf {} +
  chroot "$rootfs" /opt/venv/bin/python -m compileall -q -j 0 /opt/venv/lib >"$img/compileall.log" 2>&1 \
    || { echo "some files of the venv do not compile (kept as source):" >&2; tail -5 "$img/compileall.log" >&2; }
  chroot "$rootfs" /opt/venv/bin/python -c 'import mrmd_python, numpy, pandas, matplotlib, scipy'
  printf '%s\n%s\n' "$recipe" "$lock_sum" | sha256sum | cut -c1-16 > "$img/image-id"
  echo "$lock_sum" > "$img/.lock-sha256"
  echo "$recipe" > "$img/.recipe"
  touch "$img/.complete"
fi
# ferry's own hooks inside the image (cheap; refreshed on every run so that fixes reach old caches).
site=$(ls -d "$img"/rootfs/opt/venv/lib/python3*/site-packages | head -1)
install -m 0644 "$hooks" "$site/ferry_runtime_hooks.py"
echo "import ferry_runtime_hooks" > "$site/ferry_runtime_hooks.pth"
log "runtime image: $img"
