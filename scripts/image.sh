#!/usr/bin/env bash
# make image: the container image s3dock:VERSION, built FROM scratch with only what dist/s3dock (the
# Linux x64 single executable, make build) needs: the shared libraries ldd lists for it on this
# machine, Debian's CA certificates, and passwd/group/nsswitch files so the user and host names
# resolve. Nothing is pulled: the engine builds it from dist/image/ (see the Dockerfile).
set -euo pipefail
cd "$(dirname "$0")/.."

binary=dist/s3dock
[ -x "$binary" ] || { echo "$binary is missing: run make build first (make image does)" >&2; exit 1; }
version=$(node -p 'require("./package.json").version')
context=dist/image
rootfs=$context/rootfs

rm -rf "$context"
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/ssl/certs" "$rootfs/root" "$rootfs/tmp"
cp "$binary" "$rootfs/usr/local/bin/s3dock"
# Each library at the path the dynamic loader looks for it (symbolic links resolved), the loader
# itself included: "name => /path (addr)" or "/path (addr)"; the vDSO has no file.
ldd "$binary" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | while read -r lib; do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done
cp -L /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
printf 'hosts: files dns\n' >"$rootfs/etc/nsswitch.conf"
chmod 1777 "$rootfs/tmp"
cp Dockerfile "$context/Dockerfile"

docker build --quiet --tag "s3dock:$version" "$context" >/dev/null
size=$(docker image inspect --format '{{.Size}}' "s3dock:$version")
echo "image    s3dock:$version  $(awk -v b="$size" 'BEGIN { printf "%.1f MiB", b / 1048576 }')  ($(find "$rootfs" -type f | wc -l) files)"
