#!/bin/sh
# keygate's container entrypoint: reconcile the config into the database once,
# so that a bad file or a refused change fails the start with a clear message
# before anything listens; then become `keygate serve` (exec: it gets the
# signals, and its exit status is the container's). Arguments go to serve.
#
#   KEYGATE_CONFIG          the config file (default /etc/keygate/config.yml)
#   KEYGATE_DB              the database (default /var/lib/keygate/keygate.db)
#   KEYGATE_ALLOW_DELETES=1 lift the deletion guard for this start only
set -eu

: "${KEYGATE_CONFIG:=/etc/keygate/config.yml}"
: "${KEYGATE_DB:=/var/lib/keygate/keygate.db}"
export KEYGATE_CONFIG KEYGATE_DB

if [ "${KEYGATE_ALLOW_DELETES:-}" = "1" ]; then
  keygate apply --allow-deletes
else
  keygate apply
fi

exec keygate serve "$@"
