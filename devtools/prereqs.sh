#!/bin/sh
# The suite drives the clients people use: Debian's chromium (the Temporal Web UI, through
# Playwright) and prometheus (scraping the worker). Installs what is missing when run as root
# with apt-get (CI, a fresh machine); otherwise one line naming the packages, and a non-zero exit.
set -eu
missing=""
for tool in chromium prometheus; do
    command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing Debian's$missing for the tests (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if apt-get update -qq >/dev/null && apt-get install -y -qq $missing >/dev/null; then
        exit 0
    fi
    echo "error: apt-get install$missing failed; install them, then run make test again" >&2
    exit 1
fi
echo "error: the tests need Debian's$missing: sudo apt-get install$missing" >&2
exit 1
