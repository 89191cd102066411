defmodule RedixRs.NativeLoadTest do
  # When the NIF cannot be loaded, the first call raises an error that says why and how to rebuild.
  # Checked in a separate VM, whose code path holds redix_rs's modules but no native library.
  use ExUnit.Case, async: true

  @tag :tmp_dir
  test "a missing native library gives a clear error on first use", %{tmp_dir: dir} do
    ebin = Path.join(dir, "redix_rs/ebin")
    File.mkdir_p!(ebin)
    File.cp_r!(Path.join(Mix.Project.app_path(), "ebin"), ebin)

    script = """
    Application.put_env(:logger, :level, :none)
    {:ok, _} = Application.ensure_all_started(:redix_rs)
    try do
      RedixRs.start_link(port: 1, sync_connect: true)
    rescue
      e in RuntimeError -> IO.write(Exception.message(e))
    end
    """

    {output, 0} = System.cmd("elixir", ["-pa", ebin, "-e", script], stderr_to_stdout: true)
    assert output =~ "libredix_rs_nif.so) is not loaded"
    assert output =~ "mix compile --force"
  end
end

defmodule RedixRs.NativeReloadTest do
  # Loading RedixRs.Native again in a running node (recompiling it, or a hot upgrade that loads its
  # .beam) is refused: the version that holds the native library stays current, so connections keep
  # working, and the log says a new native library needs a node restart. Done in this very VM, after
  # the async tests (a regression here would break every later call to a NIF).
  use ExUnit.Case, async: false

  import ExUnit.CaptureIO
  import ExUnit.CaptureLog

  alias RedixRs.Test.Servers

  @source Path.expand("../../lib/redix_rs/native.ex", __DIR__)

  setup do
    {:ok, conn} = RedixRs.start_link(port: Servers.port(), sync_connect: true)
    assert RedixRs.command(conn, ["PING"]) == {:ok, "PONG"}
    loaded_from = :code.is_loaded(RedixRs.Native)
    on_exit(fn -> assert :code.is_loaded(RedixRs.Native) == loaded_from end)
    %{conn: conn, loaded_from: loaded_from}
  end

  test "recompiling RedixRs.Native is refused and the NIFs keep working", %{conn: conn} = ctx do
    # A new version, told apart by a function the loaded one lacks.
    source =
      String.replace(
        File.read!(@source),
        "  @doc false\n  @spec load_nif()",
        "  def reload_marker, do: :new\n\n  @doc false\n  @spec load_nif()"
      )

    assert source =~ "reload_marker"

    log =
      capture_log(fn ->
        capture_io(:stderr, fn ->
          # Elixir 1.14 returns the module it compiled even when loading it failed; later releases
          # may raise: either way, what counts is what is loaded afterwards.
          try do
            Code.compile_string(source, "native_v2.ex")
          rescue
            _ -> :refused
          end
        end)
      end)

    assert log =~ "RedixRs.Native cannot be reloaded in a running node"
    assert log =~ "Upgrade not supported by this NIF library"
    assert log =~ "A new native library needs a node restart"
    refute function_exported?(RedixRs.Native, :reload_marker, 0)
    assert :code.is_loaded(RedixRs.Native) == ctx.loaded_from
    assert_nifs_work(conn)
  end

  test "a hot upgrade (loading the module's .beam again) is refused", %{conn: conn} do
    {RedixRs.Native, beam, file} = :code.get_object_code(RedixRs.Native)

    log =
      capture_log(fn ->
        assert :code.load_binary(RedixRs.Native, file, beam) == {:error, :on_load_failure}
      end)

    assert log =~ "RedixRs.Native cannot be reloaded in a running node"
    assert_nifs_work(conn)
  end

  # Calls on a connection made before the attempt, and a connection made after it, work; and the
  # refused load left no load error behind.
  defp assert_nifs_work(conn) do
    assert RedixRs.command(conn, ["PING"]) == {:ok, "PONG"}
    assert RedixRs.pipeline(conn, [["ECHO", "a"], ["ECHO", "b"]]) == {:ok, ["a", "b"]}
    assert :persistent_term.get({RedixRs.Native, :load_error}, nil) == nil
    {:ok, fresh} = RedixRs.start_link(port: Servers.port(), sync_connect: true)
    assert RedixRs.command(fresh, ["PING"]) == {:ok, "PONG"}
    RedixRs.stop(fresh)
  end
end
