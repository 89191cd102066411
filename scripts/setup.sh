#!/usr/bin/env bash
# Installs what `make demo`, `make test`, `make lint` and `make bench` need and a fresh Debian/Ubuntu machine lacks.
# Each package is checked first (command -v / dpkg -s), so a machine that has everything installs nothing.
set -euo pipefail

need=()
have_cmd() { command -v "$1" >/dev/null 2>&1; }
have_pkg() { dpkg -s "$1" >/dev/null 2>&1; }

have_cmd elixir || need+=(elixir)
have_cmd erl || need+=(erlang-base)
have_pkg erlang-dev || need+=(erlang-dev)
have_cmd redis-server || need+=(redis-server)
have_cmd redis-cli || need+=(redis-tools)
have_cmd redis-sentinel || need+=(redis-sentinel)
# eredis, the peer the benchmarks compare against.
have_pkg erlang-redis-client || need+=(erlang-redis-client)
# Dialyzer, run by `make dialyzer` (part of `make lint`).
have_pkg erlang-dialyzer || need+=(erlang-dialyzer)

if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${need[@]}" >/dev/null
fi

# A Debian-packaged redis-server is started as a system service on install; the project never uses it
# (tests start their own servers on free ports), so leave it alone.

if ! have_cmd cargo; then
  echo "setup: cargo not found: install Rust >= 1.91 with rustup (https://rustup.rs)" >&2
  exit 1
fi
