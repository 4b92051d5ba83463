#!/usr/bin/env bash
# Runs ferry's tests: unit tests, the snapshot format's property tests, and the integration tests
# on real runc + CRIU + mrmd-python. Installs what is missing first (scripts/setup.sh; cached).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
FERRY_SKIP_BUILD=1 bash "$here/scripts/setup.sh"
cd "$here"
cargo test --workspace --locked -- --test-threads=2 "$@"
