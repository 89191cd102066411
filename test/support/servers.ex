defmodule RedixRs.Test.Servers do
  @moduledoc false
  # The redis-server processes test_helper.exs started, by role: :plain, :password, :acl, :unix.

  def put(servers), do: :persistent_term.put(__MODULE__, servers)
  def get(role), do: Map.fetch!(:persistent_term.get(__MODULE__), role)
  def port(role \\ :plain), do: get(role).port
end

defmodule RedixRs.Doctest do
  @moduledoc false
  # The port the docs' examples connect to: in the docs it stands for "your Redis port".
  def port, do: RedixRs.Test.Servers.port(:plain)
end

defmodule RedixRs.Test.Helpers do
  @moduledoc false

  @doc "A 127.0.0.1 port nothing listens on (it was free a moment ago)."
  def closed_port do
    {:ok, socket} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(socket)
    :ok = :gen_tcp.close(socket)
    port
  end

  @doc """
  A fresh directory under the system's temp dir, named by OS pid as well, so that two test runs side
  by side never share one. The caller removes it (`on_exit(fn -> File.rm_rf!(dir) end)`).
  """
  def tmp_dir!(prefix) do
    dir =
      Path.join(
        System.tmp_dir!(),
        "#{prefix}_#{System.pid()}_#{System.unique_integer([:positive])}"
      )

    File.mkdir_p!(dir)
    dir
  end

  @doc """
  Sends the calling process `{:telemetry, :connection | :disconnection, monotonic_µs, metadata}`
  for each of those events of the connection `conn`, until it exits.
  """
  def attach_telemetry(conn) do
    test = self()
    id = make_ref()

    :telemetry.attach_many(
      id,
      [[:redix_rs, :connection], [:redix_rs, :disconnection]],
      fn [:redix_rs, event], _measurements, metadata, _config ->
        if metadata.connection == conn do
          send(test, {:telemetry, event, System.monotonic_time(:microsecond), metadata})
        end
      end,
      nil
    )

    detach_on_exit(id)
  end

  @doc "Detaches the telemetry handler `id` once the calling process (a test) has exited."
  def detach_on_exit(id) do
    test = self()

    spawn(fn ->
      ref = Process.monitor(test)

      receive do
        {:DOWN, ^ref, :process, _, _} -> :telemetry.detach(id)
      end
    end)

    :ok
  end

  @doc "Polls `fun` every 20 ms until it returns true; false after `tries` attempts (5 s by default)."
  def eventually(fun, tries \\ 250) do
    cond do
      fun.() ->
        true

      tries == 0 ->
        false

      true ->
        Process.sleep(20)
        eventually(fun, tries - 1)
    end
  end

  @doc """
  Polls PING on `conn` (each with `ping_timeout`) until it answers PONG; returns the milliseconds
  that took, or `:never` after `within_ms`.
  """
  def await_pong(conn, within_ms, ping_timeout \\ 500) do
    started = System.monotonic_time(:millisecond)
    await_pong(conn, ping_timeout, started, started + within_ms)
  end

  defp await_pong(conn, ping_timeout, started, deadline) do
    answer = RedixRs.command(conn, ["PING"], timeout: ping_timeout)
    now = System.monotonic_time(:millisecond)

    cond do
      answer == {:ok, "PONG"} ->
        now - started

      now >= deadline ->
        :never

      true ->
        Process.sleep(10)
        await_pong(conn, ping_timeout, started, deadline)
    end
  end
end
