#!/usr/bin/env bash
# `make run`: migrate, then run and supervise the API, the delivery worker, the sweep consumer and beat.
#
# - The banner is printed only once /readyz answered; if the API cannot come up (port taken, crash, no answer
#   before the deadline) the script says what failed and exits non-zero.
# - A process that exits later is restarted with a backoff (1, 2, 4 ... 30 s), and the script says so; one
#   process exiting never ends the others.
# - Every wait is bounded (curl --max-time, an overall start-up deadline), and the first Ctrl-C/SIGTERM stops
#   the children (by pid: TERM, then KILL after a grace period) and exits.
set -uo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export HERALD_BOOTSTRAP_ADMIN_KEY="${HERALD_BOOTSTRAP_ADMIN_KEY:-hk_local_dev_admin_key}"
export HERALD_EGRESS_ALLOW_CIDRS="${HERALD_EGRESS_ALLOW_CIDRS:-127.0.0.1/32}"
# The API binds 127.0.0.1 below; the worker's metrics must not be more exposed than the API.
export HERALD_WORKER_METRICS_HOST="${HERALD_WORKER_METRICS_HOST:-127.0.0.1}"
PORT="${HERALD_PORT:-8000}"
METRICS_PORT="${HERALD_WORKER_METRICS_PORT:-9808}"
QUEUE="${HERALD_QUEUE_NAME:-herald}"
READY_TIMEOUT_S="${HERALD_RUN_READY_TIMEOUT_S:-60}"
STOP_GRACE_S=10
# Logs and pid files; a test points this elsewhere so it never touches a real `make run`'s.
RUN="${HERALD_RUN_DIR:-.run}"
mkdir -p "$RUN"

say() { printf 'herald: %s\n' "$*" >&2; }

# --- who holds a port (best effort: ss, then lsof) ---------------------------------------------------------
port_holder() {
  local port=$1 out=""
  if command -v ss >/dev/null 2>&1; then
    out=$(ss -ltnpH "sport = :$port" 2>/dev/null | grep -o 'users:(([^)]*))' | head -n1)
  fi
  if [ -z "$out" ] && command -v lsof >/dev/null 2>&1; then
    out=$(lsof -nP -iTCP:"$port" -sTCP:LISTEN 2>/dev/null | awk 'NR==2 {print $1 " (pid " $2 ")"}')
  fi
  printf '%s' "${out:-an unknown process (neither ss nor lsof could name it)}"
}

port_free() {
  # Bind as uvicorn does (SO_REUSEADDR), so a socket in TIME_WAIT does not count as taken.
  python3 - "$1" <<'PY'
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(1)
PY
}

if ! port_free "$PORT"; then
  say "port $PORT (HERALD_PORT) is already in use by $(port_holder "$PORT"); stop it or run HERALD_PORT=<free port> make run"
  exit 1
fi
if [ "$METRICS_PORT" != "0" ] && ! port_free "$METRICS_PORT"; then
  say "port $METRICS_PORT (HERALD_WORKER_METRICS_PORT, worker metrics) is already in use by $(port_holder "$METRICS_PORT"); stop it or set HERALD_WORKER_METRICS_PORT"
  exit 1
fi

# --- database --------------------------------------------------------------------------------------------
DB_NAME="$(python3 -c 'import os,urllib.parse as u; print(u.urlsplit(os.environ.get("HERALD_DATABASE_URL","postgresql://x@h/herald")).path.lstrip("/"))')"
if [ -z "${HERALD_DATABASE_URL:-}" ]; then
  if ! psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='${DB_NAME}'" | grep -q 1; then
    createdb -h 127.0.0.1 -U postgres "${DB_NAME}" || { say "could not create database ${DB_NAME}"; exit 1; }
  fi
fi
if ! timeout 120 "$BIN/herald" db upgrade >"$RUN/migrate.log" 2>&1; then
  say "database migration failed (log: $RUN/migrate.log):"
  tail -n 20 "$RUN/migrate.log" >&2
  exit 1
