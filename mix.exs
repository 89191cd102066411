defmodule Mix.Tasks.Compile.RedixRsNative do
  # Builds the NIF crate with cargo and copies the library to `priv/native` of the app's build path,
  # where `:code.priv_dir(:redix_rs)` finds it: also on a fresh clone and when redix_rs is a path
  # dependency. Defined here so it exists before the project compiles; it is not shipped in the library.
  #
  # REDIX_RS_BUILD=debug builds the debug profile (fast iteration); the default is release.
  # CARGO_TARGET_DIR is honoured.
  @moduledoc false
  use Mix.Task.Compiler

  @crate "redix_rs_nif"
  @root __DIR__

  @impl true
  def run(_args) do
    profile = if System.get_env("REDIX_RS_BUILD") == "debug", do: "debug", else: "release"
    dest_dir = Path.join(Mix.Project.app_path(), "priv/native")
    dest = Path.join(dest_dir, "lib#{@crate}.so")
    marker = Path.join(dest_dir, "profile")

    if stale?(dest, marker, profile) do
      build(profile)
      File.mkdir_p!(dest_dir)

      # Copy then rename: a VM that has the old library loaded keeps its (unlinked) file intact, where
      # overwriting it in place would crash that VM.
      tmp = dest <> ".tmp"
      File.cp!(built_library(profile), tmp)
      File.rename!(tmp, dest)
      File.write!(marker, profile)
      :ok
    else
      :noop
    end
  end

  defp stale?(dest, marker, profile) do
    sources =
      Path.wildcard(Path.join(@root, "native/**/*.{rs,toml}")) ++
        Enum.map(["Cargo.toml", "Cargo.lock"], &Path.join(@root, &1))

    File.read(marker) != {:ok, profile} or Mix.Utils.stale?(sources, [dest])
  end

  defp build(profile) do
    cargo = System.find_executable("cargo") || Mix.raise(cargo_missing())

    args =
      ["build", "--locked", "-p", @crate] ++ if(profile == "release", do: ["--release"], else: [])

    Mix.shell().info("Compiling NIF crate #{@crate} (#{profile}) with cargo")

    case System.cmd(cargo, args, cd: @root, stderr_to_stdout: true, into: IO.stream(:stdio, :line)) do
      {_, 0} -> :ok
      {_, status} -> Mix.raise("cargo build of #{@crate} failed with exit status #{status}")
    end
  end

  defp built_library(profile) do
    target = System.get_env("CARGO_TARGET_DIR") || Path.join(@root, "target")
    dir = Path.join(Path.expand(target, @root), profile)

    Enum.find(["so", "dylib"], &File.exists?(Path.join(dir, "lib#{@crate}.#{&1}")))
    |> case do
      nil -> Mix.raise("cargo succeeded but lib#{@crate} was not found in #{dir}")
      ext -> Path.join(dir, "lib#{@crate}.#{ext}")
    end
  end

  defp cargo_missing do
    "cargo was not found: install Rust >= 1.91 (https://rustup.rs) to build redix_rs's NIF"
  end
end

defmodule RedixRs.MixProject do
  use Mix.Project

  @version "0.1.0"

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
      docs: [main: "RedixRs"],
      # The NIF is built from source on the user's machine by the compiler above: ship its crates.
      package: [
        licenses: ["MIT"],
        links: %{},
        files: ~w(lib native/redix_rs_core/src native/redix_rs_core/Cargo.toml
                  native/redix_rs_nif/src native/redix_rs_nif/Cargo.toml
                  Cargo.toml Cargo.lock mix.exs README.md .formatter.exs)
      ]
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
