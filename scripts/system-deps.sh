#!/usr/bin/env bash
# Install the Debian packages a make target needs, if they are missing.
#   test:  chromium + chromium-driver (the HTML report is rendered headless in a test)
#   bench: dataset-fashion-mnist (real-image benchmark) and opencv-doc (sample photos)
set -euo pipefail
case "${1:-test}" in
  test)  pkgs=(chromium chromium-driver) ;;
  bench) pkgs=(dataset-fashion-mnist opencv-doc chromium) ;;
  *) echo "usage: $0 test|bench" >&2; exit 2 ;;
esac
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null; then SUDO=sudo; else
    echo "warning: missing Debian packages ${missing[*]} and not root; tests that need them will be skipped" >&2
    exit 0
  fi
else SUDO=; fi
echo "installing Debian packages: ${missing[*]}" >&2
$SUDO apt-get update -qq >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
