#!/usr/bin/env bash
# Installs Keycloak (the interop tests' IdP) from Maven Central into KEYCLOAK_HOME
# (default ~/.cache/authgate/keycloak-VERSION), unless that version is there already,
# and records a Java 21+ home beside it (Keycloak 26 refuses older Java; Debian's default is 17).
# It also runs Keycloak's build step once (the tests' build options, ~30 s), so that every test
# session starts the server with `start --optimized` instead of `start-dev`, which rebuilds on
# every start (~40 s more here). A cold install downloads about 170 MB; a warm one returns at once.
set -euo pipefail

VERSION=26.7.3
home="${KEYCLOAK_HOME:-${HOME}/.cache/authgate/keycloak-${VERSION}}"

# The major version a JDK's `release` file records (JAVA_VERSION="25.0.3" -> 25).
java_major() {
  sed -n 's/^JAVA_VERSION="\([0-9]*\).*/\1/p' "$1/release" 2>/dev/null
}

# JAVA_HOME when it is 21 or newer, else the newest such JDK under /usr/lib/jvm.
find_java() {
  local candidate best="" best_major=0 major
  for candidate in "${JAVA_HOME:-}" /usr/lib/jvm/*; do
    [[ -n ${candidate} && -x ${candidate}/bin/java ]] || continue
    major="$(java_major "${candidate}")"
    if [[ -n ${major} && ${major} -ge 21 && ${major} -gt ${best_major} ]]; then
      best="${candidate}" best_major="${major}"
    fi
  done
  [[ -n ${best} ]] || { echo "no Java 21 or newer found (JAVA_HOME, /usr/lib/jvm)" >&2; return 1; }
  echo "${best}"
}

java_home="$(find_java)"
if [[ ! -x "${home}/bin/kc.sh" || "$(cat "${home}/version" 2>/dev/null)" != "${VERSION}" ]]; then
  echo "mvn dependency:get keycloak-quarkus-dist ${VERSION}"
  mvn -q -B -Dstyle.color=never dependency:get -Dtransitive=false \
    -Dartifact="org.keycloak:keycloak-quarkus-dist:${VERSION}:zip"
  zip="${HOME}/.m2/repository/org/keycloak/keycloak-quarkus-dist/${VERSION}"
  zip="${zip}/keycloak-quarkus-dist-${VERSION}.zip"
  staging="$(mktemp -d "${TMPDIR:-/tmp}/authgate-keycloak-XXXXXX")"
  unzip -q "${zip}" -d "${staging}"
  rm -rf "${home}"
  mkdir -p "$(dirname "${home}")"
  mv "${staging}/keycloak-${VERSION}" "${home}"
  rmdir "${staging}"
  echo "${VERSION}" >"${home}/version"
fi
echo "${java_home}" >"${home}/java-home"
# The build options tests/keycloak.py starts with: H2 in the session's own data directory.
build_options=(--db=dev-file)
if [[ "$(cat "${home}/tests-build" 2>/dev/null)" != "${build_options[*]}" ]]; then
  echo "kc.sh build ${build_options[*]}"
  JAVA_HOME="${java_home}" "${home}/bin/kc.sh" build "${build_options[@]}" >/dev/null
  echo "${build_options[*]}" >"${home}/tests-build"
fi
echo "keycloak $(cat "${home}/version") in ${home}, Java $(java_major "${java_home}") at ${java_home}"
