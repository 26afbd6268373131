#!/bin/sh
# Stand-in for edoburu/pgbouncer's entrypoint: pgbouncer.ini from the same variables.
# DB_* and the pool settings as the shared stand-in has them; each of the other
# settings below is written only when its variable is set (the variable is the
# setting's name in upper case, as edoburu names them), else PgBouncer's default holds.
set -eu
d=/tmp/pgbouncer; mkdir -p $d
printf '"%s" "%s"\n' "$DB_USER" "$DB_PASSWORD" > $d/userlist.txt
cat > $d/pgbouncer.ini <<INI
[databases]
${DB_NAME} = host=${DB_HOST} port=${DB_PORT:-5432} dbname=${DB_NAME}
[pgbouncer]
listen_addr = 0.0.0.0
listen_port = ${LISTEN_PORT:-6432}
auth_type = ${AUTH_TYPE:-scram-sha-256}
auth_file = $d/userlist.txt
pool_mode = ${POOL_MODE:-session}
default_pool_size = ${DEFAULT_POOL_SIZE:-20}
max_client_conn = ${MAX_CLIENT_CONN:-100}
server_lifetime = ${SERVER_LIFETIME:-3600}
ignore_startup_parameters = extra_float_digits
unix_socket_dir =
INI
for name in MIN_POOL_SIZE RESERVE_POOL_SIZE RESERVE_POOL_TIMEOUT MAX_DB_CONNECTIONS \
            SERVER_RESET_QUERY SERVER_CHECK_DELAY SERVER_CHECK_QUERY SERVER_IDLE_TIMEOUT \
            SERVER_CONNECT_TIMEOUT SERVER_LOGIN_RETRY CLIENT_LOGIN_TIMEOUT \
            QUERY_TIMEOUT QUERY_WAIT_TIMEOUT CLIENT_IDLE_TIMEOUT IDLE_TRANSACTION_TIMEOUT \
            LOG_CONNECTIONS LOG_DISCONNECTIONS LOG_POOLER_ERRORS VERBOSE; do
  eval "value=\${$name:-}"
  if [ -n "$value" ]; then
    printf '%s = %s\n' "$(echo "$name" | tr 'A-Z' 'a-z')" "$value" >> $d/pgbouncer.ini
  fi
done
chown -R postgres $d
exec setpriv --reuid=postgres --regid=postgres --init-groups pgbouncer $d/pgbouncer.ini
