#!/usr/bin/env bash
# Packages the nginx module for the nginx installed here (Debian's), so it
# depends on that exact module ABI (nginx-abi-…):
#   packaging/nginx/build-deb.sh [MODULE.so] [OUT_DIR]
# MODULE.so defaults to examples/nginx/module/build/ngx_http_wechat_oauth_module.so
# (examples/nginx/module/build.sh); the package goes to OUT_DIR (target/debian).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
so="${1:-$root/examples/nginx/module/build/ngx_http_wechat_oauth_module.so}"
out="${2:-$root/target/debian}"
name=libnginx-mod-http-wechat-oauth
version="$(sed -n 's/^version = "\(.*\)"/\1/p' "$root/Cargo.toml" | head -1)-1"
arch="$(dpkg --print-architecture)"
abi="$(dpkg-query -W -f='${Provides}' nginx | tr ',' '\n' | grep -o 'nginx-abi-[^ ]*' | head -1)"
if [ -z "$abi" ]; then
  echo "build-deb.sh: the installed nginx names no nginx-abi (apt-get install nginx)" >&2
  exit 1
fi
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
install -D -m 0644 "$so" "$stage/usr/lib/nginx/modules/ngx_http_wechat_oauth_module.so"
install -D -m 0644 /dev/stdin "$stage/usr/share/nginx/modules-available/mod-http-wechat-oauth.conf" <<'CONF'
load_module modules/ngx_http_wechat_oauth_module.so;
CONF
install -D -m 0644 "$root/LICENSE" "$stage/usr/share/doc/$name/copyright"
mkdir -p "$stage/DEBIAN"
cat > "$stage/DEBIAN/control" <<CONTROL
Package: $name
Version: $version
Architecture: $arch
Section: httpd
Priority: optional
Maintainer: wechat-gateway maintainers
Depends: $abi, libc6
Description: WeChat login in nginx (the wechat_oauth module)
 The wechat_oauth directive puts WeChat login in front of a location, with
 the same decisions as the wechat-gateway (the library is linked in).
 Built for $abi.
CONTROL
cat > "$stage/DEBIAN/postinst" <<'POSTINST'
#!/bin/sh
set -e
if [ "$1" = configure ]; then
    ln -sf /usr/share/nginx/modules-available/mod-http-wechat-oauth.conf \
        /etc/nginx/modules-enabled/50-mod-http-wechat-oauth.conf
fi
exit 0
POSTINST
cat > "$stage/DEBIAN/postrm" <<'POSTRM'
#!/bin/sh
set -e
if [ "$1" = remove ] || [ "$1" = purge ]; then
    rm -f /etc/nginx/modules-enabled/50-mod-http-wechat-oauth.conf
fi
exit 0
POSTRM
chmod 0755 "$stage/DEBIAN/postinst" "$stage/DEBIAN/postrm"
mkdir -p "$out"
deb="$out/${name}_${version}_${arch}.deb"
dpkg-deb --root-owner-group --build "$stage" "$deb" >/dev/null
echo "$deb"
