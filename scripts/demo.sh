#!/usr/bin/env bash
# The ferry demo, from a fresh machine: set everything up, start two simulated hosts (network
# namespaces, an agent each) and ferry serve, create a Python runtime, compute in it, checkpoint
# and restore it, then move it live between the hosts (stop-copy, then lazy) behind one proxy URL,
# and show that its state survived and how long it was frozen.
# Everything the demo starts is stopped and removed at the end.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
bash "$here/scripts/setup.sh"

state=$(mktemp -d /tmp/ferry-demo.XXXXXX)
export FERRY_STATE_DIR=$state
cleanup() { ferry dev down >/dev/null 2>&1 || true; rm -rf "$state"; }
trap cleanup EXIT

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step ferry dev up --hosts 2 --prefix fdemo- --net 10.208.0.0 --subnet 10.209.0.0 --listen 127.0.0.1:0 --proxy-listen 127.0.0.1:0
proxy=$(cat "$state/proxy.addr")
step ferry host ls
step ferry create --name demo --host h1 --plan pro
step ferry exec demo 'x = 41'
step ferry exec demo 'import pandas as pd; df = pd.DataFrame({"n": range(1_000_000)}); print(len(df))'

step ferry checkpoint demo
snap=$(ferry --json snapshots ls | python3 -c 'import json,sys; print(json.load(sys.stdin)[-1]["id"])')
step ferry restore "$snap"
step ferry exec demo 'print("after restore: x + 1 =", x + 1)'

step ferry migrate demo --to h2
token=$(ferry token demo)
printf '\n\033[1m$ curl -H "Authorization: Bearer $(ferry token demo)" %s\033[0m\n' "http://$proxy/r/demo/mrp/v1/execute"
curl -s "http://$proxy/r/demo/mrp/v1/execute" -H "Authorization: Bearer $token" -H 'content-type: application/json' \
  -d '{"code": "print(\"on h2 through the proxy: x + 1 =\", x + 1, \"| rows:\", len(df))"}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["stdout"], end="")'
step ferry migrate demo --to h1 --mode lazy
step ferry exec demo 'print("back on h1: x + 1 =", x + 1, "| rows:", len(df))'
step ferry migrations
step ferry ls
echo
echo "The session survived checkpoint, restore and two live migrations; see the downtime column."
