#!/usr/bin/env bash
# Quick start on a fresh Debian machine (as root): install what Hatchway needs, start a
# local cluster (API server on SQLite + one node agent running runc containers), create
# a demo pod and run a command in its container -- with hatchway, then with kubectl.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"

hatchway up --detach
hatchway get pod demo >/dev/null 2>&1 || hatchway run demo --image busybox -- sleep 86400
echo "waiting for pod demo to be Running..."
for _ in $(seq 1 120); do
  phase=$(hatchway get pod demo -o jsonpath='{.status.phase}' 2>/dev/null || true)
  [ "$phase" = Running ] && break
  sleep 0.5
done

set -x
hatchway exec demo -- sh -c 'echo "hello from $(hostname), a runc container"; uname -srm'
if command -v kubectl >/dev/null; then
  kubectl exec demo -- sh -c 'echo "the same with kubectl: $(hostname)"'
fi
