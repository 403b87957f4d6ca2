#!/bin/bash
# A one-node Slurm cluster in a folder, for the sweep tests and for trying `--backend slurm`:
#   scripts/slurm-local.sh start DIR   # munged + slurmctld + slurmd; prints `export SLURM_CONF=...`
#   scripts/slurm-local.sh stop DIR    # stops the daemons it started (by pid)
# Needs the Debian packages slurmctld slurmd slurm-client munge (`make test` installs them) and
# root (slurmd runs jobs as their user). Everything it writes stays in DIR.
set -euo pipefail
cmd=${1:?usage: slurm-local.sh start|stop DIR}
dir=$(realpath -m "${2:?usage: slurm-local.sh start|stop DIR}")

stop() {
  for d in slurmd slurmctld munged; do
    if [ -f "$dir/$d.pid" ]; then
      pid=$(cat "$dir/$d.pid")
      kill "$pid" 2>/dev/null || true
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      rm -f "$dir/$d.pid"
    fi
  done
}

if [ "$cmd" = stop ]; then stop; exit 0; fi
[ "$cmd" = start ] || { echo "usage: slurm-local.sh start|stop DIR" >&2; exit 2; }
for b in munged slurmctld slurmd sbatch; do
  command -v "$b" >/dev/null || { echo "slurm-local: $b not found: install slurmctld slurmd slurm-client munge (make test does)" >&2; exit 1; }
done
mkdir -p "$dir"/{state,spool,log}
host=$(hostname -s)
cpus=$(nproc)
mem_mib=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))

# munge: its own key, socket and pid in DIR, so it never meets a system munged.
dd if=/dev/urandom bs=1 count=1024 of="$dir/munge.key" status=none
chmod 400 "$dir/munge.key"
munged --key-file="$dir/munge.key" --socket="$dir/munge.sock" --pid-file="$dir/munged.pid" \
       --log-file="$dir/log/munged.log" --seed-file="$dir/munge.seed" --force

cat > "$dir/slurm.conf" <<CONF
ClusterName=certlab
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge.sock
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
ReturnToService=2
MinJobAge=3600
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
SlurmctldPort=$(( 17000 + RANDOM % 2000 ))
SlurmdPort=$(( 19000 + RANDOM % 2000 ))
NodeName=$host CPUs=$cpus RealMemory=$mem_mib State=UNKNOWN
PartitionName=local Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF

export SLURM_CONF="$dir/slurm.conf"
slurmctld -f "$SLURM_CONF" -i
slurmd -f "$SLURM_CONF"
for _ in $(seq 100); do
  if sinfo -h -o %T 2>/dev/null | grep -q idle; then
    echo "export SLURM_CONF=$SLURM_CONF"
    exit 0
  fi
  sleep 0.2
done
echo "slurm-local: the node did not come up idle; sinfo says: $(sinfo 2>&1 | tr '\n' ' ')" >&2
tail -5 "$dir"/log/*.log >&2 || true
stop
exit 1
