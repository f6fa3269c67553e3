#!/usr/bin/env bash
# The test sandbox image of the docker backend's tests, built with no image
# registry: Debian's static busybox with its applets, root and a user sandbox
# (1000:1000, home /workspace), an empty /workspace owned by 1000:1000 (a named
# volume mounted there takes that owner) and /tmp mode 1777, imported into the
# local engine. Running it again imports it again.
#
#   bash docker/test-image.sh [name]      (default sandbox-test:busybox)
#
# Needs busybox-static (/bin/busybox) and an engine /usr/bin/docker reaches.
# The tests find the image by SANDBOX_TEST_IMAGE (default sandbox-test:busybox).
set -euo pipefail

name="${1:-sandbox-test:busybox}"
busybox=/bin/busybox
if ! "$busybox" --list >/dev/null 2>&1 || ldd "$busybox" >/dev/null 2>&1; then
  echo "$busybox is not a static busybox: apt-get install busybox-static" >&2
  exit 1
fi

root="$(mktemp -d)"
trap 'rm -rf "$root" "$root.tar"' EXIT
chmod 755 "$root"
mkdir -p "$root"/{bin,etc,workspace,tmp,proc,sys,dev}
cp "$busybox" "$root/bin/busybox"
chmod 755 "$root/bin/busybox"
# The applet named busybox is skipped: its link would replace the binary.
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
sandbox:x:1000:1000:sandbox:/workspace:/bin/sh
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
sandbox:x:1000:
EOF
chmod 644 "$root/etc/passwd" "$root/etc/group"
chmod 1777 "$root/tmp"
chmod 755 "$root/workspace"

# Numeric owners: root for everything but /workspace, which is 1000:1000.
tar -C "$root" --numeric-owner --owner=0 --group=0 --exclude=./workspace -cf "$root.tar" .
tar -C "$root" --numeric-owner --owner=1000 --group=1000 --no-recursion -rf "$root.tar" ./workspace
previous="$(/usr/bin/docker image inspect --format '{{.Id}}' "$name" 2>/dev/null || true)"
/usr/bin/docker import - "$name" <"$root.tar" >/dev/null
# The image this one replaces goes, unless a container still uses it.
if [ -n "$previous" ] && [ "$previous" != "$(/usr/bin/docker image inspect --format '{{.Id}}' "$name")" ]; then
  /usr/bin/docker image rm "$previous" >/dev/null 2>&1 || true
fi
echo "imported $name"
