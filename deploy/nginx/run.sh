#!/bin/sh
# nginx in the foreground for the compose service `nginx`, reloaded when Docker's DNS changes its answer.
#
# nginx resolves `server inference:8000` once, when it loads its configuration. A replica that restarts (and
# comes back on another address) or a replica added by scaling would stay unknown until a reload, so this
# script asks Docker's DNS for $UPSTREAM_HOST every $RESOLVE_INTERVAL_S seconds and, when the set of addresses
# has changed and is not empty, checks the configuration and sends nginx SIGHUP (a graceful reload: old
# workers finish their requests). No address at all (every replica down) keeps the last configuration.
# SIGQUIT/SIGTERM/SIGINT are passed on to nginx as SIGQUIT (graceful stop); the script exits with nginx.
set -eu
host=${UPSTREAM_HOST:-inference}
interval=${RESOLVE_INTERVAL_S:-5}

addresses() {
  getent ahostsv4 "$host" 2>/dev/null | awk '{print $1}' | sort -u | tr '\n' ' ' || true
}

nginx -g 'daemon off;' &
nginx_pid=$!
stop() {
  kill -QUIT "$nginx_pid" 2>/dev/null || true
  wait "$nginx_pid" || true
  exit 0
}
trap stop QUIT TERM INT

known=$(addresses)
echo "run.sh: nginx pid $nginx_pid; $host resolves to: ${known:-nothing}" >&2
while kill -0 "$nginx_pid" 2>/dev/null; do
  sleep "$interval" &
  wait $! || true
  now=$(addresses)
  if [ -n "$now" ] && [ "$now" != "$known" ]; then
    if nginx -t -q; then
      echo "run.sh: $host now resolves to: $now (was: ${known:-nothing}); reloading nginx" >&2
      kill -HUP "$nginx_pid"
      known=$now
    else
      echo "run.sh: $host now resolves to: $now but the configuration does not check; not reloading" >&2
    fi
  fi
done
wait "$nginx_pid"
