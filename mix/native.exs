# How redix_rs gets its native library: the Mix compiler that installs it (a precompiled artifact
# verified by checksum, or a cargo build), and the Mix task that makes those artifacts.
#
# Loaded by mix.exs, so it exists before the project compiles (the compiler must run first) and is
# not part of the library: none of this is loaded in a running application. See README "Building".

defmodule RedixRs.NativeBuild do
  # What the compiler and `mix redix_rs.precompile` share: the target triple, the artifacts' names
  # (those of the Rustler ecosystem: `lib<crate>-v<version>-nif-<NIF version>-<target>.so.tar.gz`,
  # holding one file, the same name without `.tar.gz`), the checksum file, the download and the
  # cargo build.
  @moduledoc false

  @crate "redix_rs_nif"
  # The crate is built with rustler's `nif_version_2_16` feature: it loads on NIF 2.16 (OTP 24, 25)
  # and on every later 2.x.
  @nif_version "2.16"
  @root Path.dirname(__DIR__)
  @checksum_file "checksum-Elixir.RedixRs.Native.exs"

  def crate, do: @crate
  def nif_version, do: @nif_version
  def root, do: @root

  @doc "The checksum file of the release, at the project root (`checksum-Elixir.RedixRs.Native.exs`)."
  def checksum_file, do: Path.join(@root, @checksum_file)

  @doc "Where the NIF is installed: `priv/native` of the app's build path."
  def dest_dir, do: Path.join(Mix.Project.app_path(), "priv/native")

  def artifact_name(version, target), do: library_name(version, target) <> ".tar.gz"

  def library_name(version, target),
    do: "lib#{@crate}-v#{version}-nif-#{@nif_version}-#{target}.so"

  ## The running target

  @doc """
  The Rust target triple of the running VM, as precompiled artifacts are named
  (`x86_64-unknown-linux-gnu`, `aarch64-unknown-linux-musl`, `aarch64-apple-darwin`, ...).

  Linux's C library is what the running VM is linked against, read from its memory map
  (`/proc/self/maps`): an Alpine image gets `musl` even if its Erlang reports a `gnu`
  architecture, and a glibc machine gets `gnu` even with musl installed next to glibc. The
  architecture string of the VM decides when the map cannot be read.
  """
  def target(arch \\ :erlang.system_info(:system_architecture), maps \\ :read) do
    parts = arch |> to_string() |> String.split("-")

    case parts do
      [cpu, _vendor, "linux" | abi] ->
        {:ok, "#{normalize_cpu(cpu)}-unknown-linux-#{linux_abi(List.first(abi, "gnu"), maps)}"}

      [cpu, "apple", "darwin" <> _] ->
        cpu = if cpu == "arm", do: "aarch64", else: cpu
        {:ok, "#{cpu}-apple-darwin"}

      [cpu, _vendor, "freebsd" <> _] ->
        {:ok, "#{normalize_cpu(cpu)}-unknown-freebsd"}

      _ ->
        {:error, "no precompiled NIF is made for this system (#{arch})"}
    end
  end

  defp normalize_cpu("amd64"), do: "x86_64"
  defp normalize_cpu("arm64"), do: "aarch64"
  defp normalize_cpu("riscv64"), do: "riscv64gc"
  defp normalize_cpu(cpu), do: cpu

  defp linux_abi(abi, maps) do
    maps = if maps == :read, do: read_maps(), else: maps

    cond do
      maps == nil -> abi
      maps =~ "ld-musl-" or maps =~ "libc.musl-" -> String.replace_prefix(abi, "gnu", "musl")
      maps =~ ~r{/libc(-[\d.]+)?\.so} -> String.replace_prefix(abi, "musl", "gnu")
      true -> abi
    end
  end

  defp read_maps do
    case File.read("/proc/self/maps") do
      {:ok, maps} -> maps
      {:error, _} -> nil
    end
  end

  @doc "Whether a library built for NIF #{@nif_version} loads in this VM."
  def nif_compatible?(version \\ :erlang.system_info(:nif_version)) do
    case version |> to_string() |> String.split(".") |> Enum.map(&Integer.parse/1) do
      [{2, ""}, {minor, ""}] -> minor >= 16
      _ -> false
    end
  end

  ## What to install

  @doc """
  Decides where the NIF comes from: `{:precompiled, artifact}` or `{:source, why}`.
  """
  def plan(version, profile) do
    cond do
      System.get_env("REDIX_RS_FORCE_BUILD") in ["1", "true"] ->
        {:source, "REDIX_RS_FORCE_BUILD is set"}

      repository?() ->
        {:source,
         "this is redix_rs's own repository (the top-level project), always built from source"}

      profile != "release" ->
        {:source, "REDIX_RS_BUILD=#{profile}: precompiled NIFs are release builds"}

      not nif_compatible?() ->
        {:source, "no precompiled NIF for NIF version #{:erlang.system_info(:nif_version)}"}

      true ->
        with {:ok, target} <- target(),
             {:ok, checksums} <- read_checksums(checksum_file()),
             name = artifact_name(version, target),
             {:ok, sha256} <- find_checksum(checksums, name, target, version) do
          {:precompiled, %{name: name, sha256: sha256, url: join_url(base_url(version), name)}}
        else
          {:error, why} -> {:source, why}
        end
    end
  end

  # redix_rs compiled as the top-level project (this repository: a checkout, `mix test`, `make test`,
  # CI) is always built from source, so its tests never run a library other than its own code's. As a
  # dependency its deps path is its parent project's.
  defp repository? do
    Path.expand(Mix.Project.deps_path()) == Path.join(@root, "deps")
  end

  defp find_checksum(checksums, name, target, version) do
    case Map.fetch(checksums, name) do
      {:ok, "sha256:" <> hex} ->
        {:ok, hex}

      {:ok, other} ->
        {:error, "#{@checksum_file} has an unsupported checksum for #{name}: #{inspect(other)}"}

      :error ->
        {:error, "no precompiled NIF for #{target} in #{@checksum_file} (version #{version})"}
    end
  end

  @doc "Where artifacts are downloaded from: REDIX_RS_PRECOMPILED_URL, config, or the release's URL."
  def base_url(version) do
    System.get_env("REDIX_RS_PRECOMPILED_URL") ||
      Application.get_env(:redix_rs, :precompiled_url) ||
      "#{Mix.Project.config()[:source_url]}/releases/download/v#{version}"
  end

  defp join_url(base, name), do: String.trim_trailing(base, "/") <> "/" <> name

  @doc "Where downloaded artifacts are kept (verified ones only): REDIX_RS_CACHE_DIR or the user cache."
  def cache_dir do
    case System.get_env("REDIX_RS_CACHE_DIR") do
      dir when dir in [nil, ""] -> :filename.basedir(:user_cache, ~c"redix_rs/precompiled")
      dir -> dir
    end
    |> Path.expand()
  end

  ## The checksum file

  @doc "Reads a checksum file: a literal map of artifact name to `\"sha256:<hex>\"` (never evaluated)."
  def read_checksums(path) do
    with {:ok, text} <- read_checksum_file(path),
         {:ok, {:%{}, _, pairs}} <- Code.string_to_quoted(text),
         true <- Enum.all?(pairs, &match?({k, v} when is_binary(k) and is_binary(v), &1)) do
      {:ok, Map.new(pairs)}
    else
      {:error, why} when is_binary(why) -> {:error, why}
      _ -> {:error, "#{path} is not a map of artifact names to checksums"}
    end
  end

  defp read_checksum_file(path) do
    case File.read(path) do
      {:ok, text} -> {:ok, text}
      {:error, :enoent} -> {:error, "no #{Path.basename(path)} (a development version)"}
      {:error, why} -> {:error, "cannot read #{path}: #{:file.format_error(why)}"}
    end
  end

  @doc "Records checksums in a checksum file, keeping the other targets of the same version."
  def write_checksums!(path, version, new) do
    kept =
      case read_checksums(path) do
        {:ok, old} -> Map.filter(old, fn {name, _} -> name =~ "-v#{version}-nif-" end)
        {:error, _} -> %{}
      end

    text =
      kept
      |> Map.merge(Map.new(new, fn {name, hex} -> {name, "sha256:" <> hex} end))
      |> inspect(limit: :infinity, printable_limit: :infinity)
      |> Code.format_string!()

    File.write!(path, [text, ?\n])
  end

  def sha256(data), do: :crypto.hash(:sha256, data) |> Base.encode16(case: :lower)

  ## Getting an artifact

  @doc """
  The artifact's bytes, verified: from the cache, else downloaded (then cached). `{:error, why}`
  when it cannot be had; a checksum mismatch raises, naming the file and both sums.
  """
  def fetch_artifact(%{name: name, sha256: expected, url: url}, cache_dir) do
    cached = Path.join(cache_dir, name)

    case File.read(cached) do
      {:ok, data} ->
        verify!(data, name, expected, "#{cached} (cached; delete it to download it again)")
        {:ok, data}

      {:error, _} ->
        with {:ok, data} <- download(url) do
          verify!(data, name, expected, url)
          cache(cached, data)
          {:ok, data}
        end
    end
  end

  defp verify!(data, name, expected, from) do
    actual = sha256(data)

    if actual != String.downcase(expected) do
      Mix.raise("""
      checksum mismatch for the precompiled NIF #{name}
        from:     #{from}
        expected: sha256:#{expected} (recorded in #{@checksum_file})
        got:      sha256:#{actual}
      It was not installed. Check where the artifact comes from (REDIX_RS_PRECOMPILED_URL or \
      config :redix_rs, :precompiled_url), or build from source with REDIX_RS_FORCE_BUILD=1.\
      """)
    end
  end

  # A cache that cannot be written costs a download next time, nothing else.
  defp cache(path, data) do
    tmp = "#{path}.#{System.unique_integer([:positive])}.tmp"

    with :ok <- File.mkdir_p(Path.dirname(path)),
         :ok <- File.write(tmp, data),
         :ok <- File.rename(tmp, path) do
      :ok
    else
      _ -> File.rm(tmp)
    end
  end

  def download(url) do
    case URI.parse(url) do
      %URI{scheme: "file", path: path} when is_binary(path) ->
        case File.read(path) do
          {:ok, data} -> {:ok, data}
          {:error, why} -> {:error, "cannot read #{path}: #{:file.format_error(why)}"}
        end

      %URI{scheme: scheme} when scheme in ["http", "https"] ->
        http_get(url, scheme)

      _ ->
        {:error, "#{url} is not an https://, http:// or file:// URL"}
    end
  end

  defp http_get(url, scheme) do
    {:ok, _} = Application.ensure_all_started(:inets)
    if scheme == "https", do: {:ok, _} = Application.ensure_all_started(:ssl)
    set_proxies()

    request = {String.to_charlist(url), [{~c"user-agent", ~c"redix_rs-mix"}]}
    options = [timeout: 120_000, connect_timeout: 30_000, autoredirect: true]

    case http_request(request, options, scheme) do
      {:ok, {{_, 200, _}, _headers, body}} -> {:ok, body}
      {:ok, {{_, status, reason}, _, _}} -> {:error, "#{url} answered #{status} #{reason}"}
      {:error, why} -> {:error, "cannot download #{url}: #{inspect(why)}"}
    end
  end

  defp http_request(request, options, "https") do
    http_request(request, [ssl: ssl_options()] ++ options, "http")
  rescue
    # :public_key.cacerts_get/0 raises when the system has no CA certificates.
    error -> {:error, Exception.message(error)}
  end

  defp http_request(request, options, _) do
    :httpc.request(:get, request, options, body_format: :binary)
  end

  defp ssl_options do
    [
      verify: :verify_peer,
      cacerts: :public_key.cacerts_get(),
      depth: 4,
      customize_hostname_check: [match_fun: :public_key.pkix_verify_hostname_match_fun(:https)]
    ]
  end

  defp set_proxies do
    Enum.each([{"HTTP_PROXY", :proxy}, {"HTTPS_PROXY", :https_proxy}], fn {var, key} ->
      case URI.parse(System.get_env(var) || System.get_env(String.downcase(var)) || "") do
        %URI{host: host, port: port} when is_binary(host) and is_integer(port) ->
          :httpc.set_options([{key, {{String.to_charlist(host), port}, []}}])

        _ ->
          :ok
      end
    end)
  end

  @doc "The library inside an artifact (a `.tar.gz` holding `name` minus `.tar.gz`)."
  def unpack!(data, name) do
    inner = String.replace_suffix(name, ".tar.gz", "")

    case :erl_tar.extract({:binary, data}, [:compressed, :memory]) do
      {:ok, files} ->
        Enum.find_value(files, fn {file, bin} -> if to_string(file) == inner, do: bin end) ||
          Mix.raise("the precompiled NIF #{name} does not hold #{inner}")

      {:error, why} ->
        Mix.raise("the precompiled NIF #{name} is not a .tar.gz: #{inspect(why)}")
    end
  end

  ## Building from source

  @doc "REDIX_RS_BUILD: release (the default), debug or profiling, the Cargo profiles."
  def profile! do
    case System.get_env("REDIX_RS_BUILD") do
      build when build in [nil, "", "release"] ->
        "release"

      build when build in ["debug", "profiling"] ->
        build

      other ->
        Mix.raise(
          "REDIX_RS_BUILD=#{other} is not a build: use release (the default), debug or profiling"
        )
    end
  end

  @doc """
  The Cargo target directory: CARGO_TARGET_DIR (relative to the project root, where cargo runs),
  else `_build/cargo`, one for every Mix env.
  """
  def cargo_target_dir do
    case System.get_env("CARGO_TARGET_DIR") do
      dir when dir in [nil, ""] -> default_cargo_target_dir()
      dir -> Path.expand(dir, @root)
    end
  end

  def default_cargo_target_dir, do: Path.join(Path.dirname(Mix.Project.build_path()), "cargo")

  @doc "Builds the NIF crate with cargo (`target: nil` for the host) and returns the library's path."
  def cargo_build!(profile, target, why \\ nil) do
    cargo = System.find_executable("cargo") || Mix.raise(cargo_missing(why))
    target_dir = cargo_target_dir()

    args =
      ["build", "--locked", "-p", @crate] ++
        case profile do
          "release" -> ["--release"]
          "debug" -> []
          other -> ["--profile", other]
        end ++ if(target, do: ["--target", target], else: [])

    Mix.shell().info("Compiling NIF crate #{@crate} (#{profile}) with cargo")

    opts = [
      cd: @root,
      env: [{"CARGO_TARGET_DIR", target_dir}],
      stderr_to_stdout: true,
      into: IO.stream(:stdio, :line)
    ]

    case System.cmd(cargo, args, opts) do
      {_, 0} -> :ok
      {_, status} -> Mix.raise("cargo build of #{@crate} failed with exit status #{status}")
    end

    dir = Path.join([target_dir, target || "", profile])

    Enum.find_value(["so", "dylib"], fn ext ->
      path = Path.join(dir, "lib#{@crate}.#{ext}")
      if File.exists?(path), do: path
    end) || Mix.raise("cargo succeeded but lib#{@crate} was not found in #{dir}")
  end

  defp cargo_missing(nil) do
    "cargo was not found: install Rust >= 1.91 (https://rustup.rs) to build redix_rs's NIF"
  end

  defp cargo_missing(why) do
    "cargo was not found, and redix_rs's NIF must be built from source: #{why}. Install Rust " <>
      ">= 1.91 (https://rustup.rs), or see \"Precompiled NIFs\" in redix_rs's README"
  end

  @doc "The host's target triple, from `rustc -vV`."
  def rustc_host! do
    rustc = System.find_executable("rustc") || Mix.raise("rustc was not found")
    {out, 0} = System.cmd(rustc, ["-vV"])

    case Regex.run(~r/^host: (\S+)$/m, out) do
      [_, host] -> host
      nil -> Mix.raise("cannot read the host target from `rustc -vV`:\n#{out}")
    end
  end

  ## Packaging

  @doc "Makes the artifact of `library` (a built NIF) in `out_dir`; returns its path and SHA-256."
  def package!(library, version, target, out_dir) do
    File.mkdir_p!(out_dir)
    name = artifact_name(version, target)
    path = Path.join(out_dir, name)
    inner = library_name(version, target)
    entry = {String.to_charlist(inner), String.to_charlist(library)}
    :ok = :erl_tar.create(String.to_charlist(path), [entry], [:compressed])
    {path, sha256(File.read!(path))}
  end
