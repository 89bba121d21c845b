#!/usr/bin/env bash
# Install the database servers the tests start for themselves: PostgreSQL
# (Debian's postgresql package; the tests run a throwaway cluster of their
# own, as the unprivileged `postgres` user, on a free port). No cluster is
# created or started here. Idempotent: does nothing when installed.
set -euo pipefail
if compgen -G "/usr/lib/postgresql/*/bin/postgres" > /dev/null && command -v psql > /dev/null; then
  exit 0
fi
echo "setup: PostgreSQL server (Debian package postgresql)" >&2
sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
# The package would create and start a cluster of its own: not wanted.
$sudo mkdir -p /etc/postgresql-common
if [ ! -f /etc/postgresql-common/createcluster.conf ]; then
  echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.conf > /dev/null
fi
install() {
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    postgresql postgresql-client > /dev/null
}
install || { $sudo apt-get update -q > /dev/null && install; }
