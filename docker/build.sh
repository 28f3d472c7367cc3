#!/usr/bin/env bash
# Builds the Casparian image without a registry: compiles static binaries
# (CGO_ENABLED=0) of the Sentinel, the sample worker and the CLI, assembles
# a build context next to docker/Dockerfile, and builds it FROM scratch.
#
#   docker/build.sh                 # tags casparian:local
#   CASPARIAN_IMAGE=name:tag docker/build.sh
set -euo pipefail
cd "$(dirname "$0")/.."

image="${CASPARIAN_IMAGE:-casparian:local}"
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT

version="$(git describe --always --dirty 2>/dev/null || echo dev)"
mkdir -p "$ctx/bin"
for cmd in casparian-sentinel casparian-worker casparian; do
  CGO_ENABLED=0 go build -ldflags "-s -w -X main.version=$version" -o "$ctx/bin/$cmd" "./cmd/$cmd"
done
cp docker/Dockerfile docker/bootstrap.json "$ctx/"
mkdir -p "$ctx/writable/data/inbox" "$ctx/writable/data/output" "$ctx/writable/var/lib/casparian" "$ctx/writable/tmp" \
  "$ctx/writable/keys/sentinel" "$ctx/writable/keys/worker"
# Fresh secrets volumes start as these folders. The workers never mount
# keys/sentinel (the Sentinel's secret key and the API tokens).
chmod 0700 "$ctx/writable/keys/sentinel"
chmod 1777 "$ctx/writable/tmp"

# Without the buildx plugin, a Docker that defaults to BuildKit refuses to
# build; the legacy builder needs nothing more for a FROM scratch image.
if ! docker buildx version >/dev/null 2>&1; then
  export DOCKER_BUILDKIT=0
fi
docker build --quiet -t "$image" "$ctx" >/dev/null
echo "built $image ($version)"
