#!/bin/sh
# keygate's container entrypoint: reconcile the config into the database once,
# so that a bad file or a refused change fails the start with a clear message
# before anything listens; then become `keygate serve` (exec: it gets the
# signals, and its exit status is the container's). Arguments go to serve.
#
#   KEYGATE_CONFIG          the config file (default /etc/keygate/config.yml)
#   KEYGATE_DATA_DIR        the default database's folder (the image: /var/lib/keygate);
#                           keygate.database in the config, or KEYGATE_DB, names another
#   KEYGATE_ALLOW_DELETES=1 lift the deletion guard for this start only
set -eu

: "${KEYGATE_CONFIG:=/etc/keygate/config.yml}"
export KEYGATE_CONFIG

if [ "${KEYGATE_ALLOW_DELETES:-}" = "1" ]; then
  keygate apply --allow-deletes
else
  keygate apply
fi

exec keygate serve "$@"
