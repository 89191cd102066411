# The two commands of the README: `make demo` and `make test` (plus `make bench`).
# Each installs what is missing first (scripts/setup.sh).

export MIX_ENV ?= test
MIX := mix

.PHONY: demo test bench setup lint clean

setup:
	@bash scripts/setup.sh

demo: setup
	MIX_ENV=dev $(MIX) run examples/tour.exs

test: setup
	cargo test --locked -p redix_rs_core
	$(MIX) test

bench: setup
	MIX_ENV=bench $(MIX) run bench/run.exs

lint: setup
	cargo fmt --all -- --check
	cargo clippy --locked --workspace --all-targets -- -D warnings
	$(MIX) format --check-formatted
	$(MIX) compile --warnings-as-errors --force

clean:
	rm -rf _build target
