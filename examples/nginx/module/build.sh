#!/usr/bin/env bash
# Builds ngx_http_wechat_oauth_module.so for Debian's nginx, with its
# nginx-dev package (apt-get install nginx nginx-dev):
#   examples/nginx/module/build.sh            # → examples/nginx/module/build/ngx_http_wechat_oauth_module.so
# PROFILE=debug uses target/debug; OUT_DIR picks where the .so goes.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../../.." && pwd)"
profile="${PROFILE:-release}"
out="${OUT_DIR:-$here/build}"
lib="$root/target/$profile/libwechat_oauth.a"
src=/usr/share/nginx/src
if [ ! -x "$src/configure" ]; then
  echo "build.sh: $src/configure not found: apt-get install nginx nginx-dev" >&2
  exit 1
fi
if [ ! -f "$lib" ]; then
  flag=(); [ "$profile" = release ] && flag=(--release)
  cargo build --manifest-path "$root/Cargo.toml" "${flag[@]}" -p wechat-oauth-ffi
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$src/." "$work/"
# shellcheck disable=SC1091
source "$src/conf_flags"   # NGX_CONF_FLAGS: how Debian built its nginx (module ABI must match)
cd "$work"
export WECHAT_OAUTH_LIB="$lib" WECHAT_OAUTH_INCLUDE="$root/include"
if ! ./configure "${NGX_CONF_FLAGS[@]}" --add-dynamic-module="$here" >configure.log 2>&1; then
  tail -30 configure.log >&2
  exit 1
fi
if ! make -f objs/Makefile modules >make.log 2>&1; then
  grep -E "error|warning" make.log | head -30 >&2 || tail -30 make.log >&2
  exit 1
fi
mkdir -p "$out"
cp objs/ngx_http_wechat_oauth_module.so "$out/"
echo "$out/ngx_http_wechat_oauth_module.so"