end

defmodule Mix.Tasks.Compile.RedixRsNative do
  # Installs the NIF into `priv/native` of the app's build path (where `:code.priv_dir(:redix_rs)`
  # finds it, also on a fresh clone and when redix_rs is a path dependency):
  #
  #   * a precompiled artifact, when the release's checksum file lists one for this target: from the
  #     cache, else downloaded, verified against its SHA-256 (a mismatch is a compile error, never a
  #     fallback), unpacked;
  #   * else a cargo build: when no artifact fits, when the download fails (after saying so), when
  #     REDIX_RS_FORCE_BUILD=1, with REDIX_RS_BUILD=debug|profiling, and always when redix_rs is the
  #     top-level project (this repository).
  #
  # `priv/native/profile` records what was installed, so that a no-op compile stays a no-op;
  # `mix compile --force` installs again.
  @moduledoc false
  use Mix.Task.Compiler

  alias RedixRs.NativeBuild

  @impl true
  def run(args) do
    version = Mix.Project.config()[:version]
    profile = NativeBuild.profile!()
    force = "--force" in args

    case NativeBuild.plan(version, profile) do
      {:precompiled, artifact} -> precompiled(artifact, profile, force)
      {:source, why} -> source(profile, why, force)
    end
  end

  # `mix clean` empties the shared Cargo target directory too (not a CARGO_TARGET_DIR of the user's).
  @impl true
  def clean do
    File.rm_rf!(NativeBuild.default_cargo_target_dir())
    :ok
  end

  defp precompiled(artifact, profile, force) do
    installed = "precompiled #{artifact.name} sha256:#{artifact.sha256}"

    if current?(installed) and not force do
      :noop
    else
      case NativeBuild.fetch_artifact(artifact, NativeBuild.cache_dir()) do
        {:ok, data} ->
          install(NativeBuild.unpack!(data, artifact.name), installed)
          Mix.shell().info("Installed the precompiled NIF #{artifact.name} (SHA-256 verified)")
          :ok

        {:error, why} ->
          Mix.shell().error(
            "Could not download the precompiled NIF #{artifact.name}: #{why}. " <>
              "Building it from source with cargo instead."
          )

          build(profile, "the precompiled NIF could not be downloaded (#{why})")
      end
    end
  end

  defp source(profile, why, force) do
    if current?(profile) and not sources_changed?() and not force do
      :noop
    else
      Mix.shell().info("Building redix_rs's NIF from source: #{why}")
      build(profile, why)
    end
  end

  defp build(profile, why) do
    library = NativeBuild.cargo_build!(profile, nil, why)
    install(File.read!(library), profile)
    :ok
  end

  defp current?(installed) do
    File.read(marker()) == {:ok, installed} and File.exists?(dest())
  end

  defp sources_changed? do
    root = NativeBuild.root()

    sources =
      Path.wildcard(Path.join(root, "native/**/*.{rs,toml}")) ++
        Enum.map(["Cargo.toml", "Cargo.lock"], &Path.join(root, &1))

    Mix.Utils.stale?(sources, [dest()])
  end

  # Write then rename: a VM that has the old library loaded keeps its (unlinked) file intact, where
  # overwriting it in place would crash that VM.
  defp install(library, installed) do
    File.mkdir_p!(NativeBuild.dest_dir())
    tmp = dest() <> ".tmp"
    File.write!(tmp, library)
    File.chmod!(tmp, 0o755)
    File.rename!(tmp, dest())
    File.write!(marker(), installed)
  end

  defp dest, do: Path.join(NativeBuild.dest_dir(), "lib#{NativeBuild.crate()}.so")
  defp marker, do: Path.join(NativeBuild.dest_dir(), "profile")
