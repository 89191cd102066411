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
