defmodule RedixRs.Test.DelayProxy do
  @moduledoc false
  # A TCP proxy for tests: listens on a free 127.0.0.1 port and relays each connection to
  # 127.0.0.1:`upstream`, holding every chunk `delay` ms each way (a slow network), in order, without
  # throttling (chunks are read as they come and each is released at its own due time). The observer
  # (the caller of `start/3` unless given) is told what passes, stamped with the proxy's
  # `System.monotonic_time(:millisecond)`:
  #
  #   {:delay_proxy, :up, at, data}    a client's chunk arrived at the proxy
  #   {:delay_proxy, :down, at, data}  a server's chunk was handed on to the client
  #
  # Both directions of a connection are relayed by one process, so these messages reach the observer
  # in the order the events happened. Tens of milliseconds need no sub-millisecond precision; the
  # benchmarks' bench/latency_proxy is the precise one. The proxy is linked to the caller of `start/3`
  # and dies with it; when either side of a connection closes, the other is closed at once.

  defstruct [:port, :pid]

  @type t :: %__MODULE__{port: :inet.port_number(), pid: pid}

  @spec start(:inet.port_number(), non_neg_integer, pid) :: t
  def start(upstream, delay, observer \\ self()) do
    opts = [:binary, ip: {127, 0, 0, 1}, active: false, reuseaddr: true]
    {:ok, listen} = :gen_tcp.listen(0, opts)
    {:ok, port} = :inet.port(listen)
    pid = spawn_link(fn -> accept(listen, upstream, delay, observer) end)
    :ok = :gen_tcp.controlling_process(listen, pid)
    %__MODULE__{port: port, pid: pid}
  end

  defp accept(listen, upstream, delay, observer) do
    {:ok, client} = :gen_tcp.accept(listen)
    relay = spawn_link(fn -> relay(client, upstream, delay, observer) end)
    :ok = :gen_tcp.controlling_process(client, relay)
    send(relay, :go)
    accept(listen, upstream, delay, observer)
  end

  defp relay(client, upstream, delay, observer) do
    receive do: (:go -> :ok)

    {:ok, server} =
      :gen_tcp.connect({127, 0, 0, 1}, upstream, [:binary, active: true, nodelay: true])

    :ok = :inet.setopts(client, active: true, nodelay: true)

    loop(%{
      client: client,
      server: server,
      delay: delay,
      observer: observer,
      up: :queue.new(),
      down: :queue.new()
    })
  end

  defp loop(%{client: client, server: server} = s) do
    receive do
      {:tcp, ^client, data} ->
        send(s.observer, {:delay_proxy, :up, now(), data})
        s |> hold(:up, data) |> loop()

      {:tcp, ^server, data} ->
        s |> hold(:down, data) |> loop()

      {:release, dir} ->
        s |> release(dir) |> loop()

      {closed, _} when closed in [:tcp_closed, :tcp_error] ->
        :gen_tcp.close(client)
        :gen_tcp.close(server)
    end
  end

  defp hold(s, dir, data) do
    queue = Map.fetch!(s, dir)
    if :queue.is_empty(queue), do: Process.send_after(self(), {:release, dir}, s.delay)
    Map.put(s, dir, :queue.in({now() + s.delay, data}, queue))
  end

  # Hands on, in order, every chunk of `dir` that is due; waits for the next one's due time.
  defp release(s, dir) do
    queue = Map.fetch!(s, dir)
    t = now()

    case :queue.peek(queue) do
      {:value, {due, data}} when due <= t ->
        deliver(s, dir, data)
        release(Map.put(s, dir, :queue.drop(queue)), dir)

      {:value, {due, _}} ->
        Process.send_after(self(), {:release, dir}, due - t)
        s

      :empty ->
        s
    end
  end

  defp deliver(s, :up, data), do: :gen_tcp.send(s.server, data)

  defp deliver(s, :down, data) do
    :gen_tcp.send(s.client, data)
    send(s.observer, {:delay_proxy, :down, now(), data})
  end

  defp now, do: System.monotonic_time(:millisecond)
end
