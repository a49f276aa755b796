#!/usr/bin/env bash
# A two-node Ray cluster on this machine: a head and a second raylet, both on 127.0.0.1.
# For trying cluster behaviour (jobs, spreading, node loss) without a cluster; the tests use it.
#
#   cluster/local/two-node.sh start    # as daemons; prints the job server address
#   stellar-ray submit infer --config jobs/configs/infer-cinn-small.yaml --address http://127.0.0.1:8266
#   cluster/local/two-node.sh stop     # NB: `ray stop` stops every Ray process on the machine
#
#   cluster/local/two-node.sh run      # in the foreground: both nodes stop with this script
#                                      # (Ctrl-C, or a signal to its process group); the tests
#                                      # use this, beside their own local cluster
#
# Settings (environment): RAY_GCS_PORT (6390), RAY_DASHBOARD_PORT (8266), AGENT_PORT_HEAD
# (52366), AGENT_PORT_WORKER (52367), CPUS_PER_NODE (1), MEMORY_PER_NODE bytes (2 GiB),
# OBJECT_STORE_PER_NODE bytes (256 MiB), RAY_TMPDIR. Memory is given per node explicitly:
# otherwise both raylets count the machine's memory. Each node's dashboard agent (which
# runs submitted jobs) gets its own port, so that neither collides with the other or with
# another Ray instance on the machine (Ray's default, 52365).
set -euo pipefail

gcs_port="${RAY_GCS_PORT:-6390}"
dashboard_port="${RAY_DASHBOARD_PORT:-8266}"
cpus="${CPUS_PER_NODE:-1}"
memory="${MEMORY_PER_NODE:-2147483648}"
object_store="${OBJECT_STORE_PER_NODE:-268435456}"
agent_head="${AGENT_PORT_HEAD:-52366}"
agent_worker="${AGENT_PORT_WORKER:-52367}"
ray_bin="${RAY_BIN:-ray}"

head() {
  "${ray_bin}" start --head --node-ip-address=127.0.0.1 --port="${gcs_port}" \
    --dashboard-host=127.0.0.1 --dashboard-port="${dashboard_port}" \
    --num-cpus="${cpus}" --num-gpus=0 --memory="${memory}" \
    --object-store-memory="${object_store}" --dashboard-agent-listen-port="${agent_head}" \
    --disable-usage-stats "$@"
}

worker() {
  "${ray_bin}" start --address="127.0.0.1:${gcs_port}" --node-ip-address=127.0.0.1 \
    --num-cpus="${cpus}" --num-gpus=0 --memory="${memory}" \
    --object-store-memory="${object_store}" --dashboard-agent-listen-port="${agent_worker}" \
    --disable-usage-stats "$@"
}

wait_for_head() {
  for _ in $(seq 1 120); do
    if "${ray_bin}" health-check --address="127.0.0.1:${gcs_port}" >/dev/null 2>&1; then
      return 0
    fi
    sleep 0.5
  done
  echo "the head did not come up on port ${gcs_port}" >&2
  return 1
}

run() {
  trap 'kill 0' EXIT  # take both nodes down with this script
  head --block &
  wait_for_head
  worker --block &
  echo "job server: http://127.0.0.1:${dashboard_port}"
  wait
}

case "${1:-}" in
  start) head && worker && echo "job server: http://127.0.0.1:${dashboard_port}" ;;
  run) run ;;
  stop) "${ray_bin}" stop --force ;;
  *) echo "usage: $0 start|run|stop" >&2; exit 2 ;;
esac
