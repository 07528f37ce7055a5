#!/usr/bin/env bash
# Browser tests of the operator dashboard: Playwright (Python) driving Debian's chromium, never a downloaded one.
#   bash .ci/browser.sh install   # apt-get install chromium if /usr/bin/chromium is missing
#   bash .ci/browser.sh test      # run the tests marked `browser` (screenshots land in var/screenshots/)
#   bash .ci/browser.sh           # both
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}

install_chromium() {
  if [ -x /usr/bin/chromium ]; then
    echo "chromium present: $(/usr/bin/chromium --version 2>/dev/null || echo unknown version)"
    return
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
  /usr/bin/chromium --version || true
}

run_tests() {
  mkdir -p var/screenshots
  # PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD: the tests launch /usr/bin/chromium by path; nothing is fetched.
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 $PY -m pytest -m browser tests/browser -q "$@"
  echo "screenshots: $(ls var/screenshots | wc -l) files in var/screenshots/"
}

case "${1:-all}" in
  install) install_chromium ;;
  test) shift; run_tests "$@" ;;
  all) install_chromium; run_tests ;;
  *) echo "usage: $0 [install|test|all]" >&2; exit 2 ;;
esac
