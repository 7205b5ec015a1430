#!/usr/bin/env bash
# Proxy throughput benchmark: keygate against a bare undici proxy, node-http-proxy,
# nginx, HAProxy and Caddy, side by side with interleaved wrk rounds (see bench/proxy.ts).
#
#   bash bench/proxy.sh [--rounds N] [--duration S] [--no-write] [--profile DIR] …   (or: npm run bench:proxy -- …)
#
# Installs wrk, nginx, haproxy, caddy and taskset from Debian when they are
# missing (needs root or sudo), and never starts their system services: the
# benchmark runs its own nginx, haproxy and caddy in the foreground from temp
# config files. Everything it starts is stopped,
# and its temp folder removed, by bench/proxy.ts when it ends (also on Ctrl-C).
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v wrk >/dev/null 2>&1 || missing+=(wrk)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v caddy >/dev/null 2>&1 || missing+=(caddy)
command -v taskset >/dev/null 2>&1 || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "bench/proxy.sh: installing ${missing[*]} with apt-get" >&2
  # Debian's nginx, haproxy and caddy packages start their system services on
  # install unless policy-rc.d says no: say no for the length of the install (only when no
  # policy is in place already), so that nothing listens on port 80 after it.
  policy=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    policy=/usr/sbin/policy-rc.d
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod 755 "$policy"
    trap '$sudo rm -f "$policy"' EXIT
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
  if [ -n "$policy" ]; then $sudo rm -f "$policy"; trap - EXIT; fi
fi
PATH="$PATH:/usr/sbin"

[ -d node_modules/http-proxy ] && [ -d node_modules/tsx ] || npm install --no-audit --no-fund

exec node --import tsx bench/proxy.ts "$@"