fi

# --- the processes ---------------------------------------------------------------------------------------
NAMES=(api worker sweeper beat)
declare -A PID=() BACKOFF_S=() STARTED_AT=() RESTART_AT=()

start_api() {
  exec "$BIN/uvicorn" api.app:app --host 127.0.0.1 --port "$PORT" --log-level info
}
start_worker() {
  # Pool children write metrics here; the worker's main process serves them on :$METRICS_PORT/metrics.
  rm -rf "$RUN/worker-metrics" "$RUN/tmp-worker" && mkdir -p "$RUN/worker-metrics" "$RUN/tmp-worker"
  PROMETHEUS_MULTIPROC_DIR="$(realpath "$RUN/worker-metrics")" TMPDIR="$(realpath "$RUN/tmp-worker")" \
    exec "$BIN/celery" -A workers.app worker -l info --without-gossip --without-mingle --without-heartbeat \
    --include workers.health -n "worker@%h" -Q "$QUEUE"
}
start_sweeper() {
  # Sweeps have a consumer of their own (one thread): they never wait behind deliveries for a free thread.
  # Its metrics go to a free port (0) so it does not compete with the worker's.
  rm -rf "$RUN/sweeper-metrics" "$RUN/tmp-sweeper" && mkdir -p "$RUN/sweeper-metrics" "$RUN/tmp-sweeper"
  HERALD_WORKER_METRICS_PORT=0 PROMETHEUS_MULTIPROC_DIR="$(realpath "$RUN/sweeper-metrics")" \
    TMPDIR="$(realpath "$RUN/tmp-sweeper")" \
    exec "$BIN/celery" -A workers.app worker -l info --without-gossip --without-mingle --without-heartbeat \
    --include workers.health -n "sweeper@%h" -Q "$QUEUE.sweep" -c 1
}
start_beat() {
  exec "$BIN/celery" -A workers.app beat -l info -s "$RUN/celerybeat-schedule"
}

launch() {
  local name=$1
  ( "start_$name" ) >>"$RUN/$name.log" 2>&1 &
  PID[$name]=$!
  STARTED_AT[$name]=$SECONDS
  echo "${PID[$name]}" >"$RUN/$name.pid"
}

stopping=0
stop_all() {
  local name pid deadline
  for name in "${NAMES[@]}"; do
    pid=${PID[$name]:-}
    [ -n "$pid" ] && kill -TERM "$pid" 2>/dev/null
  done
  deadline=$((SECONDS + STOP_GRACE_S))
  for name in "${NAMES[@]}"; do
    pid=${PID[$name]:-}
    [ -n "$pid" ] || continue
    while kill -0 "$pid" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      say "$name (pid $pid) did not stop in ${STOP_GRACE_S}s; killing it"
      kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
  done
}
on_signal() {
  # The first signal ends the script: no second Ctrl-C needed, and nothing keeps waiting afterwards.
  trap '' INT TERM
  stopping=1
  say "stopping"
  stop_all
  exit "$1"
}
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
trap 'stop_all' EXIT

for name in "${NAMES[@]}"; do
  : >"$RUN/$name.log"
  BACKOFF_S[$name]=1
  launch "$name"
done

# --- readiness: bounded --------------------------------------------------------------------------------
deadline=$((SECONDS + READY_TIMEOUT_S))
ready=0
while [ "$SECONDS" -lt "$deadline" ]; do
  if ! kill -0 "${PID[api]}" 2>/dev/null; then
    wait "${PID[api]}" 2>/dev/null; rc=$?
    say "the API exited during start-up (rc $rc); last lines of $RUN/api.log:"
    tail -n 20 "$RUN/api.log" >&2
    if grep -q "address already in use" "$RUN/api.log"; then
      say "port $PORT is taken by $(port_holder "$PORT")"
    fi
    exit 1
  fi
  if curl -fsS --max-time 2 "http://127.0.0.1:${PORT}/readyz" >/dev/null 2>&1; then
    ready=1
    break
  fi
  sleep 0.5 & wait $!
