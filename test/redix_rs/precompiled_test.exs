defmodule RedixRs.PrecompiledTest do
  # Installing the NIF without a Rust toolchain (README "Precompiled NIFs"), end to end: a fresh
  # `git clone` of this repository is the path dependency of a tiny Mix project compiled in its own
  # `mix` process, with `cargo` removed from PATH, from an artifact served by a local HTTP server
  # (:inets httpd) with a checksum file of the test's own. The artifact is made once, by
  # `mix redix_rs.precompile`, from the library this suite was built with.
  #
  # The compiles that fail do so in the native compiler, before any Elixir is compiled; two
  # compile redix_rs's Elixir code (the precompiled install and the forced source build).
  use ExUnit.Case, async: true

  import ExUnit.CaptureIO

  alias RedixRs.NativeBuild
  alias RedixRs.Test.Servers

  @moduletag timeout: 600_000
  @root Path.expand("../..", __DIR__)

  setup_all do
    tmp = RedixRs.Test.Helpers.tmp_dir!("redix_rs_precompiled")
    on_exit(fn -> File.rm_rf!(tmp) end)

    # A fresh clone: tracked files only (no _build, no priv, no checksum file), plus the working
    # tree's uncommitted changes to tracked files, so that what is tested is what is on disk.
    clone = Path.join(tmp, "redix_rs")
    {_, 0} = System.cmd("git", ["clone", "--quiet", "--no-hardlinks", @root, clone])
    {modified, 0} = System.cmd("git", ["ls-files", "--modified"], cd: @root)

    for file <- String.split(modified, "\n", trim: true) do
      if File.exists?(Path.join(@root, file)),
        do: File.cp!(Path.join(@root, file), Path.join(clone, file)),
        else: File.rm!(Path.join(clone, file))
    end

    # The artifact, by the Mix task, from the build this suite runs on (cargo finds it up to date),
    # recorded in the clone's checksum file.
    served = Path.join(tmp, "www")
    checksum_file = Path.join(clone, "checksum-Elixir.RedixRs.Native.exs")
    args = ["--out", Path.join(served, "good"), "--checksum-file", checksum_file]
    args = args ++ ["--profile", NativeBuild.profile!()]

    {{artifact_path, sha256}, task_output} =
      with_io(fn -> Mix.Tasks.RedixRs.Precompile.run(args) end)

    {:ok, target} = NativeBuild.target()
    name = NativeBuild.artifact_name(Mix.Project.config()[:version], target)
    library = NativeBuild.unpack!(File.read!(artifact_path), name)

    # A tampered artifact under the same name: a valid archive whose library is not the one built.
    evil =
      Path.join([tmp, "evil", NativeBuild.library_name(Mix.Project.config()[:version], target)])

    File.mkdir_p!(Path.dirname(evil))
    File.write!(evil, library <> "tampered")
    {tampered_path, tampered_sha256} = package(evil, target, Path.join(served, "bad"))
    File.rm_rf!(Path.dirname(evil))

    {:ok, _} = Application.ensure_all_started(:inets)

    {:ok, httpd} =
      :inets.start(:httpd,
        port: 0,
        bind_address: {127, 0, 0, 1},
        server_name: ~c"redix_rs_precompiled_test",
        server_root: String.to_charlist(tmp),
        document_root: String.to_charlist(served)
      )

    on_exit(fn -> :inets.stop(:httpd, httpd) end)
    [port: port] = :httpd.info(httpd, [:port])

    %{
      tmp: tmp,
      clone: clone,
      url: "http://127.0.0.1:#{port}",
      name: name,
      target: target,
      sha256: sha256,
      library: library,
      artifact_path: artifact_path,
      tampered_path: tampered_path,
      tampered_sha256: tampered_sha256,
      checksum_file: checksum_file,
      task_output: task_output
    }
  end

  defp package(library, target, out) do
    NativeBuild.package!(library, Mix.Project.config()[:version], target, out)
  end

  test "mix redix_rs.precompile names the artifact as the Rustler ecosystem does and records its SHA-256",
       ctx do
    assert ctx.name ==
             "libredix_rs_nif-v#{Mix.Project.config()[:version]}-nif-2.16-#{ctx.target}.so.tar.gz"

    assert Path.basename(ctx.artifact_path) == ctx.name
    assert ctx.sha256 == NativeBuild.sha256(File.read!(ctx.artifact_path))

    assert {:ok, %{ctx.name => "sha256:" <> ctx.sha256}} ==
             NativeBuild.read_checksums(ctx.checksum_file)

    assert ctx.task_output =~ "sha256:#{ctx.sha256}"
    # The archive holds the library this suite loaded.
    loaded = Path.join(:code.priv_dir(:redix_rs), "native/libredix_rs_nif.so")
    assert ctx.library == File.read!(loaded)
    # The target cargo built for is the one the compiler looks for in this VM.
    assert ctx.target == NativeBuild.rustc_host!()
  end

  test "without cargo, a fresh clone compiles from the precompiled NIF and talks to Redis", ctx do
    app = new_app(ctx, "from_artifact", url_config: ctx.url <> "/good")
    cache = Path.join(app, "cache")

    {output, status} = mix(app, ["run", "-e", smoke()], cache)
    assert status == 0, output
    assert output =~ "Installed the precompiled NIF #{ctx.name} (SHA-256 verified)"
    assert output =~ ~s(smoke: {:ok, "PONG"})
    refute output =~ "Compiling NIF crate"

    installed = Path.join(app, "_build/dev/lib/redix_rs/priv/native")
    assert File.read!(Path.join(installed, "libredix_rs_nif.so")) == ctx.library
    assert File.read!(Path.join(cache, ctx.name)) == File.read!(ctx.artifact_path)

    # Installed again from the cache: the URL now leads nowhere, and nothing is downloaded.
    File.rm!(Path.join(installed, "libredix_rs_nif.so"))
    nowhere = [{"REDIX_RS_PRECOMPILED_URL", ctx.url <> "/missing"}]
    {output, status} = mix(app, ["compile"], cache, nowhere)
    assert status == 0, output
    assert output =~ "Installed the precompiled NIF #{ctx.name} (SHA-256 verified)"
    refute output =~ "Could not download"
    assert File.read!(Path.join(installed, "libredix_rs_nif.so")) == ctx.library

    # And a no-op compile stays one.
    {output, 0} = mix(app, ["compile"], cache, nowhere)
    refute output =~ "NIF"

    # Forced, as the "not loaded" error advises: installed again.
    {output, status} = mix(app, ["deps.compile", "redix_rs", "--force"], cache, nowhere)
    assert status == 0, output
    assert output =~ "Installed the precompiled NIF #{ctx.name} (SHA-256 verified)"
  end

  test "a tampered artifact is refused: a compile error naming the file and both sums", ctx do
    app = new_app(ctx, "tampered", url_config: ctx.url <> "/good")
    cache = Path.join(app, "cache")

    {output, status} =
      mix(app, ["compile"], cache, [{"REDIX_RS_PRECOMPILED_URL", ctx.url <> "/bad"}])

    assert status != 0
    assert output =~ "checksum mismatch for the precompiled NIF #{ctx.name}"
    assert output =~ "#{ctx.url}/bad/#{ctx.name}"
    assert output =~ "sha256:#{ctx.sha256}"
    assert output =~ "sha256:#{ctx.tampered_sha256}"
    # No fallback to a source build, nothing installed, nothing cached.
    refute output =~ "Building redix_rs's NIF from source"
    refute output =~ "Compiling NIF crate"
    refute File.exists?(Path.join(app, "_build/dev/lib/redix_rs/priv/native/libredix_rs_nif.so"))
    refute File.exists?(Path.join(cache, ctx.name))

    # A tampered file in the cache is refused the same way, naming the cached file.
    File.mkdir_p!(cache)
    File.cp!(ctx.tampered_path, Path.join(cache, ctx.name))
    {output, status} = mix(app, ["compile"], cache)
    assert status != 0

    assert output =~
             "from:     #{Path.join(cache, ctx.name)} (cached; delete it to download it again)"

    assert output =~ "sha256:#{ctx.sha256}"
    assert output =~ "sha256:#{ctx.tampered_sha256}"
  end

  test "a failed download says so, then builds from source (which needs cargo)", ctx do
    app = new_app(ctx, "no_download", url_config: ctx.url <> "/missing")
    {output, status} = mix(app, ["compile"], Path.join(app, "cache"))
    assert status != 0

    assert output =~
             "Could not download the precompiled NIF #{ctx.name}: #{ctx.url}/missing/#{ctx.name} answered 404"

    assert output =~ "Building it from source with cargo instead."

    assert output =~
             "cargo was not found, and redix_rs's NIF must be built from source: the precompiled NIF could not be downloaded"
  end

  test "REDIX_RS_FORCE_BUILD=1 builds from source even when an artifact fits", ctx do
    app = new_app(ctx, "forced_no_cargo", url_config: ctx.url <> "/good")
    cache = Path.join(app, "cache")
    {output, status} = mix(app, ["compile"], cache, [{"REDIX_RS_FORCE_BUILD", "1"}])
    assert status != 0
    assert output =~ "Building redix_rs's NIF from source: REDIX_RS_FORCE_BUILD is set"
    assert output =~ "cargo was not found"
    refute File.exists?(cache)
  end

  # The forced source build, with cargo: from this checkout rather than the clone, so that cargo finds
  # the build this suite runs on up to date instead of compiling the crates again for a new path.
  test "the forced source build works", ctx do
    app = new_app(ctx, "forced", url_config: ctx.url <> "/good", dep_path: @root)
    cache = Path.join(app, "cache")

    env = [
      {"REDIX_RS_FORCE_BUILD", "1"},
      {"PATH", System.get_env("PATH")},
      {"CARGO_TARGET_DIR", NativeBuild.cargo_target_dir()},
      {"REDIX_RS_BUILD", System.get_env("REDIX_RS_BUILD")}
    ]

    {output, status} = mix(app, ["run", "-e", smoke()], cache, env)
    assert status == 0, output
    assert output =~ "Building redix_rs's NIF from source: REDIX_RS_FORCE_BUILD is set"
    assert output =~ "Compiling NIF crate redix_rs_nif (#{NativeBuild.profile!()}) with cargo"
    assert output =~ ~s(smoke: {:ok, "PONG"})
    refute File.exists?(cache)

    marker = Path.join(app, "_build/dev/lib/redix_rs/priv/native/profile")
    assert File.read!(marker) == NativeBuild.profile!()
    # CARGO_TARGET_DIR was honoured: nothing was built in the app's own _build/cargo.
    refute File.exists?(Path.join(app, "_build/cargo"))
  end

  test "this repository itself always builds from source", ctx do
    # The clone compiled as the top-level project, with an artifact that fits: no download.
    cache = Path.join(ctx.tmp, "cache_repository")
    env = [{"REDIX_RS_PRECOMPILED_URL", ctx.url <> "/good"}]
    {output, status} = mix(ctx.clone, ["compile"], cache, env)
    assert status != 0

    assert output =~
             "Building redix_rs's NIF from source: this is redix_rs's own repository (the top-level project)"

    assert output =~ "cargo was not found"
    refute File.exists?(cache)
  end

  @tag :capture_log
  test "https downloads verify the server's certificate against the system's CAs", ctx do
    # A server whose certificate a private CA signed: refused (a failed download, so a source build).
    certs = RedixRs.Test.TLSCerts.generate!(Path.join(ctx.tmp, "certs"))
    {:ok, _} = Application.ensure_all_started(:ssl)

    {:ok, httpsd} =
      :inets.start(:httpd,
        port: 0,
        bind_address: {127, 0, 0, 1},
        server_name: ~c"redix_rs_precompiled_https",
        server_root: String.to_charlist(ctx.tmp),
        document_root: String.to_charlist(Path.join(ctx.tmp, "www")),
        socket_type: {:ssl, certfile: certs.cert, keyfile: certs.key}
      )

    on_exit(fn -> :inets.stop(:httpd, httpsd) end)
    [port: port] = :httpd.info(httpsd, [:port])
    url = "https://127.0.0.1:#{port}/good/#{ctx.name}"

    assert {:error, "cannot download " <> why} = NativeBuild.download(url)
    assert why =~ "Unknown CA"
    # The same file over http is there.
    assert {:ok, data} = NativeBuild.download("#{ctx.url}/good/#{ctx.name}")
    assert data == File.read!(ctx.artifact_path)
    assert {:ok, ^data} = NativeBuild.download("file://" <> ctx.artifact_path)
  end

  test "mix clean empties the shared Cargo target directory", ctx do
    target = Path.join(ctx.clone, "_build/cargo/release")
    File.mkdir_p!(target)
    File.write!(Path.join(target, "libredix_rs_nif.so"), "")
    {output, status} = mix(ctx.clone, ["clean"], Path.join(ctx.tmp, "cache_clean"))
    assert status == 0, output
    refute File.exists?(Path.join(ctx.clone, "_build/cargo"))
  end

  defp new_app(ctx, name, opts) do
    app = Path.join(ctx.tmp, name)
    File.mkdir_p!(Path.join(app, "config"))
    dep = Keyword.get(opts, :dep_path, ctx.clone)

    File.write!(Path.join(app, "mix.exs"), """
    defmodule Smoke.MixProject do
      use Mix.Project

      def project do
        [app: :smoke, version: "0.1.0", deps: [{:redix_rs, path: #{inspect(dep)}}]]
      end
    end
    """)

    File.write!(Path.join(app, "config/config.exs"), """
    import Config
    config :redix_rs, precompiled_url: #{inspect(opts[:url_config])}
    """)

    app
  end

  defp smoke do
    """
    port = String.to_integer(System.fetch_env!("SMOKE_REDIS_PORT"))
    {:ok, conn} = RedixRs.start_link(port: port, sync_connect: true)
    IO.puts("smoke: " <> inspect(RedixRs.command(conn, ["PING"])))
    """
  end

  # `mix` in its own OS process, without cargo on PATH unless `env` puts it back.
  defp mix(dir, args, cache, env \\ []) do
    base = [
      {"MIX_ENV", "dev"},
      {"PATH", path_without_cargo()},
      {"REDIX_RS_CACHE_DIR", cache},
      {"SMOKE_REDIS_PORT", to_string(Servers.port())},
      {"REDIX_RS_FORCE_BUILD", nil},
      {"REDIX_RS_PRECOMPILED_URL", nil},
      {"REDIX_RS_BUILD", nil},
      {"CARGO_TARGET_DIR", nil},
      {"MIX_BUILD_PATH", nil},
      {"MIX_DEPS_PATH", nil},
      {"MIX_EXS", nil}
    ]

    env = Enum.reduce(env, base, fn {k, v}, acc -> List.keystore(acc, k, 0, {k, v}) end)
    System.cmd(System.find_executable("mix"), args, cd: dir, env: env, stderr_to_stdout: true)
  end

  defp path_without_cargo do
    dirs =
      System.get_env("PATH")
      |> String.split(":")
      |> Enum.reject(&File.exists?(Path.join(&1, "cargo")))

    refute Enum.any?(dirs, &File.exists?(Path.join(&1, "cargo")))
    assert Enum.any?(dirs, &File.exists?(Path.join(&1, "elixir")))
    Enum.join(dirs, ":")
  end
