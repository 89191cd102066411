#!/usr/bin/env bash
# Runs Dialyzer on the compiled app (`_build/$MIX_ENV/lib/redix_rs/ebin`, so `mix compile` first).
#
# No Hex dependency (no dialyxir): Debian's `erlang-dialyzer` is called directly. Its PLT (the types of
# OTP and Elixir, which takes minutes to build) is kept outside the checkout, under
# ${REDIX_RS_PLT_DIR:-${XDG_CACHE_HOME:-~/.cache}/redix_rs/plt}, one file per OTP/Elixir version,
# shared by every clone and worktree. It is built incrementally: the first run builds it, a later run
# adds only the applications it lacks (--add_to_plt), and Dialyzer itself re-checks the PLT against
# the installed .beam files at each run. A PLT is written to a temporary file and renamed, so an
# interrupted build leaves nothing half-made behind.
set -euo pipefail
cd "$(dirname "$0")/.."

ebin="_build/${MIX_ENV:-test}/lib/redix_rs/ebin"
[ -d "$ebin" ] || { echo "dialyzer: $ebin not found: run mix compile first" >&2; exit 1; }

# What redix_rs and its test support code call: OTP applications, then Elixir's (by directory, since
# they are not on Dialyzer's code path).
otp_apps=(erts kernel stdlib crypto ssl public_key)
versions=$(elixir -e '
  IO.write("otp#{:erlang.system_info(:otp_release)}-erts#{:erlang.system_info(:version)}-elixir#{System.version()} ")
  IO.write(Enum.map_join([:elixir, :logger], " ", &(:code.lib_dir(&1, :ebin))))')
read -r tag elixir_dirs <<<"$versions"
wanted=("${otp_apps[@]}" $elixir_dirs)
# Dialyzer reads Elixir's .beam files through Elixir's own debug-info backend: put it on the code path.
pa=()
for dir in $elixir_dirs; do pa+=(-pa "$dir"); done

plt_dir="${REDIX_RS_PLT_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/redix_rs/plt}"
plt="$plt_dir/$tag.plt"
listed="$plt.apps" # the applications (or directories) the PLT holds, one a line
mkdir -p "$plt_dir"

missing=()
for app in "${wanted[@]}"; do
  [ -f "$plt" ] && [ -f "$listed" ] && grep -qxF "$app" "$listed" || missing+=("$app")
done

if [ ${#missing[@]} -gt 0 ]; then
  tmp="$plt.tmp.$$"
  trap 'rm -f "$tmp"' EXIT
  apps=()
  dirs=()
  for app in "${missing[@]}"; do
    case "$app" in /*) dirs+=("$app") ;; *) apps+=("$app") ;; esac
  done
  args=()
  [ ${#apps[@]} -gt 0 ] && args+=(--apps "${apps[@]}")
  args+=("${dirs[@]}")
  if [ -f "$plt" ] && [ -f "$listed" ]; then
    echo "dialyzer: adding ${missing[*]} to $plt"
    cp "$plt" "$tmp"
    dialyzer "${pa[@]}" --add_to_plt --plt "$tmp" --output_plt "$tmp" "${args[@]}" || [ $? -eq 2 ]
  else
    echo "dialyzer: building $plt (a few minutes, once per OTP/Elixir version)"
    rm -f "$listed"
    dialyzer "${pa[@]}" --build_plt --output_plt "$tmp" "${args[@]}" || [ $? -eq 2 ]
  fi
  mv "$tmp" "$plt"
  printf '%s\n' "${missing[@]}" >>"$listed"
fi

# Warnings (exit status 2) fail the run, unknown functions and types included.
dialyzer "${pa[@]}" --plt "$plt" -Wunknown "$ebin"
