defmodule RedixRs.Bench.Clients do
  @moduledoc false
  @compile {:no_warn_undefined, [:eredis, Redix, Redix.PubSub]}

  # The clients compared, behind one shape: `connect(port)` and `get(conn, key)` /
  # `command(conn, cmd)`. eredis is Debian's erlang-redis-client, loaded from the OTP lib dir.
  # Redix joins when REDIX_PATH names a directory holding compiled Redix and its two dependencies
  # (telemetry, nimble_options), each as `<app>/ebin`: see bench/README.md.

  @doc "The clients of this run, in the order rounds alternate them."
  def all do
    load_redix()
    Enum.filter([:redix_rs, :eredis, :redix], &available?/1)
  end

  def available?(:eredis), do: Code.ensure_loaded?(:eredis)
  def available?(:redix), do: Code.ensure_loaded?(Redix) and Code.ensure_loaded?(Redix.PubSub)
  def available?(:redix_rs), do: true

  @doc """
  Puts Redix and its dependencies on the code path when REDIX_PATH is set: a directory whose
  `*/ebin` (or `_build/<env>/lib/*/ebin`, a Redix checkout after `mix compile`) holds them.
  """
  def load_redix do
    case System.get_env("REDIX_PATH") do
      nil ->
        :skip

      "" ->
        :skip

      dir ->
        ebins =
          Enum.flat_map(["*/ebin", "lib/*/ebin", "_build/*/lib/*/ebin"], fn pattern ->
            Path.wildcard(Path.join(Path.expand(dir), pattern))
          end)

        Enum.each(ebins, &Code.prepend_path/1)

        unless Code.ensure_loaded?(Redix) do
          raise "REDIX_PATH=#{dir}: no compiled Redix there (looked in #{inspect(ebins)})"
        end

        # Redix sends telemetry events; the :telemetry application owns their handler table.
        {:ok, _} = Application.ensure_all_started(:telemetry)
        :ok
    end
  end

  @doc "The version of the Redix loaded from REDIX_PATH, or nil."
  def redix_version do
    with true <- available?(:redix),
         load when load in [:ok, {:error, {:already_loaded, :redix}}] <- Application.load(:redix),
         vsn when vsn != nil <- Application.spec(:redix, :vsn) do
      to_string(vsn)
    else
      _ -> nil
    end
  end

  def connect(:redix_rs, port) do
    {:ok, conn} = RedixRs.start_link(port: port, sync_connect: true)
    conn
  end

  def connect(:eredis, port) do
    {:ok, conn} = :eredis.start_link(~c"127.0.0.1", port)
    conn
  end

  def connect(:redix, port) do
    {:ok, conn} = Redix.start_link(host: "127.0.0.1", port: port, sync_connect: true)
    conn
  end

  def command(:redix_rs, conn, cmd), do: RedixRs.command(conn, cmd)
  def command(:eredis, conn, cmd), do: :eredis.q(conn, cmd)
  def command(:redix, conn, cmd), do: Redix.command(conn, cmd)

  def pipeline(:redix_rs, conn, cmds), do: RedixRs.pipeline(conn, cmds, timeout: 60_000)
  def pipeline(:eredis, conn, cmds), do: {:ok, :eredis.qp(conn, cmds, 60_000)}
  def pipeline(:redix, conn, cmds), do: Redix.pipeline(conn, cmds, timeout: 60_000)

  def stop(:redix_rs, conn), do: RedixRs.stop(conn)
  def stop(:eredis, conn), do: :eredis.stop(conn)
  def stop(:redix, conn), do: Redix.stop(conn)
end
