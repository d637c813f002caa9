#!/usr/bin/env bash
# Start local PostgreSQL and Redis if they are down (commands of this machine kind), then wait for both.
set -euo pipefail

if ! pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  echo "starting PostgreSQL"
  pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
fi
if ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  echo "starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi
# The monitoring programs the Alertmanager tests run for real (tests/integration/test_alertmanager_real.py):
# Debian's packages, installed when missing and when this runs as root with apt-get (CI); else the test skips.
if ! command -v alertmanager >/dev/null && ! command -v prometheus-alertmanager >/dev/null \
  || ! command -v prometheus >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing prometheus-alertmanager and prometheus"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      prometheus-alertmanager prometheus >/dev/null \
      || echo "could not install prometheus-alertmanager/prometheus: their tests will skip" >&2
  fi
fi
# Chromium for the browser console's tests (tests/console, Playwright with executable_path=/usr/bin/chromium):
# Debian's package, installed the same way. Without it those tests fail loudly (they do not skip).
if ! command -v chromium >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing chromium"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium >/dev/null \
      || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends chromium >/dev/null; } \
      || echo "could not install chromium: the console tests will fail" >&2
  fi
fi
for _ in $(seq 1 60); do
  if pg_isready -h 127.0.0.1 -p 5432 -q && redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
    exit 0
  fi
  sleep 0.5
done
echo "PostgreSQL or Redis did not come up on 127.0.0.1" >&2
exit 1
