#!/usr/bin/env bash
# Runs Swiftiply's whole test suite on a fresh machine.
# Installs what the tests need when it is missing (a C linker for cargo,
# curl, Ruby with rack for tests/rack.rs, Chromium for tests/status_page.rs),
# then runs every unit and end-to-end test.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
command -v curl >/dev/null 2>&1 || need_apt+=(curl)
# tests/rack.rs runs clients/ruby/swiftiply_rack.rb: Ruby's standard library + rack.
if ! command -v ruby >/dev/null 2>&1 || ! ruby -e 'require "rack"' >/dev/null 2>&1; then
  need_apt+=(ruby ruby-rack)
fi
# tests/status_page.rs renders the status page in headless Chromium.
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -eq 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  else
    sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}"
  fi
fi
if ! command -v cargo >/dev/null 2>&1; then
  echo "tests/run.sh: cargo not found; install Rust from https://rustup.rs first" >&2
  exit 1
fi
exec cargo test "$@"
