defmodule RedixRs.PackageTest do
  # What `mix hex.build` would ship (mix.exs `package`), and the one Cargo target directory.
  use ExUnit.Case, async: true

  alias RedixRs.NativeBuild

  @root Path.expand("../..", __DIR__)
  @checksum_file "checksum-Elixir.RedixRs.Native.exs"

  test "the package holds the sources a build needs, the checksum file, and no build directory" do
    package = Mix.Project.config()[:package]
    files = package[:files]

    for file <- ~w(lib mix/native.exs mix.exs Cargo.toml Cargo.lock native/redix_rs_core/src
                   native/redix_rs_core/Cargo.toml native/redix_rs_nif/src
                   native/redix_rs_nif/Cargo.toml #{@checksum_file} LICENSE CHANGELOG.md
                   README.md guides) do
      assert file in files
    end

    refute Enum.any?(files, &(&1 =~ ~r{(^|/)(_build|target|deps|priv)(/|$)}))
    # The checksum file is written by `mix redix_rs.precompile` and committed with a release.
    assert Enum.reject(files, &File.exists?(Path.join(@root, &1))) -- [@checksum_file] == []

    assert package[:licenses] == ["MIT"]
    assert File.read!(Path.join(@root, "LICENSE")) =~ "MIT License"
    assert %{"GitHub" => "https://" <> _} = package[:links]

    for extra <- Mix.Project.config()[:docs][:extras] do
      assert File.exists?(Path.join(@root, extra)), "docs extra #{extra} is missing"
    end
  end

  @tag :tmp_dir
  test "the package's files are a complete Cargo workspace, locked", %{tmp_dir: dir} do
    for file <- Mix.Project.config()[:package][:files],
        File.exists?(Path.join(@root, file)) do
      File.mkdir_p!(Path.dirname(Path.join(dir, file)))
      File.cp_r!(Path.join(@root, file), Path.join(dir, file))
    end

    {output, status} =
      System.cmd(
        "cargo",
        ~w(metadata --format-version 1 --locked --offline --filter-platform) ++
          [NativeBuild.rustc_host!()],
        cd: dir,
        stderr_to_stdout: true
      )

    assert status == 0, output
    assert output =~ ~s("name":"redix_rs_nif")
    assert output =~ ~s("name":"redix_rs_core")
  end

  test "one Cargo target directory, _build/cargo, for every Mix env and every cargo command" do
    {output, 0} =
      System.cmd("cargo", ["metadata", "--format-version", "1", "--no-deps", "--offline"],
        cd: @root,
        env: [{"CARGO_TARGET_DIR", nil}]
      )

    [_, dir] = Regex.run(~r/"target_directory":"([^"]+)"/, output)
    assert dir == Path.join(@root, "_build/cargo")
    # The compiler's: the parent of the build path of every Mix env.
    assert NativeBuild.default_cargo_target_dir() == dir
    assert Path.dirname(Mix.Project.build_path()) == Path.join(@root, "_build")

    # CARGO_TARGET_DIR still wins.
    {output, 0} =
      System.cmd("cargo", ["metadata", "--format-version", "1", "--no-deps", "--offline"],
        cd: @root,
        env: [{"CARGO_TARGET_DIR", "/elsewhere"}]
      )

    assert output =~ ~s("target_directory":"/elsewhere")
  end
end
