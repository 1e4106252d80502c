#!/bin/sh
# Forms a 3-primary Valkey Cluster of valkey-1, valkey-2 and valkey-3 (docker-compose.cluster.yml):
# each primary takes a third of the 16384 slots, then the nodes meet. Run once by the
# valkey-cluster-init service; a cluster already formed is left as it is.
set -eu

state() {
  valkey-cli -h valkey-1 cluster info | tr -d '\r' | sed -n 's/^cluster_state://p'
}

if [ "$(state)" = "ok" ]; then
  echo "the cluster is already formed"
  exit 0
fi

valkey-cli -h valkey-1 cluster addslotsrange 0 5460
valkey-cli -h valkey-2 cluster addslotsrange 5461 10922
valkey-cli -h valkey-3 cluster addslotsrange 10923 16383
for node in valkey-2 valkey-3; do
  # CLUSTER MEET takes an address, not a name.
  address=$(getent hosts "$node" | awk '{ print $1; exit }')
  valkey-cli -h valkey-1 cluster meet "$address" 6379
done

tries=0
until [ "$(state)" = "ok" ]; do
  tries=$((tries + 1))
  if [ "$tries" -gt 60 ]; then
    echo "the cluster did not reach cluster_state:ok in 60 s" >&2
    valkey-cli -h valkey-1 cluster nodes >&2
    exit 1
  fi
  sleep 1
done
valkey-cli -h valkey-1 cluster nodes
echo "cluster formed: 3 primaries"
