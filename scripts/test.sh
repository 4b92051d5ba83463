#!/usr/bin/env bash
# Runs ferry's tests: unit tests, the snapshot format's property tests, and the integration tests
# on real runc + CRIU + mrmd-python (the control plane's state in SQLite; the tests of several
# control-plane instances in PostgreSQL), then a subset again with the state in PostgreSQL (a fresh
# database per test). Installs what is missing first (scripts/setup.sh; cached).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
FERRY_SKIP_BUILD=1 bash "$here/scripts/setup.sh"
cd "$here"
# The house style, enforced: the tree is rustfmt-clean and clippy-clean on the pinned toolchain.
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked --no-fail-fast -- --test-threads=2 "$@"
if [ $# -eq 0 ]; then
  export FERRY_TEST_DATABASE=postgres
  cargo test --locked -p ferry-core --lib -- control::db
  cargo test --locked -p ferry-cli --test runtime --test migration --test faults -- --test-threads=2 \
    checkpoint_and_restore serve_restart bad_input damaged_archives \
    killing_the_control_plane_mid_migration a_second_migration_of_a_moving_runtime round_trip_across_three_hosts \
    source_agent_killed_mid_transfer
fi
