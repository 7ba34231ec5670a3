#!/usr/bin/env bash
# Stop the local SLURM cluster started by start.sh: cancel its jobs, then stop the daemons it started,
# by the PIDs in its state folder (nothing else is touched). Safe to run twice.
#   bash cluster/local/stop.sh [--dir DIR] [--purge]     # --purge also deletes the state folder
set -uo pipefail
DIR=${SHUFFLENET_PL_SLURM_DIR:-/tmp/shufflenet-pl-slurm}
PURGE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) DIR=$2; shift 2 ;;
    --purge) PURGE=1; shift ;;
    -h|--help) sed -n '2,4p' "$0"; exit 0 ;;
    *) echo "stop.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
say() { printf '\033[1m[local-slurm]\033[0m %s\n' "$*"; }
[ -d "$DIR/run" ] || { say "nothing to stop in $DIR"; exit 0; }

running() {  # pid expected-name -> 0 if that pid runs that program (a zombie counts as stopped)
  local state comm
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  comm=$(cat "/proc/$1/comm" 2>/dev/null) || return 1
  [ "$state" != Z ] && [ "$comm" = "$2" ]
}
stop_pid() {  # pid-file program
  local file=$1 name=$2 pid
  [ -s "$file" ] || return 0
  pid=$(cat "$file")
  if running "$pid" "$name"; then
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 50); do running "$pid" "$name" || break; sleep 0.2; done
    if running "$pid" "$name"; then kill -KILL "$pid" 2>/dev/null; say "killed $name ($pid)"; else say "stopped $name ($pid)"; fi
  fi
  rm -f "$file"
}

# Jobs first, so that no slurmstepd outlives its slurmd.
if [ -f "$DIR/etc/slurm.conf" ] && [ -s "$DIR/run/slurmctld.pid" ] && running "$(cat "$DIR/run/slurmctld.pid")" slurmctld; then
  export SLURM_CONF="$DIR/etc/slurm.conf"
  jobs=$(squeue -h -t pending,running,suspended,configuring,completing -o %A 2>/dev/null | sort -u | tr '\n' ' ')
  if [ -n "${jobs// }" ]; then
    say "cancelling jobs: $jobs"
    # shellcheck disable=SC2086
    scancel $jobs 2>/dev/null
    for _ in $(seq 1 60); do
      left=$(squeue -h -t running,completing -o %A 2>/dev/null | wc -l)
      [ "$left" = 0 ] && break
      sleep 0.5
    done
  fi
fi
for file in "$DIR"/run/slurmd-*.pid; do [ -e "$file" ] && stop_pid "$file" slurmd; done
stop_pid "$DIR/run/slurmctld.pid" slurmctld
stop_pid "$DIR/run/munged.pid" munged
if [ "$PURGE" = 1 ]; then rm -rf "$DIR"; say "removed $DIR"; fi
exit 0
