#!/usr/bin/env bash
# The full benchmark behind docs/BENCHMARKS.md: every suite, medians of 3 runs, into docs/bench/.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$here/docs/bench}
FERRY_SKIP_BUILD=${FERRY_SKIP_BUILD:-0} bash "$here/scripts/setup.sh"
ferry bench local     --sizes 128,256,512 --runs 3 --workload random --out "$out"
ferry bench migrate   --sizes 128,256,512 --runs 3 --workload random --baseline --out "$out"
ferry bench roundtrip --sizes 128 --runs 3 --workload random --baseline --out "$out"
ferry bench proxy     --runs 3 --out "$out"
ferry bench soak      --sizes 128 --migrations 100 --workload random --out "$out"
