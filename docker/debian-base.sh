#!/usr/bin/env bash
# A Debian bookworm base image made from Debian's packages, for hosts with no
# image registry: debootstrap --variant=minbase into a temp folder, imported
# into the local engine. The sandbox image (docker/sandbox.Dockerfile) is then
# built on it:
#
#   sudo bash docker/debian-base.sh [name]      (default debian-base:bookworm)
#   /usr/bin/docker build --network host --build-arg BASE=debian-base:bookworm \
#     -f docker/sandbox.Dockerfile -t sandbox-service-sandbox:latest docker/
#
# --network host is for an engine started with --bridge=none, whose build
# steps otherwise have no network for apt-get.
#
# The Debian mirror is the one this machine's apt uses (the first bookworm
# entry of /etc/apt/sources.list or /etc/apt/sources.list.d/*.{list,sources});
# DEBIAN_MIRROR=<url> names another. Needs root and debootstrap
# (apt-get install debootstrap).
set -euo pipefail

name="${1:-debian-base:bookworm}"
suite=bookworm

apt_mirror() {
  local file
  for file in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$file" ] || continue
    case "$file" in
      *.sources)
        # deb822 stanzas, separated by blank lines: the first URI of an
        # enabled "Types: deb" stanza whose Suites has bookworm itself.
        awk -v suite="$suite" '
          function flush() {
            if (uri != "" && deb && enabled && has_suite) { print uri; found = 1; exit }
            uri = ""; deb = 0; enabled = 1; has_suite = 0
          }
          BEGIN { enabled = 1 }
          /^[[:space:]]*$/ { flush(); next }
          /^#/ { next }
          tolower($1) == "types:" { for (i = 2; i <= NF; i++) if ($i == "deb") deb = 1 }
          tolower($1) == "uris:" { uri = $2 }
          tolower($1) == "suites:" { for (i = 2; i <= NF; i++) if ($i == suite) has_suite = 1 }
          tolower($1) == "enabled:" { enabled = (tolower($2) != "no") }
          END { if (!found) flush() }
        ' "$file"
        ;;
      *)
        # One-line entries: deb [options] uri suite components...
        awk -v suite="$suite" '
          $1 == "deb" {
            i = 2
            if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
            if ($(i + 1) == suite) { print $i; exit }
          }
        ' "$file"
        ;;
    esac
  done | head -n 1
}

mirror="${DEBIAN_MIRROR:-$(apt_mirror)}"
if [ -z "$mirror" ]; then
  echo "no $suite entry in this machine's apt sources: set DEBIAN_MIRROR=<url of a Debian mirror>" >&2
  exit 1
fi
if ! command -v debootstrap >/dev/null; then
  echo "debootstrap is missing: apt-get install debootstrap" >&2
  exit 1
fi

root="$(mktemp -d)"
mounted_in_root() { awk -v root="$root/" 'index($2, root) == 1 { print $2 }' /proc/mounts | sort -r; }
cleanup() {
  # debootstrap mounts /proc, /sys (and in some containers parts of /dev) in
  # the new root and unmounts them when it ends; a killed run may leave them,
  # and the folder is not removed while anything is mounted in it.
  local mount
  for mount in $(mounted_in_root); do umount "$mount" 2>/dev/null || true; done
  if [ -n "$(mounted_in_root)" ]; then
    echo "left $root in place: something is still mounted in it" >&2
    rm -f "$root.log"
    return
  fi
  rm -rf "$root" "$root.log"
}
trap cleanup EXIT
chmod 755 "$root"

echo "debootstrap $suite from $mirror"
if ! debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$root.log" 2>&1; then
  tail -n 20 "$root.log" >&2
  exit 1
fi
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" --numeric-owner -c . | /usr/bin/docker import - "$name" >/dev/null
echo "imported $name"
