#!/usr/bin/env bash
# Installs the benchmark's peer, oauth2-proxy at the pinned version, with `go install`
# (Go module proxy) into GOBIN (default ~/go/bin), unless that exact version is there already.
# A cold install takes about 2 minutes on 2 cores; afterwards this is a version check.
# bench/run calls it; .ci/run runs it as its "bench tools" phase (the CI smoke test needs it).
set -euo pipefail

OAUTH2_PROXY_VERSION=v7.15.6

bin="${GOBIN:-${GOPATH:-${HOME}/go}/bin}"
export GOBIN="${bin}" GOFLAGS="${GOFLAGS:-} -buildvcs=false"

# The module version recorded in the binary (`oauth2-proxy --version` says "undefined"
# for a `go install` build, which sets no version at link time).
installed() {
  go version -m "${bin}/$1" 2>/dev/null | awk '$1 == "mod" { print $3 }'
}

if [[ "$(installed oauth2-proxy)" != "${OAUTH2_PROXY_VERSION}" ]]; then
  echo "go install oauth2-proxy ${OAUTH2_PROXY_VERSION}"
  go install "github.com/oauth2-proxy/oauth2-proxy/v7@${OAUTH2_PROXY_VERSION}"
fi
echo "oauth2-proxy $(installed oauth2-proxy) in ${bin}"
