#!/bin/sh
# Starts Redis in the redis image (docker-compose.yml mounts this file and the secrets folder read-only).
#
# Runs as root only to read the password file (mode 0600, owned by the project's owner) and to give the data
# folder to the image's `redis` user; then it becomes redis-server as that user, the password handed over on
# stdin as config (never on a command line, never in the image). Extra arguments go to redis-server.
set -eu
file=${REDIS_PASSWORD_FILE:-/run/clockwork/redis_password}
data=${REDIS_DATA_DIR:-/data}
if [ ! -s "$file" ]; then
  echo "redis.sh: $file is missing or empty (the compose service 'secrets' creates .secrets/redis_password)" >&2
  exit 2
fi
password=$(cat "$file")
case "$password" in
  *[!A-Za-z0-9._~+/=-]*)
    echo "redis.sh: $file: use letters, digits and . _ ~ + / = - only (delete the file to get a new one)" >&2
    exit 2 ;;
esac
mkdir -p "$data"
chown redis:redis "$data"
exec setpriv --reuid=redis --regid=redis --init-groups -- redis-server - --dir "$data" "$@" <<CONF
requirepass "$password"
CONF
