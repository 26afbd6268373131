#!/bin/sh
# Stand-in for the official image's entrypoint: options alone mean redis-server with
# them; the server runs as the redis user. The official image's server is built with
# protected mode off (it listens on every interface of the container's network, with
# no password); Debian's is not, so say it here.
set -eu
case "${1:-}" in
  -*) set -- redis-server "$@" ;;
esac
if [ "${1:-}" = redis-server ]; then
  shift
  exec setpriv --reuid=redis --regid=redis --init-groups redis-server "$@" --protected-mode no
fi
exec "$@"
