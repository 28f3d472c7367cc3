#!/bin/sh
# Entrypoint of the casparian-postgres image (docker/build-postgres.sh): runs
# as the postgres user, prepares what a first start needs, then execs the
# server as PID 1.
#
# First start (no cluster in $PGDATA): a password for the role $DB_USER is
# drawn from /dev/urandom into $DB_SECRETS/password, with a libpq password
# file beside it ($DB_SECRETS/pgpass, what a client's passfile= or
# PGPASSFILE reads), both readable by the group casparian (gid 65532, the
# Sentinel's) and nobody else. The cluster is made in a folder next to
# $PGDATA and renamed into place only once the role and its database exist,
# so a start killed half way starts over instead of leaving a cluster
# without them.
#
# Later starts: nothing to do, unless the secrets volume was emptied while
# the data survived; then a new password is drawn and set on the role.
#
# Clients reach the server over TCP with scram-sha-256 only, as $DB_USER and
# into $DB_NAME only; the superuser postgres logs in through the local
# socket, as the OS user postgres (docker exec -u postgres … psql).
set -eu

bin=/usr/lib/postgresql/15/bin
data="${PGDATA:-/var/lib/postgresql/data/pgdata}"
secrets="${DB_SECRETS:-/run/casparian-db}"
db="${DB_NAME:-casparian}"
user="${DB_USER:-casparian}"
# The group that may read the secrets: the Sentinel's (docker/Dockerfile).
group="${DB_SECRETS_GROUP:-casparian}"

umask 0027
log() { printf 'casparian-postgres: %s\n' "$*" >&2; }

# The password: 32 random bytes as hex, so that it needs no quoting in SQL
# or in the password file.
new_password=false
if [ ! -s "$secrets/password" ]; then
	od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$secrets/.password.tmp"
	chgrp "$group" "$secrets/.password.tmp"
	chmod 0640 "$secrets/.password.tmp"
	mv "$secrets/.password.tmp" "$secrets/password"
	new_password=true
	log "drew a new password for role $user into $secrets/password"
fi
password="$(cat "$secrets/password")"
pgpass="*:*:$db:$user:$password"
if [ ! -s "$secrets/pgpass" ] || [ "$(cat "$secrets/pgpass")" != "$pgpass" ]; then
	printf '%s\n' "$pgpass" >"$secrets/.pgpass.tmp"
	chgrp "$group" "$secrets/.pgpass.tmp"
	chmod 0640 "$secrets/.pgpass.tmp"
	mv "$secrets/.pgpass.tmp" "$secrets/pgpass"
fi

# with_server runs SQL (stdin) as the superuser on a server started on a
# private socket only, no TCP, then stops it.
with_server() {
	"$bin/pg_ctl" -D "$1" -w -s -l /tmp/setup.log \
		-o "-c listen_addresses='' -c unix_socket_directories=/tmp" start
	if ! "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h /tmp -U postgres -d postgres >/dev/null; then
		cat /tmp/setup.log >&2
		"$bin/pg_ctl" -D "$1" -w -s -m fast stop
		return 1
	fi
	"$bin/pg_ctl" -D "$1" -w -s -m fast stop
}

if [ ! -s "$data/PG_VERSION" ]; then
	tmp="$data.init"
	rm -rf "$tmp"
	log "first start: initdb"
	"$bin/initdb" -D "$tmp" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
		--encoding=UTF8 --locale=C.UTF-8 >/dev/null
	cat >>"$tmp/postgresql.conf" <<-EOF

		# casparian-postgres
		listen_addresses = '*'
		password_encryption = 'scram-sha-256'
		# The image leaves out LLVM (100 MB) and with it JIT compilation.
		jit = off
	EOF
	cat >"$tmp/pg_hba.conf" <<-EOF
		# TYPE  DATABASE  USER      ADDRESS    METHOD
		local   all       postgres             peer
		host    $db       $user     0.0.0.0/0  scram-sha-256
		host    $db       $user     ::/0       scram-sha-256
	EOF
	# printf is a shell built-in: the password shows in no process's
	# arguments.
	printf "CREATE ROLE \"%s\" LOGIN PASSWORD '%s';\nCREATE DATABASE \"%s\" OWNER \"%s\";\n" \
		"$user" "$password" "$db" "$user" | with_server "$tmp"
	mv "$tmp" "$data"
	log "created role $user and database $db"
elif [ "$new_password" = true ]; then
	printf "ALTER ROLE \"%s\" PASSWORD '%s';\n" "$user" "$password" | with_server "$data"
	log "set the new password on role $user"
fi

exec "$bin/postgres" -D "$data" "$@"
