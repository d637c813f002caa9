#!/bin/sh
# The image's one entry point: `api`, `worker`, `sweeper`, `beat`, `migrate`, `worker-alive`, `herald ...`, or any
# command.
#
# Every server command is started with `exec`, so the server replaces this shell and is the direct child of
# tini (PID 1): SIGTERM from Kubernetes or `docker stop` reaches uvicorn or the Celery main process itself,
# and only that process (tini runs without -g: prefork children must not get SIGTERM directly, their parent
# shuts them down after the running task). Extra arguments are appended, and for api/worker/beat they win
# over the defaults here (click keeps the last value of a repeated option), e.g. `api --port 9000`.
set -eu

queue="${HERALD_QUEUE_NAME:-herald}"
cmd="${1:-api}"
[ "$#" -gt 0 ] && shift

case "$cmd" in
  api)
    # One process per pod: scale the API with replicas (the metrics registry is per process).
    exec uvicorn api.app:app --host 0.0.0.0 --port 8000 --no-server-header "$@"
    ;;
  worker)
    # Pool and concurrency come from the app's configuration (workers/app.py, HERALD_WORKER_CONCURRENCY);
    # `worker --concurrency N` overrides. With a prefork pool, prometheus_client's multiprocess mode must be
    # configured before any process imports it, so the directory is set and emptied here, not in Python.
    export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-${TMPDIR:-/tmp}/herald-metrics}"
    rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
    # SIGTERM is Celery's warm shutdown: stop consuming, finish the running batches (each send bounded by
    # HERALD_SEND_TIMEOUT_S), hand back what was prefetched, exit 0.
    exec celery -A workers.app worker --without-gossip --without-mingle --without-heartbeat \
      -Q "${queue}" -l info --include workers.health "$@"
    ;;
  sweeper)
    # The sweep queue has a consumer of its own (one thread), so a sweep never waits behind deliveries.
    export PROMETHEUS_MULTIPROC_DIR="${PROMETHEUS_MULTIPROC_DIR:-${TMPDIR:-/tmp}/herald-metrics}"
    rm -rf "$PROMETHEUS_MULTIPROC_DIR" && mkdir -p "$PROMETHEUS_MULTIPROC_DIR"
    exec celery -A workers.app worker --without-gossip --without-mingle --without-heartbeat \
      -Q "${queue}.sweep" -c 1 -l info --include workers.health "$@"
    ;;
  beat)
    # Exactly one beat per installation. The schedule file is scratch (the sweep interval comes from config).
    exec celery -A workers.app beat -l info -s "${TMPDIR:-/tmp}/celerybeat-schedule" "$@"
    ;;
  migrate)
    exec herald db upgrade "$@"
    ;;
  worker-alive)
    # Liveness probe for the worker: is the heartbeat file (workers/health.py) younger than $1 seconds
    # (default 60)? Plain shell, so a probe costs a fork and a stat, not a Python start-up.
    max_age_s="${1:-60}"
    beat_file="${TMPDIR:-/tmp}/herald-worker-heartbeat"
    [ -f "$beat_file" ] || { echo "no heartbeat file $beat_file yet" >&2; exit 1; }
    age_s=$(( $(date +%s) - $(stat -c %Y "$beat_file") ))
    [ "$age_s" -lt "$max_age_s" ] || { echo "worker heartbeat is ${age_s}s old (limit ${max_age_s}s)" >&2; exit 1; }
    exit 0
    ;;
  herald)
    exec herald "$@"
    ;;
  *)
    exec "$cmd" "$@"
    ;;
esac
