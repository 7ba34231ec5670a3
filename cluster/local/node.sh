#!/usr/bin/env bash
# Stop or start one simulated node of the local SLURM cluster (start.sh), as a node that dies and comes back:
#   bash cluster/local/node.sh --dir DIR kill node2    # SIGKILL its slurmd and every process it started
#   bash cluster/local/node.sh --dir DIR start node2   # start its slurmd again; SLURM takes the node back
# Each slurmd runs in a mount namespace of its own (start.sh), which its job steps and tasks inherit: `kill`
# ends exactly the processes of that namespace, as if the machine had lost power. SLURM notices after
# SlurmdTimeout (start.sh --slurmd-timeout) and marks the node DOWN; a node that answers again returns.
set -euo pipefail
DIR=${SHUFFLENET_PL_SLURM_DIR:-/tmp/shufflenet-pl-slurm}
ACTION=""
NODE=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) DIR=$2; shift 2 ;;
    -h|--help) sed -n '2,7p' "$0"; exit 0 ;;
    kill|start) ACTION=$1; NODE=${2:-}; shift $(( $# >= 2 ? 2 : 1 )) ;;
    *) echo "node.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
[ -n "$ACTION" ] && [ -n "$NODE" ] || { echo "node.sh: give kill NODE or start NODE (see --help)" >&2; exit 2; }
CONF="$DIR/etc/slurm.conf"
[ -f "$CONF" ] || { echo "node.sh: no cluster in $DIR (start it with cluster/local/start.sh)" >&2; exit 2; }
PID_FILE="$DIR/run/slurmd-$NODE.pid"
say() { printf '\033[1m[local-slurm]\033[0m %s\n' "$*"; }

alive() {  # pid -> 0 if it runs (a zombie counts as stopped)
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

case "$ACTION" in
  kill)
    [ -s "$PID_FILE" ] && alive "$(cat "$PID_FILE")" || { echo "node.sh: slurmd of $NODE does not run" >&2; exit 1; }
    namespace=$(readlink "/proc/$(cat "$PID_FILE")/ns/mnt")
    # never the host's own namespace: that would be every process of this machine
    [ "$namespace" != "$(readlink /proc/self/ns/mnt)" ] || { echo "node.sh: slurmd of $NODE shares this host's mount namespace; not killed" >&2; exit 1; }
    pids=()
    for proc in /proc/[0-9]*; do
      [ "$(readlink "$proc/ns/mnt" 2>/dev/null)" = "$namespace" ] && pids+=("${proc#/proc/}")
    done
    kill -KILL "${pids[@]}" 2>/dev/null || true
    say "killed $NODE: slurmd and ${#pids[@]} process(es) in all"
    ;;
  start)
    if [ -s "$PID_FILE" ] && alive "$(cat "$PID_FILE")"; then say "$NODE already runs"; exit 0; fi
    # node names resolve inside jobs through start.sh's copy of /etc/hosts
    unshare -m --propagation private sh -c \
      "mount --bind '$DIR/etc/hosts' /etc/hosts && exec slurmd -f '$CONF' -N '$NODE'" \
      || { echo "node.sh: slurmd $NODE did not start; see $DIR/log/slurmd-$NODE.log" >&2; exit 1; }
    say "started $NODE"
    ;;
esac
