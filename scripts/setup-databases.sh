#!/usr/bin/env bash
# Install the database servers the tests start for themselves: PostgreSQL
# (Debian's postgresql package; the tests run a throwaway cluster of their
# own, as the unprivileged `postgres` user, on a free port) and Redis
# (redis-server; the tests run their own on a free port with a temporary
# directory). No server is created or started here. Idempotent: does
# nothing when installed.
set -euo pipefail
pg=0 redis=0
if compgen -G "/usr/lib/postgresql/*/bin/postgres" > /dev/null && command -v psql > /dev/null; then
  pg=1
fi
if command -v redis-server > /dev/null && command -v redis-cli > /dev/null; then
  redis=1
fi
[ "$pg$redis" = 11 ] && exit 0
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
# The package would create and start a cluster of its own: not wanted.
$sudo mkdir -p /etc/postgresql-common
if [ ! -f /etc/postgresql-common/createcluster.conf ]; then
  echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.conf > /dev/null
fi
packages=()
[ "$pg" = 1 ] || packages+=(postgresql postgresql-client)
[ "$redis" = 1 ] || packages+=(redis-server redis-tools)
echo "setup: database servers (Debian packages ${packages[*]})" >&2
install() {
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${packages[@]}" > /dev/null
}
install || { $sudo apt-get update -q > /dev/null && install; }
