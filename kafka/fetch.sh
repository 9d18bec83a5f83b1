#!/usr/bin/env bash
# Put the Apache Kafka broker jars into a cache outside the repository and
# print the directory that holds them (the last line on stdout).
#
#   USAGELOG_CACHE_DIR      cache root (default: $HOME/.cache/usagelog)
#   USAGELOG_KAFKA_VERSION  Kafka version (default: kafka.version in pom.xml)
#
# The jars land in $USAGELOG_CACHE_DIR/kafka/<version>/lib/. A marker file
# holding a checksum of pom.xml makes later runs return at once; editing the
# pom (or deleting the marker) fetches again.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
pom="$here/pom.xml"

die() {
    echo "fetch.sh: $*" >&2
    exit 1
}

[[ -f "$pom" ]] || die "missing $pom"

default_version="$(sed -n 's:.*<kafka\.version>\(.*\)</kafka\.version>.*:\1:p' "$pom" | head -n 1)"
[[ -n "$default_version" ]] || die "no <kafka.version> property in $pom"
version="${USAGELOG_KAFKA_VERSION:-$default_version}"
[[ "$version" =~ ^[0-9A-Za-z._-]+$ ]] || die "USAGELOG_KAFKA_VERSION='$version' is not a version"

cache_root="${USAGELOG_CACHE_DIR:-${HOME:?HOME is not set; set USAGELOG_CACHE_DIR}/.cache/usagelog}"
dest="$cache_root/kafka/$version"
lib="$dest/lib"
marker="$dest/.complete"

# The marker records which pom the jars came from, so a changed dependency
# list is noticed instead of silently reusing an older classpath.
stamp="$(sha256sum "$pom" | cut -d' ' -f1)"
if [[ -d "$lib" && -f "$marker" && "$(cat "$marker")" == "$stamp" ]]; then
    echo "$lib"
    exit 0
fi

command -v mvn >/dev/null 2>&1 || die "mvn (Apache Maven) not found on PATH; it resolves the Kafka jars"

mkdir -p "$dest"
# Resolve into a private directory and move it into place at the end, so an
# interrupted or concurrent run never leaves a half-filled lib/ behind.
staging="$(mktemp -d "$dest/lib.partial.XXXXXX")"
# On failure also drop $dest if nothing else is in it, so a mistyped version leaves no trace.
trap 'rm -rf "$staging"; rmdir "$dest" 2>/dev/null || true' EXIT

echo "fetch.sh: resolving Apache Kafka $version into $lib" >&2
# Maven's own output goes to stderr: stdout carries only the lib path.
if ! mvn -q -B -f "$pom" \
        -Dkafka.version="$version" \
        dependency:copy-dependencies \
        -DincludeScope=runtime \
        -DoutputDirectory="$staging" >&2; then
    die "mvn could not resolve org.apache.kafka:kafka_2.13:$version (see the Maven output above)"
fi

compgen -G "$staging/kafka_2.13-*.jar" >/dev/null \
    || die "kafka_2.13 jar missing from the resolved classpath in $staging"

rm -rf "$lib"
mv "$staging" "$lib"
trap - EXIT
echo "$stamp" >"$marker"
echo "$lib"
