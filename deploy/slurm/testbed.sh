#!/usr/bin/env bash
# A real Slurm cluster on this machine, for tests and for trying the batch scripts: munge,
# slurmctld and one slurmd per node (all on 127.0.0.1, each on its own port), Debian's
# slurm-wlm 22.05 packages.
#   deploy/slurm/testbed.sh install              # apt-get the packages (root)
#   deploy/slurm/testbed.sh start DIR [NODES] [CPUS]   # default 2 nodes of 2 CPUs
#   deploy/slurm/testbed.sh stop DIR
# `start` writes DIR/slurm.conf (state, spool and logs under DIR), prints `export
# SLURM_CONF=DIR/slurm.conf` and returns once every node is idle. Ports come from free ones.
set -euo pipefail
cmd=${1:?usage: testbed.sh install | start DIR [NODES] [CPUS] | stop DIR}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

case $cmd in
install)
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null; then exit 0; fi
  [ "$(id -u)" = 0 ] || { echo "installing Slurm needs root (apt-get install slurmctld slurmd slurm-client munge)" >&2; exit 2; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
  ;;
start)
  DIR=$(realpath -m "${2:?start DIR}")
  NODES=${3:-2}
  CPUS=${4:-2}
  mkdir -p "$DIR"/{state,log,spool}
  # munge: one daemon per machine, shared by every testbed
  if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    mkdir -p /run/munge /var/log/munge /var/lib/munge
    [ -s /etc/munge/munge.key ] || { dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null; }
    chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
    chmod 0700 /etc/munge; chmod 0400 /etc/munge/munge.key
    su -s /bin/sh munge -c /usr/sbin/munged 2>/dev/null || /usr/sbin/munged --force
    for _ in $(seq 1 50); do munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break; sleep 0.1; done
  fi
  CTLD_PORT=$(free_port)
  NAME=t$(basename "$DIR" | tr -dc 'a-z0-9' | tail -c 8)
  {
    cat <<CONF
ClusterName=$NAME
SlurmctldHost=localhost(127.0.0.1)
SlurmctldPort=$CTLD_PORT
AuthType=auth/munge
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SlurmdParameters=config_overrides
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
SchedulerType=sched/backfill
KillWait=5
MinJobAge=600
CONF
    for i in $(seq 1 "$NODES"); do
      echo "NodeName=${NAME}n$i NodeHostname=localhost NodeAddr=127.0.0.1 Port=$(free_port) CPUs=$CPUS RealMemory=1000"
    done
    echo "PartitionName=test Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
  } > "$DIR/slurm.conf"
  export SLURM_CONF=$DIR/slurm.conf
  slurmctld -f "$SLURM_CONF"
  for i in $(seq 1 "$NODES"); do slurmd -f "$SLURM_CONF" -N "${NAME}n$i"; done
  for _ in $(seq 1 100); do
    idle=$(sinfo -h -N -t idle -o '%N' 2>/dev/null | sort -u | wc -l)
    [ "$idle" -ge "$NODES" ] && { echo "export SLURM_CONF=$SLURM_CONF"; exit 0; }
    sleep 0.2
  done
  echo "the testbed's nodes did not become idle; logs in $DIR/log" >&2
  sinfo -N >&2 || true
  exit 1
  ;;
stop)
  DIR=$(realpath -m "${2:?stop DIR}")
  export SLURM_CONF=$DIR/slurm.conf
  [ -f "$SLURM_CONF" ] || exit 0
  scancel --full -u root 2>/dev/null || true
  for pid in "$DIR"/slurmd-*.pid "$DIR"/slurmctld.pid; do
    [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
  done
  for _ in $(seq 1 50); do
    alive=0
    for pid in "$DIR"/slurmd-*.pid "$DIR"/slurmctld.pid; do
      [ -f "$pid" ] && kill -0 "$(cat "$pid")" 2>/dev/null && alive=1
    done
    [ $alive = 0 ] && break
    sleep 0.1
  done
  ;;
*)
  echo "usage: testbed.sh install | start DIR [NODES] [CPUS] | stop DIR" >&2
  exit 2
  ;;
esac
