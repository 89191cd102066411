# The two commands of the README: `make demo` and `make test` (plus `make bench` and `make lint`).
# Each installs what is missing first (scripts/setup.sh).

export MIX_ENV ?= test
MIX := mix
# Every cargo command below builds in _build/cargo, the target directory `mix compile` uses for the NIF
# in every Mix env (set in .cargo/config.toml; CARGO_TARGET_DIR, when set, wins for both).

.PHONY: demo test bench setup lint dialyzer clean

setup:
	@bash scripts/setup.sh

demo: setup
	MIX_ENV=dev $(MIX) run examples/tour.exs

test: setup
	cargo test --locked -p redix_rs_core
	$(MIX) test

bench: setup
	MIX_ENV=bench $(MIX) run bench/run.exs

# The soak that counts every reply (a few minutes): 1,000,000 INCRs from 500 processes on one
# connection while the connection is killed and the server restarted and paused, then 10,000
# start/stop cycles of connections and of pub/sub connections; prints its accounting, fails on any
# broken invariant. SOAK_CALLS, SOAK_PROCESSES, SOAK_CYCLES, SOAK_SEED change the run.
.PHONY: soak
soak: setup
	MIX_ENV=test $(MIX) run bench/soak.exs

lint: setup
	cargo fmt --all -- --check
	cargo clippy --locked --workspace --all-targets -- -D warnings
	cargo fmt --manifest-path bench/latency_proxy/Cargo.toml -- --check
	cargo clippy --locked --manifest-path bench/latency_proxy/Cargo.toml --all-targets -- -D warnings
	$(MIX) format --check-formatted
	$(MIX) compile --warnings-as-errors --force
	bash scripts/dialyzer.sh

# Dialyzer alone (also the last step of `make lint`). Its PLT lives in ~/.cache/redix_rs/plt: the first
# run builds it (1.5-2.5 min on 2 cores), later runs take seconds.
dialyzer: setup
	$(MIX) compile
	bash scripts/dialyzer.sh

clean:
	rm -rf _build target
