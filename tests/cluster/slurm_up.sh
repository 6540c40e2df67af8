#!/usr/bin/env bash
# Install and start a single-node SLURM cluster on this machine (Debian's slurmctld + slurmd + munge), with one
# partition named "debug" holding every core. Idempotent: a cluster that already answers is left as it is.
# Needs root (apt-get, daemons). Used by tests/cluster (pytest -m slurm); about 2 minutes the first time.
set -euo pipefail

# One at a time: each pytest worker runs this at session start, and two restarts at once leave the node down.
exec 9>/tmp/ddpm_lab_slurm_up.lock
flock 9

# Every core of the machine. Not plain `nproc`: it honours OMP_NUM_THREADS, which the test workers set to
# their share of the cores, and a 1-CPU node can never start a 2-task job (it stays queued for ever).
cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)

partition_up() { timeout 10 sinfo -h -p debug -o %a 2>/dev/null | grep -q up; }
node_ready() { timeout 10 sinfo -h -p debug -o %T 2>/dev/null | grep -Eq 'idle|mixed|allocated'; }
# A cluster started with fewer CPUs than the machine has (e.g. by an older slurm_up.sh) is started again.
node_cpus() { timeout 10 sinfo -h -p debug -o %c 2>/dev/null | head -n1 | tr -dc 0-9; }

if command -v sinfo >/dev/null && partition_up && node_ready && [ "$(node_cpus)" = "$cpus" ]; then
    echo "slurm_up: cluster already up ($cpus CPUs)"; exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "slurm_up: needs root to install and start slurmctld/slurmd/munge" >&2; exit 3
fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
fi

host=$(hostname -s)
# 90% of memory, in MiB, so that --mem requests are satisfiable.
mem=$(awk '/MemTotal/ {printf "%d", $2 / 1024 * 0.9}' /proc/meminfo)
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge /var/lib/munge /var/log/munge
cat > /etc/slurm/slurm.conf <<CONF
ClusterName=localhost
SlurmctldHost=${host}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
# No cgroups in a container: plain process tracking, no task affinity.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MpiDefault=none
SchedulerType=sched/backfill
SlurmdParameters=config_overrides
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=debug Nodes=${host} Default=YES MaxTime=INFINITE State=UP
CONF

chown -R munge:munge /etc/munge /run/munge /var/lib/munge /var/log/munge 2>/dev/null || true
if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
    chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
fi
# The daemons must not inherit the lock's fd 9: they outlive this script, and a daemon holding the lock makes
# every later slurm_up.sh (the next test session) wait on flock for ever.
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged 9>&-
pkill -x slurmctld 2>/dev/null || true
pkill -x slurmd 2>/dev/null || true
sleep 1
/usr/sbin/slurmctld 9>&-
/usr/sbin/slurmd 9>&-
for _ in $(seq 1 60); do
    if partition_up && node_ready; then
        scontrol update nodename="${host}" state=resume >/dev/null 2>&1 || true
        # A job that uses every core must start now, not queue (a node that cannot hold it never will).
        if ! timeout 120 srun --immediate=60 -p debug -N1 -n "$cpus" true; then
            echo "slurm_up: the cluster is up but a ${cpus}-task job did not start; logs: /var/log/slurm/" >&2
            sinfo -N -l >&2 || true; exit 1
        fi
        echo "slurm_up: cluster up ($host, $cpus CPUs, partition debug)"; exit 0
    fi
    sleep 1
done
echo "slurm_up: the cluster did not come up; logs: /var/log/slurm/" >&2
sinfo -N -l >&2 || true
tail -n 20 /var/log/slurm/slurmctld.log /var/log/slurm/slurmd.log >&2 || true
exit 1
