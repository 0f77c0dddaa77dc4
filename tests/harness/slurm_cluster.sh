#!/bin/bash
# slurm_cluster.sh — start / stop a real one-node Slurm cluster (Debian's
# slurm-wlm + munge) under a temporary folder, without systemd.
#
#   slurm_cluster.sh start DIR [MAX_ARRAY_SIZE]   -> prints "export SLURM_CONF=..."
#   slurm_cluster.sh stop DIR
#
# munged runs on its own socket with its own key (as the munge user when we
# are root), slurmctld and `slurmd -N localhost` run from DIR/slurm.conf on
# free ports, so several test clusters and a system one can coexist.  Job
# completions are appended to DIR/jobcomp.txt (jobcomp/filetxt: no slurmdbd).
# The node offers SQ_SLURM_CPUS CPUs (default 4, config_overrides: more
# than the machine has, so a throttle below it is observable with tasks that
# mostly sleep).
# Exit status 77 = the tools are not installed (the caller SKIPs).
set -u
cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR [MAX_ARRAY_SIZE]" >&2; exit 2; }

have() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/sbin/$1" ]; }
bin() { command -v "$1" 2>/dev/null || echo "/usr/sbin/$1"; }

stop_cluster() {
  [ -f "$dir/slurm.conf" ] && SLURM_CONF="$dir/slurm.conf" scontrol shutdown >/dev/null 2>&1
  for i in $(seq 1 50); do
    alive=0
    for f in slurmctld.pid slurmd.pid; do
      [ -f "$dir/$f" ] && kill -0 "$(cat "$dir/$f")" 2>/dev/null && alive=1
    done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  for f in slurmctld.pid slurmd.pid munged.pid; do
    if [ -f "$dir/$f" ]; then
      pid=$(cat "$dir/$f")
      kill "$pid" 2>/dev/null
      for i in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null
    fi
  done
  if [ -f "$dir/munge_dir" ]; then
    mdir=$(cat "$dir/munge_dir")
    case "$mdir" in */sq-munge.*) rm -rf "$mdir" ;; esac
  fi
  return 0
}

free_port() {
  local p
  for i in $(seq 1 50); do
    p=$(( 20000 + RANDOM % 20000 ))
    if ! (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null; then echo $p; return; fi
  done
  echo 26817
}

if [ "$cmd" = stop ]; then stop_cluster; exit 0; fi
[ "$cmd" = start ] || { echo "unknown command $cmd" >&2; exit 2; }

for t in munged slurmctld slurmd sbatch scontrol squeue; do
  have $t || { echo "slurm_cluster: $t not installed (apt-get install slurm-wlm munge)" >&2; exit 77; }
done
maxarray=${3:-8}
mkdir -p "$dir"/{state,spool}
user=$(id -un)

# --- munge: own key, own socket ----------------------------------------------
# Its folder lives outside DIR: DIR may be private to us, and munged (run as
# the munge user when we are root) must reach it.
mdir=$(mktemp -d "${TMPDIR:-/tmp}/sq-munge.XXXXXX")
chmod 0755 "$mdir"
echo "$mdir" > "$dir/munge_dir"
dd if=/dev/urandom bs=1 count=1024 of="$mdir/munge.key" 2>/dev/null
chmod 0400 "$mdir/munge.key"
run_munge=()
if [ "$(id -u)" = 0 ] && id munge >/dev/null 2>&1; then
  chown -R munge:munge "$mdir"
  run_munge=(runuser -u munge --)
fi
"${run_munge[@]}" "$(bin munged)" --socket="$mdir/munge.socket" --key-file="$mdir/munge.key" \
  --pid-file="$mdir/munged.pid" --log-file="$mdir/munged.log" \
  --seed-file="$mdir/munged.seed" --force 2>"$dir/munged.err" || {
  echo "slurm_cluster: munged failed:" >&2; cat "$dir/munged.err" "$mdir/munged.log" >&2 2>/dev/null; exit 1; }
for i in $(seq 1 50); do [ -S "$mdir/munge.socket" ] && break; sleep 0.1; done
cp "$mdir/munged.pid" "$dir/munged.pid" 2>/dev/null

# --- slurm.conf ----------------------------------------------------------------
ctld_port=$(free_port); slurmd_port=$(free_port)
while [ "$slurmd_port" = "$ctld_port" ]; do slurmd_port=$(free_port); done
cat > "$dir/slurm.conf" <<EOF
ClusterName=sqtest
SlurmctldHost=$(hostname)(127.0.0.1)
SlurmctldPort=$ctld_port
SlurmdPort=$slurmd_port
SlurmUser=$user
SlurmdUser=$user
AuthType=auth/munge
AuthInfo=socket=$mdir/munge.socket
CredType=cred/munge
MpiDefault=none
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobcomp.txt
JobAcctGatherType=jobacct_gather/none
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
MaxArraySize=$maxarray
MinJobAge=3600
KillWait=5
ReturnToService=2
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
InactiveLimit=0
SlurmdParameters=config_overrides
NodeName=localhost NodeAddr=127.0.0.1 CPUs=${SQ_SLURM_CPUS:-4} State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF
export SLURM_CONF="$dir/slurm.conf"
"$(bin slurmctld)" -f "$SLURM_CONF" 2>"$dir/slurmctld.err" || { cat "$dir/slurmctld.err" "$dir/slurmctld.log" >&2; stop_cluster; exit 1; }
"$(bin slurmd)" -f "$SLURM_CONF" -N localhost 2>"$dir/slurmd.err" || { cat "$dir/slurmd.err" "$dir/slurmd.log" >&2; stop_cluster; exit 1; }
for i in $(seq 1 100); do
  state=$(sinfo -h -n localhost -o %T 2>/dev/null)
  case "$state" in idle*|mix*|alloc*) break ;; esac
  sleep 0.1
done
case "$state" in
  idle*|mix*|alloc*) ;;
  *) echo "slurm_cluster: node not ready (state '$state')" >&2; tail -20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2; stop_cluster; exit 1 ;;
esac
echo "export SLURM_CONF=$SLURM_CONF"
