defmodule RedixRs.Bench.Clients do
  @moduledoc false
  @compile {:no_warn_undefined, :eredis}

  # The clients compared, behind one shape: `connect(port)` and `get(conn, key)` /
  # `command(conn, cmd)`. eredis is Debian's erlang-redis-client, loaded from the OTP lib dir.

  def available?(:eredis), do: Code.ensure_loaded?(:eredis)
  def available?(:redix_rs), do: true

  def connect(:redix_rs, port) do
    {:ok, conn} = RedixRs.start_link(port: port, sync_connect: true)
    conn
  end

  def connect(:eredis, port) do
    {:ok, conn} = :eredis.start_link(~c"127.0.0.1", port)
    conn
  end

  def command(:redix_rs, conn, cmd), do: RedixRs.command(conn, cmd)
  def command(:eredis, conn, cmd), do: :eredis.q(conn, cmd)

  def pipeline(:redix_rs, conn, cmds), do: RedixRs.pipeline(conn, cmds, timeout: 60_000)
  def pipeline(:eredis, conn, cmds), do: {:ok, :eredis.qp(conn, cmds, 60_000)}

  def stop(:redix_rs, conn), do: RedixRs.stop(conn)
  def stop(:eredis, conn), do: :eredis.stop(conn)
end
