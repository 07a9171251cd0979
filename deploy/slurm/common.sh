# Sourced by the batch scripts: picks the head node and its address, makes the TLS material and
# the token, starts the coordinator step there and waits until it answers.
# Sets LEHR, HEAD, HEAD_ADDR, PORT, RUN_DIR, STATE, URL, COORD (the coordinator step's pid);
# exports LEHR_TOKEN and LEHR_TLS_CA for every lehr command and step after it.
# Env: LEHR (binary), LEHR_PORT (7070; the status page on the next port), LEHR_RUN_DIR,
#      LEHR_STATE (a directory or a postgres:// URL; default: ./.lehr/slurm-CLUSTER-JOBID),
#      LEHR_TLS_DIR, LEHR_TOKEN, LEHR_LEASE_TTL (30s: how long a dead worker holds its shards).
LEHR=${LEHR:-lehr}
HEAD=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)
# The address other nodes reach the head at: its NodeAddr (the node name on most clusters).
HEAD_ADDR=$(scontrol show node "$HEAD" | tr ' ' '\n' | sed -n 's/^NodeAddr=//p' | head -n1)
HEAD_ADDR=${HEAD_ADDR:-$HEAD}
PORT=${LEHR_PORT:-7070}
# The coordinator's state: a directory (SQLite), or a PostgreSQL URL. The coordinator step reads
# it from LEHR_STATE, so a password stays out of the step's arguments (which ps, scontrol and
# sacct show), and no other step gets it.
# The run's directory holds the token, the TLS material and the submitted job's id, so a requeued
# run finds them: the state directory, or beside a PostgreSQL state LEHR_RUN_DIR (job ids restart
# with a new slurmctld state: the cluster's name keeps the default directories apart).
DEFAULT_DIR=$SLURM_SUBMIT_DIR/.lehr/slurm-${SLURM_CLUSTER_NAME:-cluster}-$SLURM_JOB_ID
STATE=${LEHR_STATE:-$DEFAULT_DIR}
unset LEHR_STATE
case "$STATE" in
  postgres://* | postgresql://*) RUN_DIR=${LEHR_RUN_DIR:-$DEFAULT_DIR} ;;
  *) RUN_DIR=${LEHR_RUN_DIR:-$STATE}; mkdir -p "$STATE" ;;
esac
mkdir -p "$RUN_DIR"
# The token lives in the run's directory, so a requeued run reuses it.
if [ -z "${LEHR_TOKEN:-}" ]; then
  [ -s "$RUN_DIR/token" ] || (umask 077; head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$RUN_DIR/token")
  LEHR_TOKEN=$(cat "$RUN_DIR/token")
fi
export LEHR_TOKEN
# TLS on both faces: a private CA and a certificate for this run's head node (by name and
# address; a requeued run may get another head), unless LEHR_TLS_DIR holds ca.pem, server.pem
# and server.key already.
TLS=${LEHR_TLS_DIR:-$RUN_DIR/tls-$HEAD}
if [ ! -f "$TLS/server.pem" ]; then
  mapfile -t ADDRS < <({ echo "$HEAD_ADDR"; getent hosts "$HEAD" | awk '{print $1}'; } | grep -vx "$HEAD" | sort -u)
  "$DEPLOY/tls/make-certs.sh" "$TLS" "$HEAD" "${ADDRS[@]}"
fi
export LEHR_TLS_CA=$TLS/ca.pem
URL=https://$HEAD_ADDR:$PORT

start_coordinator() {
  LEHR_STATE=$STATE srun --overlap --nodes=1 --ntasks=1 -w "$HEAD" "$LEHR" coordinator \
    --listen "0.0.0.0:$PORT" --http "0.0.0.0:$((PORT + 1))" \
    --tls-cert "$TLS/server.pem" --tls-key "$TLS/server.key" --lease-ttl "${LEHR_LEASE_TTL:-30s}" &
  COORD=$!
  for _ in $(seq 1 240); do
    "$LEHR" status --coordinator "$URL" >/dev/null 2>&1 && return 0
    kill -0 "$COORD" 2>/dev/null || { echo "the coordinator step ended before it answered" >&2; exit 1; }
    sleep 0.5
  done
  echo "the coordinator did not answer at $URL within 2 minutes" >&2
  exit 1
}

# Runs `lehr worker ARGS...` as a step with one task per node, each named slurm-NODENAME.
start_workers() {
  # --overlap: the steps share the allocation's CPUs (the coordinator is light); without it the
  # worker step on the head node waits for the CPUs the coordinator step holds, forever on a
  # one-node allocation. --kill-on-bad-exit=0: one worker dying leaves the others running.
  srun --overlap --ntasks="$SLURM_JOB_NUM_NODES" --ntasks-per-node=1 --kill-on-bad-exit=0 \
    bash -c 'exec "$0" worker --name "slurm-$SLURMD_NODENAME" "$@"' "$LEHR" "$@" &
  WORKERS=$!
}

# Ends the given steps and the coordinator's, and waits for them.
stop_steps() {
  kill "$@" "$COORD" 2>/dev/null || true
  wait "$@" "$COORD" 2>/dev/null || true
}
