#!/usr/bin/env bash
# Install Debian's redis-server, which the Redis tests and bench/bench_redis.py run
# (kura_magic.testing.RedisServer starts a private one on a free port, with a temporary
# directory), idempotently and without asking anything.
#
# Nothing here depends on the system's Redis service: if this script installs the package
# and the package starts its service, the service is stopped and disabled again, so no
# Redis is left listening on 6379 (`sudo systemctl enable --now redis-server` brings it back).
#
# Usage: scripts/install_redis.sh
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

started=$SECONDS
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo -n"; fi

stop_system_service() {
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        $sudo systemctl disable --now redis-server.service </dev/null >/dev/null 2>&1 || true
    elif command -v service >/dev/null 2>&1; then
        $sudo service redis-server stop </dev/null >/dev/null 2>&1 || true
        if command -v update-rc.d >/dev/null 2>&1; then
            $sudo update-rc.d redis-server disable </dev/null >/dev/null 2>&1 || true
        fi
    fi
}

# openssl makes the certificate of the TLS Redis the tests start (RedisServer(tls=True)).
if ! command -v redis-server >/dev/null 2>&1 || ! command -v openssl >/dev/null 2>&1; then
    $sudo apt-get update -q </dev/null
    $sudo apt-get install -y -q --no-install-recommends redis-server openssl </dev/null
    stop_system_service
fi
for tool in redis-server openssl; do
    command -v "$tool" >/dev/null 2>&1 || { echo "install_redis: $tool missing after apt-get install" >&2; exit 1; }
done
redis-server --version </dev/null

echo "install_redis: done in $((SECONDS - started)) s"