end

defmodule Mix.Tasks.RedixRs.Precompile do
  @shortdoc "Builds the precompiled NIF for this target and records its SHA-256"

  @moduledoc """
  Builds the release artifact of redix_rs's NIF for one target and records its SHA-256 in the
  checksum file (`checksum-Elixir.RedixRs.Native.exs`), which is committed with the release.

      mix redix_rs.precompile [--target TRIPLE] [--out DIR] [--checksum-file PATH]

  The artifact is the stripped release library (`[profile.release]` carries no debug info), in a
  `.tar.gz` named as the Rustler ecosystem names them, e.g.
  `libredix_rs_nif-v0.1.0-nif-2.16-x86_64-unknown-linux-gnu.so.tar.gz`. Run it once per target
  (on that target, or with `--target` and a cross toolchain), upload the files of `--out` (default
  `_build/precompiled`) as the release's assets, at the URL users download from, and commit the
  checksum file: entries for other targets of the same version are kept, older versions dropped.

    * `--target` - the Rust target triple (default: the host's, from `rustc -vV`)
    * `--out` - where the artifact is written
    * `--checksum-file` - the checksum file to update (default: the project's)
  """
  use Mix.Task

  alias RedixRs.NativeBuild

  @switches [target: :string, out: :string, checksum_file: :string, profile: :string]

  @impl true
  def run(args) do
    {opts, _} = OptionParser.parse!(args, strict: @switches)

    if Mix.Project.config()[:app] != :redix_rs do
      Mix.raise(
        "mix redix_rs.precompile runs in redix_rs's own project, not in an app that uses it"
      )
    end

    version = Mix.Project.config()[:version]
    target = opts[:target]
    # --profile (undocumented) lets the tests package the build they already have.
    profile = opts[:profile] || "release"
    library = NativeBuild.cargo_build!(profile, target)

    out =
      Path.expand(opts[:out] || Path.join(Path.dirname(Mix.Project.build_path()), "precompiled"))

    checksum_file = Path.expand(opts[:checksum_file] || NativeBuild.checksum_file())

    {path, sha256} =
      NativeBuild.package!(library, version, target || NativeBuild.rustc_host!(), out)

    NativeBuild.write_checksums!(checksum_file, version, [{Path.basename(path), sha256}])
    Mix.shell().info("#{path}\n  #{File.stat!(path).size} bytes, sha256:#{sha256}")
    Mix.shell().info("recorded in #{checksum_file}")
    {path, sha256}
  end
end
