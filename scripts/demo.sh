#!/usr/bin/env bash
# The ferry demo, from a fresh machine: set everything up, start ferry, create a Python runtime,
# compute in it, checkpoint it, restore it, and show that its state survived.
# Everything the demo starts is stopped and removed at the end.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/scripts/setup.sh"

state=$(mktemp -d /tmp/ferry-demo.XXXXXX)
export FERRY_STATE_DIR=$state
serve_pid=""
cleanup() {
  [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null || true
  ferry dev purge --prefix fdemo- || true
}
trap cleanup EXIT

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

ferry serve --listen 127.0.0.1:0 --agent-listen 127.0.0.1:0 --prefix fdemo- --subnet 10.209.0.0 >"$state.serve.log" 2>&1 &
serve_pid=$!
for _ in $(seq 100); do [ -f "$state/serve.addr" ] && break; sleep 0.1; done
[ -f "$state/serve.addr" ] || { cat "$state.serve.log"; exit 1; }

step ferry create --name demo --plan free
step ferry exec demo 'x = 41'
step ferry exec demo 'import pandas as pd; df = pd.DataFrame({"n": range(1_000_000)}); print(len(df))'
step ferry checkpoint demo
step ferry ls
snap=$(ferry --json snapshots ls | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
step ferry restore "$snap"
step ferry exec demo 'print("x + 1 =", x + 1, "| rows:", len(df))'
step ferry operations --runtime demo
echo
echo "The session survived checkpoint and restore."
