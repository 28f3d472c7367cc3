#!/usr/bin/env bash
# Builds the PostgreSQL image of docker-compose.postgres.yml without a
# registry: a Debian bookworm root filesystem made by debootstrap from
# Debian's packages (postgresql-15 and what it depends on), trimmed, with
# docker/postgres-entrypoint.sh, loaded by `docker import`.
#
#   docker/build-postgres.sh                 # tags casparian-postgres:local
#   CASPARIAN_PG_IMAGE=name:tag docker/build-postgres.sh
#
# Needs root (debootstrap, chroot), Docker, and deb.debian.org or the mirror
# in DEBIAN_MIRROR. Idempotent: the image carries a label with a hash of
# this script and the entrypoint, and a second run that finds it does
# nothing. The root filesystem is kept in a cache folder
# (CASPARIAN_CACHE_DIR, default ~/.cache/casparian) under a hash of this
# script alone, so a change of the entrypoint only re-imports it.
set -euo pipefail
cd "$(dirname "$0")/.."

image="${CASPARIAN_PG_IMAGE:-casparian-postgres:local}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
suite=bookworm
label=org.casparian.recipe

rootfs_hash="$(sha256sum docker/build-postgres.sh | cut -c1-16)"
recipe="$(cat docker/build-postgres.sh docker/postgres-entrypoint.sh | sha256sum | cut -c1-16)"
if [ "$(docker image inspect -f "{{index .Config.Labels \"$label\"}}" "$image" 2>/dev/null)" = "$recipe" ]; then
  echo "$image is up to date (recipe $recipe)"
  exit 0
fi

cache="${CASPARIAN_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/casparian}"
base="$cache/postgres-rootfs-$rootfs_hash.tar"
mkdir -p "$cache"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [ ! -s "$base" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "build-postgres.sh: debootstrap needs root" >&2; exit 1
  fi
  command -v debootstrap >/dev/null || { echo "build-postgres.sh: install debootstrap (apt-get install debootstrap)" >&2; exit 1; }
  root="$work/root"
  echo "debootstrap $suite with postgresql-15 (a few minutes)"
  # minbase: only the Essential packages and apt, plus what postgresql-15
  # depends on (debootstrap installs no Recommends).
  debootstrap --variant=minbase --include=postgresql-15 "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1 || {
    tail -30 "$work/debootstrap.log" >&2; exit 1
  }
  # postgresql-common's postinst made a cluster "main" for pg_ctlcluster;
  # the entrypoint makes its own in a volume.
  rm -rf "$root/var/lib/postgresql/15" "$root/etc/postgresql/15"
  # The group that may read the generated password (gid 65532, the group
  # the Casparian image runs as), with postgres in it.
  chroot "$root" groupadd -g 65532 casparian
  chroot "$root" usermod -a -G casparian postgres
  # The volumes' mount points: a fresh named volume copies their ownership.
  install -d -o "$(chroot "$root" id -u postgres)" -g "$(chroot "$root" id -g postgres)" -m 0700 "$root/var/lib/postgresql/data"
  install -d -o "$(chroot "$root" id -u postgres)" -g 65532 -m 0750 "$root/run/casparian-db"
  install -d -o "$(chroot "$root" id -u postgres)" -g "$(chroot "$root" id -g postgres)" -m 2775 "$root/var/run/postgresql"
  # Trim: documentation, translations, locale sources (the cluster uses the
  # built-in C.UTF-8), package lists and caches, logs; LLVM and Z3, which
  # only PostgreSQL's JIT loads (off in postgresql.conf); and Perl but for
  # perl-base (debconf's), which only postgresql-common's wrappers in
  # /usr/bin use: PATH puts PostgreSQL's own binaries first.
  rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/usr/share/locale/* "$root"/usr/share/i18n "$root"/usr/share/lintian \
    "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/cache/debconf/*-old \
    "$root"/var/log/*.log "$root"/var/log/apt/* "$root"/var/cache/ldconfig/* \
    "$root"/usr/lib/x86_64-linux-gnu/libLLVM-*.so* "$root"/usr/lib/postgresql/15/lib/llvmjit* \
    "$root"/usr/lib/postgresql/15/lib/bitcode "$root"/usr/lib/x86_64-linux-gnu/libz3.so* \
    "$root"/usr/lib/x86_64-linux-gnu/perl "$root"/usr/share/perl "$root"/usr/lib/x86_64-linux-gnu/libperl.so* \
    "$root"/usr/share/postgresql/15/man
  rm -f "$cache"/postgres-rootfs-*.tar
  # Another build may be writing the same cache file: each writes its own
  # and renames it into place.
  tar --numeric-owner -C "$root" -cf "$base.$$.tmp" .
  mv "$base.$$.tmp" "$base"
fi

# The entrypoint, appended to a copy of the cached root filesystem.
mkdir -p "$work/add/usr/local/bin"
install -m 0755 docker/postgres-entrypoint.sh "$work/add/usr/local/bin/casparian-postgres-entrypoint"
cp "$base" "$work/rootfs.tar"
tar --numeric-owner --owner=0 --group=0 -C "$work/add" -rf "$work/rootfs.tar" ./usr/local/bin/casparian-postgres-entrypoint

old="$(docker image inspect -f '{{.Id}}' "$image" 2>/dev/null || true)"
docker import \
  --change "LABEL $label=$recipe" \
  --change 'ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PGDATA=/var/lib/postgresql/data/pgdata' \
  --change 'USER postgres' \
  --change 'WORKDIR /var/lib/postgresql' \
  --change 'EXPOSE 5432' \
  --change 'ENTRYPOINT ["/usr/local/bin/casparian-postgres-entrypoint"]' \
  --change 'CMD []' \
  "$work/rootfs.tar" "$image" >/dev/null
# The image this one replaces, unless a container still uses it.
new="$(docker image inspect -f '{{.Id}}' "$image")"
if [ -n "$old" ] && [ "$old" != "$new" ]; then
  docker rmi "$old" >/dev/null 2>&1 || true
fi
echo "built $image (recipe $recipe, $(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%d MB", $1/1e6}'))"
