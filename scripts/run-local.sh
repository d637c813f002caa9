#!/usr/bin/env bash
# `make run`: migrate, then run the API, one worker and beat in the foreground; Ctrl-C stops all three.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
export HERALD_BOOTSTRAP_ADMIN_KEY="${HERALD_BOOTSTRAP_ADMIN_KEY:-hk_local_dev_admin_key}"
export HERALD_EGRESS_ALLOW_CIDRS="${HERALD_EGRESS_ALLOW_CIDRS:-127.0.0.1/32}"
PORT="${HERALD_PORT:-8000}"
DB_NAME="$(python3 -c 'import os,urllib.parse as u; print(u.urlsplit(os.environ.get("HERALD_DATABASE_URL","postgresql://x@h/herald")).path.lstrip("/"))')"
mkdir -p .run

if [ -z "${HERALD_DATABASE_URL:-}" ]; then
  psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname='${DB_NAME}'" | grep -q 1 \
    || createdb -h 127.0.0.1 -U postgres "${DB_NAME}"
fi
$BIN/herald db upgrade

pids=()
cleanup() { kill -TERM "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM

$BIN/uvicorn api.app:app --host 127.0.0.1 --port "$PORT" --log-level warning &
pids+=($!)
# Pool children write metrics here; the worker's main process serves them on :9808/metrics.
rm -rf .run/worker-metrics && mkdir -p .run/worker-metrics
PROMETHEUS_MULTIPROC_DIR="$PWD/.run/worker-metrics" \
$BIN/celery -A workers.app worker -l info --without-gossip --without-mingle --without-heartbeat \
  -Q "${HERALD_QUEUE_NAME:-herald},${HERALD_QUEUE_NAME:-herald}.sweep" >.run/worker.log 2>&1 &
pids+=($!)
$BIN/celery -A workers.app beat -l info -s .run/celerybeat-schedule >.run/beat.log 2>&1 &
pids+=($!)

for _ in $(seq 1 50); do curl -fsS "http://127.0.0.1:${PORT}/readyz" >/dev/null 2>&1 && break; sleep 0.2; done
KEY="$HERALD_BOOTSTRAP_ADMIN_KEY"
cat <<MSG

Herald is up: API http://127.0.0.1:${PORT} (docs at /docs, metrics at /metrics), worker metrics
http://127.0.0.1:9808/metrics, logs in .run/worker.log and .run/beat.log

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

Ctrl-C stops everything.
MSG
wait -n "${pids[@]}"
