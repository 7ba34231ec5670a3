#!/usr/bin/env bash
# Start a real SLURM cluster on this host, for tests and for trying `launch.py --cluster slurm` without a
# cluster: munged, slurmctld and one slurmd per simulated node (Debian's packages; no systemd, no
# cgroups). Everything lives under one state folder; `stop.sh` stops exactly the daemons started here.
#
#   bash cluster/local/start.sh                      # 2 nodes x 2 CPUs, state in /tmp/shufflenet-pl-slurm
#   source /tmp/shufflenet-pl-slurm/env.sh            # SLURM_CONF + an `sacct` stand-in on PATH
#   sinfo; python launch.py --preset local-slurm ...  # then submit
#   bash cluster/local/stop.sh
#
# Options: --dir DIR (state folder; env SHUFFLENET_PL_SLURM_DIR), --nodes N (simulated nodes, default 2),
#          --cpus N (CPUs per node, default: this host's), --port P (slurmctld port; slurmd use P+1..P+N,
#          default 6817), --slurmd-timeout S (seconds without an answer before SLURM marks a node DOWN,
#          default 300, SLURM's; tests of lost nodes use a few seconds), --no-install (fail instead of
#          apt-get installing missing packages).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"

DIR=${SHUFFLENET_PL_SLURM_DIR:-/tmp/shufflenet-pl-slurm}
NODES=2
CPUS=$(nproc)
PORT=6817
SLURMD_TIMEOUT=300
INSTALL=1
while [ $# -gt 0 ]; do
  case "$1" in
    --dir) DIR=$2; shift 2 ;;
    --nodes) NODES=$2; shift 2 ;;
    --cpus) CPUS=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    --slurmd-timeout) SLURMD_TIMEOUT=$2; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    -h|--help) sed -n '2,16p' "$0"; exit 0 ;;
    *) echo "start.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$NODES" in ''|*[!0-9]*|0) echo "start.sh: --nodes must be a positive integer, got '$NODES'" >&2; exit 2 ;; esac
case "$SLURMD_TIMEOUT" in ''|*[!0-9]*|0) echo "start.sh: --slurmd-timeout must be a positive integer, got '$SLURMD_TIMEOUT'" >&2; exit 2 ;; esac
mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
say() { printf '\033[1m[local-slurm]\033[0m %s\n' "$*"; }
die() { echo "start.sh: $*" >&2; exit 1; }

# --- packages ----------------------------------------------------------------------------------
PACKAGES=(slurmctld slurmd slurm-client munge)
missing=()
for pkg in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$INSTALL" = 1 ] && command -v apt-get >/dev/null \
    || die "missing packages: ${missing[*]}; install them with: sudo apt-get install --no-install-recommends ${missing[*]}"
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  say "apt-get install ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
[ "$(id -u)" = 0 ] || die "the daemons run as root here (SlurmUser=root, no systemd); run with sudo"

alive() {  # pid file -> 0 if that process runs (a zombie counts as stopped)
  [ -s "$1" ] || return 1
  local pid state; pid=$(cat "$1")
  state=$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null) || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

if alive "$DIR/run/slurmctld.pid"; then
  say "already running (state in $DIR); stop it with: bash $HERE/stop.sh --dir $DIR"
  exit 0
fi

HOST=$(hostname -s)
MEM_MB=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / NODES ))
rm -rf "$DIR"/{state,spool,run,log,munge,etc,bin}
mkdir -p "$DIR"/{state,spool,run,log,munge,etc,bin}
chmod 755 "$DIR" "$DIR/munge"

# --- munge: its own key and socket -------------------------------------------------------------
head -c 1024 /dev/urandom > "$DIR/munge/munge.key"
chmod 600 "$DIR/munge/munge.key"
munged --force -S "$DIR/munge/munge.socket" --key-file="$DIR/munge/munge.key" --pid-file="$DIR/run/munged.pid" \
  --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" \
  || die "munged did not start; see $DIR/log/munged.log"

# --- slurm.conf ---------------------------------------------------------------------------------
# Node names must resolve inside jobs (Lightning and submitit take MASTER_ADDR from the node list):
# each slurmd runs in its own mount namespace where this copy of /etc/hosts is bind-mounted.
{ cat /etc/hosts; echo "127.0.0.1 $(seq -f 'node%g' -s ' ' 1 "$NODES")"; } > "$DIR/etc/hosts"
cat > "$DIR/etc/slurm.conf" <<CONF
# Written by cluster/local/start.sh: a single-host cluster of $NODES simulated nodes.
ClusterName=local
SlurmctldHost=$HOST(127.0.0.1)
SlurmctldPort=$PORT
SlurmUser=root
AuthType=auth/munge
AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=10
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
# A node set DOWN (scontrol update ... state=down) stays DOWN until resumed; one that stopped answering
# returns when it answers again.
ReturnToService=1
# A node whose slurmd does not answer for this long is DOWN (NOT_RESPONDING before): its jobs are requeued.
SlurmdTimeout=$SLURMD_TIMEOUT
# SLURM's default: what a SIGTERM-ed job (scancel, preemption) has to save its checkpoint before SIGKILL.
KillWait=30
# Fast restarts of requeued jobs (the default credential expiry makes a requeue wait ~2.5 min).
SchedulerParameters=bf_interval=1,sched_interval=2
# Keep finished jobs visible to squeue, which the sacct stand-in reads.
MinJobAge=3600
NodeName=node[1-$NODES] NodeHostname=$HOST NodeAddr=127.0.0.1 Port=[$((PORT + 1))-$((PORT + NODES))] CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
CONF
cp "$HERE/sacct" "$DIR/bin/sacct"
chmod 755 "$DIR/bin/sacct"
cat > "$DIR/env.sh" <<ENV
# source me: SLURM clients for the local cluster in $DIR
export SLURM_CONF=$DIR/etc/slurm.conf
case ":\$PATH:" in *":$DIR/bin:"*) ;; *) export PATH=$DIR/bin:\$PATH ;; esac
ENV
export SLURM_CONF=$DIR/etc/slurm.conf

# --- daemons --------------------------------------------------------------------------------------
slurmctld -i -f "$SLURM_CONF" || die "slurmctld did not start; see $DIR/log/slurmctld.log"
for k in $(seq 1 "$NODES"); do
  bash "$HERE/node.sh" --dir "$DIR" start "node$k" >/dev/null || die "slurmd node$k did not start"
done

# --- wait until every node is idle ---------------------------------------------------------------
for _ in $(seq 1 60); do
  states=$(sinfo -h -N -o '%t' 2>/dev/null | sort -u | tr '\n' ' ')
  if [ "$states" = "idle " ]; then
    say "up: $NODES node(s) x $CPUS CPUs, partition 'debug' (state in $DIR)"
    say "use it with:  source $DIR/env.sh   (then sinfo, sbatch, python launch.py --preset local-slurm ...)"
    say "stop it with: bash $HERE/stop.sh --dir $DIR"
    exit 0
  fi
  sleep 0.5
done
echo "start.sh: nodes not idle after 30 s (sinfo: ${states:-no answer}); logs in $DIR/log" >&2
bash "$HERE/stop.sh" --dir "$DIR" >&2 || true
exit 1