end

defmodule RedixRs.NativeBuildTest do
  # The pure parts of the native build (mix/native.exs, loaded by mix.exs): how the running target
  # is named, which NIF versions load a 2.16 library, how the checksum file is read and written.
  use ExUnit.Case, async: true

  alias RedixRs.NativeBuild

  @glibc_maps "7f0000-7f1000 r-xp 00000000 08:01 123 /usr/lib/x86_64-linux-gnu/libc.so.6\n"
  @musl_maps "7f0000-7f1000 r-xp 00000000 08:01 123 /lib/ld-musl-x86_64.so.1\n"

  test "the target triple tells glibc from musl by what the VM is linked against" do
    assert NativeBuild.target(~c"x86_64-pc-linux-gnu", @glibc_maps) ==
             {:ok, "x86_64-unknown-linux-gnu"}

    assert NativeBuild.target(~c"x86_64-alpine-linux-musl", @musl_maps) ==
             {:ok, "x86_64-unknown-linux-musl"}

    # An Alpine VM whose architecture string says gnu still gets musl, and the reverse.
    assert NativeBuild.target(~c"x86_64-pc-linux-gnu", @musl_maps) ==
             {:ok, "x86_64-unknown-linux-musl"}

    assert NativeBuild.target(~c"aarch64-unknown-linux-musl", @glibc_maps) ==
             {:ok, "aarch64-unknown-linux-gnu"}

    assert NativeBuild.target(~c"arm-unknown-linux-gnueabihf", @musl_maps) ==
             {:ok, "arm-unknown-linux-musleabihf"}

    # Without a readable map, the architecture string decides.
    assert NativeBuild.target(~c"x86_64-alpine-linux-musl", nil) ==
             {:ok, "x86_64-unknown-linux-musl"}

    assert NativeBuild.target(~c"aarch64-apple-darwin22.4.0", nil) ==
             {:ok, "aarch64-apple-darwin"}

    assert NativeBuild.target(~c"amd64-portbld-freebsd13.2", nil) ==
             {:ok, "x86_64-unknown-freebsd"}

    assert {:error, "no precompiled NIF is made for this system" <> _} =
             NativeBuild.target(~c"win32", nil)

    # This VM: Debian's Erlang, linked against glibc.
    assert NativeBuild.target() == {:ok, "x86_64-unknown-linux-gnu"}
  end

  test "a NIF 2.16 library loads on 2.16 and later 2.x" do
    assert NativeBuild.nif_compatible?(~c"2.16")
    assert NativeBuild.nif_compatible?("2.17")
    refute NativeBuild.nif_compatible?("2.15")
    refute NativeBuild.nif_compatible?("3.0")
    refute NativeBuild.nif_compatible?("junk")
  end

  @tag :tmp_dir
  test "the checksum file is a literal map, read without being evaluated", %{tmp_dir: dir} do
    path = Path.join(dir, "checksum-Elixir.RedixRs.Native.exs")
    NativeBuild.write_checksums!(path, "0.1.0", [{"libx-v0.1.0-nif-2.16-a.so.tar.gz", "ab"}])
    NativeBuild.write_checksums!(path, "0.1.0", [{"libx-v0.1.0-nif-2.16-b.so.tar.gz", "cd"}])

    assert NativeBuild.read_checksums(path) ==
             {:ok,
              %{
                "libx-v0.1.0-nif-2.16-a.so.tar.gz" => "sha256:ab",
                "libx-v0.1.0-nif-2.16-b.so.tar.gz" => "sha256:cd"
              }}

    # A new version drops the entries of the old one.
    NativeBuild.write_checksums!(path, "0.2.0", [{"libx-v0.2.0-nif-2.16-a.so.tar.gz", "ef"}])

    assert NativeBuild.read_checksums(path) ==
             {:ok, %{"libx-v0.2.0-nif-2.16-a.so.tar.gz" => "sha256:ef"}}

    File.write!(path, ~s|%{"a" => send(self(), :evaluated)}|)

    assert {:error, "#{path} is not a map of artifact names to checksums"} ==
             NativeBuild.read_checksums(path)

    refute_received :evaluated

    assert {:error, "no checksum-Elixir.RedixRs.Native.exs (a development version)"} ==
             NativeBuild.read_checksums(
               Path.join([dir, "none", "checksum-Elixir.RedixRs.Native.exs"])
             )
  end
end
