#!/usr/bin/env bash
# Re-fetches the vendored front-end files from the npm registry into static/vendor/ (served) and tests/browser/vendor/
# (axe-core, which only the browser tests inject).
# The files are committed; run this only to upgrade (edit the versions below).
set -euo pipefail
cd "$(dirname "$0")/.."
dest=static/vendor
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fetch() {  # fetch <package@version> <file in package> <destination path (under static/vendor/ unless it has a /)>
  (cd "$tmp" && npm pack --silent "$1" >/dev/null)
  local tgz
  tgz=$(ls "$tmp"/*.tgz)
  tar -xzf "$tgz" -C "$tmp"
  case "$3" in */*) cp "$tmp/package/$2" "$3" ;; *) cp "$tmp/package/$2" "$dest/$3" ;; esac
  rm -rf "$tmp"/package "$tgz"
}
mkdir -p "$dest"
fetch htmx.org@2.0.11 dist/htmx.min.js htmx.min.js
fetch @picocss/pico@2.1.1 css/pico.min.css pico.min.css
fetch uplot@1.6.32 dist/uPlot.iife.min.js uPlot.iife.min.js
fetch uplot@1.6.32 dist/uPlot.min.css uPlot.min.css
fetch uplot@1.6.32 LICENSE uPlot.LICENSE
fetch htmx.org@2.0.11 LICENSE htmx.LICENSE
fetch @picocss/pico@2.1.1 LICENSE.md pico.LICENSE.md
mkdir -p tests/browser/vendor
fetch axe-core@4.14.1 axe.min.js tests/browser/vendor/axe.min.js
fetch axe-core@4.14.1 LICENSE tests/browser/vendor/axe.LICENSE
ls -l "$dest"
