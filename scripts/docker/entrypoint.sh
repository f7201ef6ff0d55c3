#!/bin/sh
# Clockwork's container entrypoint (Dockerfile.base): run the command as the owner of the mounted project folder.
#
# Docker starts it as root. It reads the uid/gid that own $CLOCKWORK_PROJECT_DIR (/project, where compose mounts
# the project folder) and runs again as that uid/gid with no supplementary groups, so every file the services
# write on ./volumes, and every config.yaml edit, belongs to the host user who owns the folder. A folder owned by
# root (a root user's checkout) keeps uid 0 so that root's files stay writable; compose drops its capabilities.
# `docker compose exec` bypasses this script: scripts/docker/sitecustomize.py drops those Python processes too.
#
#   entrypoint.sh secrets    create $CLOCKWORK_REDIS_PASSWORD_FILE if it is missing or empty: a random password,
#                            mode 0600, in a folder git ignores (the one-shot `secrets` service of compose)
#   entrypoint.sh CMD...     exec CMD
# The password file appears whole or not at all (written beside it, then renamed); an existing one is kept.
set -eu
project=${CLOCKWORK_PROJECT_DIR:-/project}

if [ "$(id -u)" = 0 ]; then
  if [ ! -d "$project" ]; then
    echo "entrypoint: $project is not a folder: mount the project folder there (docker-compose.yml does)" >&2
    exit 2
  fi
  uid=$(stat -c %u "$project")
  gid=$(stat -c %g "$project")
  if [ "$uid" != 0 ]; then
    export HOME=/tmp
    exec setpriv --reuid="$uid" --regid="$gid" --clear-groups -- /bin/sh "$0" "$@"
  fi
  echo "entrypoint: $project is owned by root, so this runs as root (with no capabilities but setuid/setgid);" \
    "give the project folder to a user (chown -R) to run as that user" >&2
fi

if [ "${1:-}" = secrets ]; then
  file=${CLOCKWORK_REDIS_PASSWORD_FILE:?entrypoint: CLOCKWORK_REDIS_PASSWORD_FILE is not set}
  umask 077
  if [ -s "$file" ]; then
    chmod 600 "$file"
    echo "entrypoint: Redis password kept: $file"
    exit 0
  fi
  mkdir -p "$(dirname "$file")"
  if [ ! -w "$(dirname "$file")" ]; then
    echo "entrypoint: cannot write $(dirname "$file") as uid $(id -u): give that folder to the project's owner" >&2
    exit 2
  fi
  tmp="$file.new.$$"
  python3 -c 'import secrets; print(secrets.token_urlsafe(32))' >"$tmp"
  mv -f "$tmp" "$file"
  echo "entrypoint: Redis password created: $file (uid $(id -u), mode 0600; delete it to rotate)"
  exit 0
fi

exec "$@"
