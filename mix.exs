# The Mix compiler that installs the NIF (a precompiled artifact verified by its SHA-256, or a cargo
# build) and the `mix redix_rs.precompile` task that makes those artifacts. Loaded here, so that the
# compiler exists before the project compiles; it is not shipped in the library.
Code.require_file("mix/native.exs", __DIR__)

defmodule RedixRs.MixProject do
  use Mix.Project

  @version "0.1.0"
  # Also the base of the precompiled NIFs' default download URL (<source_url>/releases/download/v<version>).
  @source_url "https://github.com/redix-rs/redix_rs"

  def project do
    [
      app: :redix_rs,
      version: @version,
      elixir: "~> 1.14",
      start_permanent: Mix.env() == :prod,
      compilers: [:redix_rs_native] ++ Mix.compilers(),
      elixirc_paths: elixirc_paths(Mix.env()),
      deps: [],
      description: "A Redis client for Elixir with a Rust core, a drop-in for Redix",
      source_url: @source_url,
      docs: docs(),
      package: package()
    ]
  end

  defp docs do
    [
      main: "readme",
      source_ref: "v#{@version}",
      extras: [
        "README.md",
        "guides/migrating_from_redix.md",
        "guides/how_it_works.md",
        "guides/telemetry.md",
        "guides/pubsub_supervision.md",
        "CHANGELOG.md"
      ]
    ]
  end

  # What `mix hex.build` ships: the Elixir sources, the native crates' sources with Cargo.lock (so a
  # source build uses the same crates), the Mix code that installs the NIF, and the release's
  # checksum file (written by `mix redix_rs.precompile`). Never a build directory.
  defp package do
    [
      licenses: ["MIT"],
      links: %{"GitHub" => @source_url, "Changelog" => "#{@source_url}/blob/main/CHANGELOG.md"},
      files: ~w(lib mix/native.exs mix.exs .formatter.exs
                native/redix_rs_core/src native/redix_rs_core/Cargo.toml
                native/redix_rs_nif/src native/redix_rs_nif/Cargo.toml Cargo.toml Cargo.lock
                checksum-Elixir.RedixRs.Native.exs
                README.md CHANGELOG.md LICENSE guides)
    ]
  end

  def application do
    [
      extra_applications: [:logger],
      mod: {RedixRs.Application, []}
    ]
  end

  defp elixirc_paths(:test), do: ["lib", "test/support"]
  # The benchmarks reuse the test suite's redis-server launcher, not its :telemetry stand-in.
  defp elixirc_paths(:bench),
    do: ["lib", "bench/lib", "test/support/redis_server.ex", "test/support/tls_certs.ex"]

  defp elixirc_paths(_), do: ["lib"]
end
