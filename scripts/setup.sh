#!/usr/bin/env bash
# Installs everything ferry needs on a Debian/Ubuntu host, as root, idempotently:
#   apt packages (runc, iptables, iproute2, debootstrap, zstd, CRIU build deps),
#   CRIU >= 4 (built from the vendored source, $CRIU_SRC, or the upstream release) when `criu check` fails,
#   the kernel setting lazy migration needs (fs.pipe-max-size),
#   the runtime image (bookworm minbase + python3 + venv with the packages pinned in image/requirements.lock: mrmd-python, numpy, pandas, matplotlib, scipy),
#   the MRMD editor bundle for the notebook page and the browser tests (npm: mrmd-electron,
#   sha512-verified, in $FERRY_CACHE/editor), chromium + chromedriver for those tests,
#   a running PostgreSQL cluster with a role for the tests (their URL in $FERRY_CACHE/pg-test-url),
#   schemathesis in a venv of its own (the API fuzz test),
#   and the ferry binary itself.
# Heavy artifacts are cached under $FERRY_CACHE (default /var/cache/ferry) so reruns are fast.
set -euo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
cache=${FERRY_CACHE:-/var/cache/ferry}
criu_version=4.2
criu_tarball_name=criu-4.2.22-g2cf8f13ca.tar.gz
criu_release_url=${CRIU_RELEASE_URL:-https://github.com/checkpoint-restore/criu/archive/refs/tags/v${criu_version}.tar.gz}
mkdir -p "$cache"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  echo "setup must run as root (it installs packages and CRIU): run it from a root shell, or with sudo $0 where sudo is installed" >&2
  exit 1
fi

# --- apt packages ----------------------------------------------------------------------
pkgs=(runc iptables iproute2 debootstrap zstd ca-certificates curl procps patch
      build-essential pkg-config libprotobuf-dev libprotobuf-c-dev protobuf-c-compiler
      protobuf-compiler python3-protobuf libnl-3-dev libnl-route-3-dev libcap-dev libnet1-dev
      libaio-dev libgnutls28-dev libbsd-dev libnftables-dev uuid-dev nftables
      chromium chromium-driver postgresql python3-venv)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing apt packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# --- CRIU --------------------------------------------------------------------------------
# ferry's CRIU build is the release with ferry's patches (scripts/criu/*.patch: a crash when the
# configuration runc hands over sets network-lock), its kernel-feature cache on a tmpfs
# (RUNDIR=/dev/shm/ferry-criu: CRIU keeps the cache only on a tmpfs, and /run is not one on every
# host) and a GitID naming the build, which the agent reads to know what this CRIU can do.
# A working CRIU of the system's is kept (without those two, a move's freeze is ~0.15 s longer);
# one that fails `criu check`, or an older build of ferry's own, is replaced.
criu_build=ferry.1
criu_rundir=/dev/shm/ferry-criu
criu_ok() { command -v criu >/dev/null && criu check >/dev/null 2>&1; }
criu_stale_own() {
  local v
  v=$(/usr/local/sbin/criu --version 2>/dev/null) || return 1
  # ferry's builds are the only CRIU 4.2 this script installs there.
  grep -q "^Version: $criu_version\$" <<<"$v" && ! grep -q "^GitID: v$criu_version-$criu_build\$" <<<"$v"
}
# The cache directory: root's alone (any other owner could feed CRIU a forged cache).
claim_criu_rundir() {
  if [ -L "$criu_rundir" ] || { [ -e "$criu_rundir" ] && [ "$(stat -c %u:%a "$criu_rundir")" != 0:700 ]; }; then
    rm -rf "$criu_rundir"
  fi
  mkdir -p -m 0700 "$criu_rundir"
  [ "$(stat -c %u:%a "$criu_rundir")" = 0:700 ] || { echo "$criu_rundir is not root's own directory" >&2; exit 1; }
}
if ! criu_ok || criu_stale_own; then
  bin_cache="$cache/criu-$criu_tarball_name-$criu_build.bin"
  if [ ! -x "$bin_cache" ]; then
    src=""
    if [ -n "${CRIU_SRC:-}" ]; then
      src=$CRIU_SRC
    else
      for cand in "$here/../shared/vendor/$criu_tarball_name" "$here/vendor/$criu_tarball_name" "$cache/$criu_tarball_name"; do
        [ -f "$cand" ] && { src=$cand; break; }
      done
    fi
    if [ -z "$src" ]; then
      log "no vendored CRIU source; downloading CRIU $criu_version"
      curl -fsSL "$criu_release_url" -o "$cache/criu-$criu_version.tar.gz"
      src="$cache/criu-$criu_version.tar.gz"
    fi
    build=$(mktemp -d)
    trap 'rm -rf "$build"' EXIT
    log "building CRIU from $src with ferry's patches (about 80 s)"
    if [ -d "$src" ]; then cp -a "$src/." "$build/"; else tar xzf "$src" -C "$build" --strip-components=1; fi
    for p in "$here"/scripts/criu/*.patch; do
      patch -s -p1 -d "$build" <"$p" || { echo "CRIU patch $p does not apply to $src" >&2; exit 1; }
    done
    make -C "$build" -j"$(nproc)" criu RUNDIR="$criu_rundir" GITID="v$criu_version-$criu_build" >"$cache/criu-build.log" 2>&1 \
      || { tail -30 "$cache/criu-build.log"; exit 1; }
    install -m 0755 "$build/criu/criu" "$bin_cache"
    rm -rf "$build"; trap - EXIT
  fi
  install -m 0755 "$bin_cache" /usr/local/sbin/criu
  hash -r
fi
claim_criu_rundir
criu check || { echo "criu check fails with $(command -v criu): see its output above" >&2; exit 1; }
log "CRIU: $(criu --version | head -1)"

# Lazy (post-copy) migration needs pipes larger than the default 1 MiB.
sysctl -qw fs.pipe-max-size=4194304

# --- PostgreSQL (for `ferry serve --database postgres://...` and its tests) -------------------
# Debian's cluster, started with pg_ctlcluster (no init system needed); the tests get a role that
# may create databases (each test run makes a fresh one and drops it) and find its URL in a file.
pg_version=$(ls /usr/lib/postgresql | sort -V | tail -1)
if ! pg_lsclusters -h 2>/dev/null | grep -q "^$pg_version main"; then
  log "creating PostgreSQL $pg_version cluster main"
  pg_createcluster "$pg_version" main >/dev/null
fi
if ! pg_lsclusters -h | grep -q "^$pg_version main .* online"; then
  log "starting PostgreSQL $pg_version"
  pg_ctlcluster "$pg_version" main start
fi
pg_url_file="$cache/pg-test-url"
if [ ! -s "$pg_url_file" ] || ! psql -qAt "$(cat "$pg_url_file")/postgres" -c 'SELECT 1' >/dev/null 2>&1; then
  log "creating the PostgreSQL role ferry_test"
  pw=$(head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9')
  runuser -u postgres -- psql -q -v ON_ERROR_STOP=1 -v pw="$pw" <<'SQL'
SELECT 'CREATE ROLE ferry_test LOGIN CREATEDB' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ferry_test')\gexec
ALTER ROLE ferry_test PASSWORD :'pw';
SQL
  port=$(pg_lsclusters -h | awk -v v="$pg_version" '$1 == v && $2 == "main" {print $3}')
  (umask 077; echo "postgres://ferry_test:$pw@127.0.0.1:$port" > "$pg_url_file")
fi
log "PostgreSQL: $(pg_lsclusters -h | awk -v v="$pg_version" '$1 == v && $2 == "main" {print $1, $2, $4, "port", $3}')"

# --- runtime image ---------------------------------------------------------------------
"$here/scripts/build-image.sh" "$cache/images" mrmd-python "$here/image/ferry_runtime_hooks.py"

# --- MRMD editor bundle (the notebook page and the browser tests) --------------------------
# The same files `ferry editor install --dir "$cache/editor"` writes: editor/mrmd.iife.js of the
# npm package mrmd-electron, taken from a tarball whose sha512 matches the registry's integrity.
editor_version=${MRMD_ELECTRON_VERSION:-0.5.4}
editor_dir="$cache/editor"
npm_registry=${FERRY_NPM_REGISTRY:-https://registry.npmjs.org}
if ! python3 - "$editor_dir" "$editor_version" <<'PY'
import json, os, sys
d, v = sys.argv[1], sys.argv[2]
try:
    m = json.load(open(os.path.join(d, "bundle.json")))
    ok = m["version"] == v and os.path.getsize(os.path.join(d, "mrmd.iife.js")) == m["bytes"]
except Exception:
    ok = False
sys.exit(0 if ok else 1)
PY
then
  log "fetching the MRMD editor bundle (mrmd-electron@$editor_version) from $npm_registry"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  curl -fsSL "$npm_registry/mrmd-electron/$editor_version" -o "$work/meta.json"
  python3 - "$work" "$editor_dir" "$editor_version" <<'PY'
import base64, hashlib, io, json, os, sys, tarfile, urllib.request
work, d, v = sys.argv[1:4]
dist = json.load(open(os.path.join(work, "meta.json")))["dist"]
sri = [h for h in dist.get("integrity", "").split() if h.startswith("sha512-")]
if not sri:
    sys.exit("the registry gives no sha512 integrity for mrmd-electron@%s; refusing to install" % v)
data = urllib.request.urlopen(dist["tarball"], timeout=300).read()
if hashlib.sha512(data).digest() != base64.b64decode(sri[0][7:]):
    sys.exit("%s does not match its registry integrity; nothing installed" % dist["tarball"])
js = tarfile.open(fileobj=io.BytesIO(data), mode="r:gz").extractfile("package/editor/mrmd.iife.js").read()
os.makedirs(d, exist_ok=True)
open(os.path.join(d, ".mrmd.iife.js.partial"), "wb").write(js)
os.rename(os.path.join(d, ".mrmd.iife.js.partial"), os.path.join(d, "mrmd.iife.js"))
json.dump({"package": "mrmd-electron", "version": v, "integrity": sri[0], "tarball": dist["tarball"], "bytes": len(js)},
          open(os.path.join(d, "bundle.json"), "w"), indent=2)
PY
  rm -rf "$work"; trap - EXIT
fi
log "editor bundle: $editor_dir (mrmd-electron@$editor_version)"

# --- schemathesis (the control API's fuzz test, crates/cli/tests/api_fuzz.rs) --------------------
schemathesis_version=4.32.5
st_venv="$cache/schemathesis"
if [ "$("$st_venv/bin/schemathesis" --version 2>/dev/null)" != "schemathesis, version $schemathesis_version" ]; then
  log "installing schemathesis $schemathesis_version (PyPI) into $st_venv"
  rm -rf "$st_venv"
  python3 -m venv "$st_venv"
  "$st_venv/bin/pip" install -q "schemathesis==$schemathesis_version"
fi

# --- ferry -------------------------------------------------------------------------------
if [ "${FERRY_SKIP_BUILD:-}" != 1 ]; then
  log "building ferry"
  cargo build --release --manifest-path "$here/Cargo.toml" -q
  install -m 0755 "${CARGO_TARGET_DIR:-$here/target}/release/ferry" /usr/local/bin/ferry
  # ferry's lazy-pages server: agents look for it beside the ferry binary.
  install -m 0755 "${CARGO_TARGET_DIR:-$here/target}/release/ferry-pages" /usr/local/bin/ferry-pages
fi
log "setup done"