done
if [ "$ready" != 1 ]; then
  say "the API did not answer http://127.0.0.1:${PORT}/readyz within ${READY_TIMEOUT_S}s; last answer:"
  curl -sS --max-time 2 "http://127.0.0.1:${PORT}/readyz" >&2 || true
  echo >&2
  say "logs: $RUN/api.log $RUN/worker.log $RUN/sweeper.log $RUN/beat.log"
  exit 1
fi

KEY="$HERALD_BOOTSTRAP_ADMIN_KEY"
cat <<MSG

Herald is up: console http://127.0.0.1:${PORT}/console (sign in with the admin key ${KEY})
API http://127.0.0.1:${PORT} (docs at /docs, metrics at /metrics), worker metrics
http://127.0.0.1:${METRICS_PORT}/metrics, logs in $RUN/api.log, $RUN/worker.log, $RUN/sweeper.log and $RUN/beat.log

1. Send notifications to a webhook of yours (any route with no project is a catch-all):
   curl -s -X POST http://127.0.0.1:${PORT}/v1/integrations -H "Authorization: Bearer ${KEY}" \\
     -H 'Content-Type: application/json' \\
     -d '{"name":"my-hook","provider":"webhook","config":{"url":"http://127.0.0.1:9000/hook"}}'
   curl -s -X POST http://127.0.0.1:${PORT}/v1/routes -H "Authorization: Bearer ${KEY}" \\
     -H 'Content-Type: application/json' -d '{"integration_id":"<id from above>"}'

2. Post a release event:
   curl -s -X POST http://127.0.0.1:${PORT}/v1/events/release -H "Authorization: Bearer ${KEY}" \\
     -H 'Content-Type: application/json' \\
     -d '{"type":"release.created","project":"demo","environment":"prod","version":"1.0.0","url":"https://example.com/releases/1.0.0"}'

3. Follow it: curl -s http://127.0.0.1:${PORT}/v1/events/<event_id> -H "Authorization: Bearer ${KEY}"
   or with the CLI (it is not on your PATH: run it from this directory, as typed):
   HERALD_API_URL=http://127.0.0.1:${PORT} HERALD_API_KEY=${KEY} .venv/bin/herald integrations list

Ctrl-C stops everything. A process that exits is restarted (said here, details in its log).
MSG

# --- supervision ---------------------------------------------------------------------------------------
while [ "$stopping" = 0 ]; do
  for name in "${NAMES[@]}"; do
    pid=${PID[$name]:-}
    if [ -n "$pid" ]; then
      kill -0 "$pid" 2>/dev/null && continue
      wait "$pid" 2>/dev/null; rc=$?
      # A process that ran a while before exiting starts again from the shortest backoff.
      if [ $((SECONDS - STARTED_AT[$name])) -ge 60 ]; then BACKOFF_S[$name]=1; fi
      say "$name (pid $pid) exited with rc $rc; restarting it in ${BACKOFF_S[$name]}s (log: $RUN/$name.log)"
      PID[$name]=""
      RESTART_AT[$name]=$((SECONDS + BACKOFF_S[$name]))
      b=$((BACKOFF_S[$name] * 2)); BACKOFF_S[$name]=$((b > 30 ? 30 : b))
    elif [ "$SECONDS" -ge "${RESTART_AT[$name]}" ]; then
      if [ "$name" = api ] && ! port_free "$PORT"; then
        say "cannot restart the API: port $PORT is now held by $(port_holder "$PORT"); retrying"
        RESTART_AT[$name]=$((SECONDS + BACKOFF_S[$name]))
        continue
      fi
      launch "$name"
      say "$name restarted (pid ${PID[$name]})"
    fi
  done
  sleep 1 & wait $!
done
