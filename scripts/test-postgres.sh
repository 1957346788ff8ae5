#!/usr/bin/env bash
# A throwaway PostgreSQL server on 127.0.0.1 for the store's tests.
#
#   scripts/test-postgres.sh start      → prints "URL DIR" (asyncpg URL, server folder)
#   scripts/test-postgres.sh stop DIR   → stops that server and deletes its folder
#   scripts/test-postgres.sh halt DIR   → stops that server, keeps its data (an outage)
#   scripts/test-postgres.sh resume DIR → starts it again on the same port and data
#   scripts/test-postgres.sh run CMD…   → start, run CMD with CALLBRIDGE_TEST_POSTGRES_URL
#                                          exported, stop; exits with CMD's status
#
# Installs PostgreSQL with apt-get when no server binaries are found (we run as root in
# CI). initdb refuses to run as root, so the server runs as the `postgres` OS user (or
# `nobody` when that user does not exist). When no server can be had, `start` exits 3
# with the reason on stderr; the tests then skip and print it.
set -euo pipefail

find_bindir() {
  local d
  for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [[ -x "$d/initdb" && -x "$d/pg_ctl" ]]; then echo "$d"; return 0; fi
  done
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v initdb)"; return 0
  fi
  return 1
}

install_postgres() {
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "no PostgreSQL binaries and no apt-get to install them" >&2; return 1
  fi
  if [[ $(id -u) -ne 0 ]]; then
    echo "no PostgreSQL binaries, and installing them needs root" >&2; return 1
  fi
  echo "installing PostgreSQL (apt-get)…" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2 || { echo "apt-get update failed" >&2; return 1; }
  apt-get install -y -qq --no-install-recommends postgresql >&2 \
    || { echo "apt-get install postgresql failed" >&2; return 1; }
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

as_owner() {  # run a command as the server's OS user
  local user=$1; shift
  if [[ $(id -u) -ne 0 ]]; then "$@"; return; fi
  if command -v runuser >/dev/null 2>&1; then runuser -u "$user" -- "$@"
  else su -s /bin/sh "$user" -c "$(printf '%q ' "$@")"; fi
}

start() {
  local bindir dir port user
  bindir=$(find_bindir) || { install_postgres && bindir=$(find_bindir); } \
    || { echo "PostgreSQL is not installed and could not be installed" >&2; exit 3; }
  user=$(id -un)
  if [[ $(id -u) -eq 0 ]]; then
    if id postgres >/dev/null 2>&1; then user=postgres; else user=nobody; fi
  fi
  dir=$(mktemp -d /tmp/callbridge-pg.XXXXXX)
  chmod 755 "$dir"
  mkdir "$dir/data" "$dir/sock"
  [[ $(id -u) -eq 0 ]] && chown -R "$user" "$dir"
  as_owner "$user" "$bindir/initdb" -D "$dir/data" -U callbridge --auth=trust \
    --encoding=UTF8 --no-locale >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; rm -rf "$dir"; echo "initdb failed" >&2; exit 3; }
  port=$(free_port)
  echo "$bindir" >"$dir/bindir"; echo "$user" >"$dir/user"; echo "$port" >"$dir/port"
  run_server "$dir" \
    || { cat "$dir/server.log" >&2; rm -rf "$dir"; echo "pg_ctl start failed" >&2; exit 3; }
  as_owner "$user" "$bindir/createdb" -h 127.0.0.1 -p "$port" -U callbridge callbridge_test
  echo "postgresql+asyncpg://callbridge@127.0.0.1:$port/callbridge_test $dir"
}

run_server() {  # start the server of folder $1 (its data, port and owner are in the folder)
  local dir=$1
  as_owner "$(cat "$dir/user")" "$(cat "$dir/bindir")/pg_ctl" -D "$dir/data" \
    -l "$dir/server.log" -w -t 60 \
    -o "-p $(cat "$dir/port") -h 127.0.0.1 -k $dir/sock -F -c fsync=off" start >/dev/null
}

halt() {
  local dir=$1
  as_owner "$(cat "$dir/user")" "$(cat "$dir/bindir")/pg_ctl" -D "$dir/data" -m fast \
    -w stop >/dev/null
}

stop() {
  local dir=$1
  [[ -d "$dir/data" ]] || return 0
  as_owner "$(cat "$dir/user")" "$(cat "$dir/bindir")/pg_ctl" -D "$dir/data" -m immediate \
    -w stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}

case "${1:-}" in
  start) start ;;
  stop) stop "${2:?usage: $0 stop DIR}" ;;
  halt) halt "${2:?usage: $0 halt DIR}" ;;
  resume) run_server "${2:?usage: $0 resume DIR}" || { cat "$2/server.log" >&2; exit 3; } ;;
  run)
    shift
    if out=$(start); then
      read -r url dir <<<"$out"
      trap 'stop "$dir"' EXIT
      export CALLBRIDGE_TEST_POSTGRES_URL=$url
    else
      export CALLBRIDGE_TEST_POSTGRES_SKIP="PostgreSQL could not be started (see above)"
    fi
    "$@"
    ;;
  *) echo "usage: $0 start | stop DIR | halt DIR | resume DIR | run CMD…" >&2; exit 2 ;;
esac
