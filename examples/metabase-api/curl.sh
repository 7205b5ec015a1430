#!/bin/sh
# Metabase's documented curl example ("API keys" docs page, "Example GET
# requests"), pointed at keygate's admin listener, which answers the same
# management API. Lists the groups.
#
#   export METABASE_API_KEY="YOUR_API_KEY"    # a key of the admin group
#   METABASE_HOST=http://127.0.0.1:8081 sh examples/metabase-api/curl.sh
#
# METABASE_HOST defaults to http://localhost:3000, as in Metabase's docs.
set -eu

: "${METABASE_API_KEY:?set METABASE_API_KEY to an API key of the admin group}"
host="${METABASE_HOST:-http://localhost:3000}"

curl \
-H "x-api-key: ${METABASE_API_KEY}" \
-X GET "${host}/api/permissions/group"
