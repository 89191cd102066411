defmodule RedixRs.Bench.Latency do
  @moduledoc false
  # Scenarios a and b through a network that loopback hides: every byte goes through
  # bench/latency_proxy (a TCP proxy that delays each chunk by `delay_us` each way without throttling
  # throughput), so a round trip costs 2 x delay_us plus what loopback costs. redix_rs and eredis
  # go through the same proxy to the same private redis-server; each connection gets its own relay.
  #
  #     results = RedixRs.Bench.Latency.run(5)   # bench/latency.exs prints them side by side
  #
  # The proxy is built here with `cargo build --release --manifest-path bench/latency_proxy/Cargo.toml` (seconds when fresh).

  alias RedixRs.Bench.{Clients, Scenarios}
  alias RedixRs.Test.RedisServer

  @delay_us 500
  # Fewer calls than on loopback: each costs at least a millisecond here.
  @a_calls 2_000
  @b_procs 200
  @b_per 100
  # b with few callers: bound by the round trip rather than by CPU (on a small, busy machine, 200
  # callers queue for the CPU, which hides what the network costs each call).
  @few_procs 20

  @type result :: %{ops: non_neg_integer, micros: pos_integer, latencies: [integer]}

  @spec run(pos_integer, keyword) :: [{String.t(), %{atom => [result]}}]
  def run(rounds, opts \\ []) do
    delay_us = Keyword.get(opts, :delay_us, @delay_us)

    clients =
      Keyword.get(opts, :clients, Enum.filter([:redix_rs, :eredis], &Clients.available?/1))

    server = RedisServer.start([])
    Scenarios.prepare(server.port)
    proxy = start_proxy(server.port, delay_us)
    ms = :erlang.float_to_binary(delay_us / 1000, decimals: 1)

    scenarios = [
      {"a: 1 process, #{@a_calls} GET, #{ms} ms each way",
       &Scenarios.sequential_get(&1, proxy.port, @a_calls)},
      {"b: #{@b_procs} procs x #{@b_per} GET, 1 conn, #{ms} ms each way",
       &Scenarios.concurrent_get(&1, proxy.port, @b_procs, @b_per)},
      {"b20: #{@few_procs} procs x #{@b_per} GET, 1 conn, #{ms} ms each way",
       &Scenarios.concurrent_get(&1, proxy.port, @few_procs, @b_per)}
    ]

    try do
      for {name, fun} <- scenarios do
        # A warm-up round per client, not reported; then rounds alternating clients.
        Enum.each(clients, fun)

        per_client =
          for _ <- 1..rounds, client <- clients, reduce: Map.new(clients, &{&1, []}) do
            acc -> Map.update!(acc, client, &(&1 ++ [fun.(client)]))
          end

        {name, per_client}
      end
    after
      lines = stop_proxy(proxy)
      if Keyword.get(opts, :proxy_log, false), do: Enum.each(lines, &IO.puts(:stderr, &1))
      RedisServer.stop(server)
    end
  end

  @doc "Builds the proxy (release) and returns the path of its binary."
  def build_proxy! do
    root = Path.expand("../..", __DIR__)
    cargo = System.find_executable("cargo") || Path.expand("~/.cargo/bin/cargo")

    {out, status} =
      System.cmd(
        cargo,
        ["build", "--release", "--quiet", "--manifest-path", "bench/latency_proxy/Cargo.toml"],
        cd: root,
        stderr_to_stdout: true
      )

    if status != 0, do: raise("cargo build of bench/latency_proxy failed:\n" <> out)
    target = System.get_env("CARGO_TARGET_DIR") || Path.join(root, "_build/cargo")
    Path.join([target, "release", "latency_proxy"])
  end

  @doc """
  Starts the proxy in front of 127.0.0.1:`upstream_port`; returns `%{port: listening_port, holder: pid}`.
  The proxy exits when its holder (linked to the caller) closes its stdin.
  """
  def start_proxy(upstream_port, delay_us) do
    exe = build_proxy!()
    parent = self()

    holder =
      spawn_link(fn ->
        port =
          Port.open({:spawn_executable, exe}, [
            :binary,
            :stderr_to_stdout,
            {:line, 1024},
            args: ["--upstream", "127.0.0.1:#{upstream_port}", "--delay-us", "#{delay_us}"]
          ])

        receive do
          {^port, {:data, {:eol, "listening " <> addr}}} ->
            [_, p] = String.split(addr, ":")
            send(parent, {:proxy_listening, self(), String.to_integer(p)})
        after
          10_000 -> raise "latency_proxy did not start"
        end

        hold(port, [])
      end)

    receive do
      {:proxy_listening, ^holder, p} -> %{port: p, holder: holder}
    end
  end

  defp hold(port, lines) do
    receive do
      {^port, {:data, {:eol, line}}} ->
        hold(port, [line | lines])

      {^port, {:data, {:noeol, line}}} ->
        hold(port, [line | lines])

      {:stop, from} ->
        # Connections closed just before may still be printing their summaries.
        lines = drain(port, lines, 200)
        Port.close(port)
        send(from, {:proxy_lines, self(), Enum.reverse(lines)})
    end
  end

  defp drain(port, lines, wait) do
    receive do
      {^port, {:data, {_, line}}} -> drain(port, [line | lines], wait)
    after
      wait -> lines
    end
  end

  @doc "Stops the proxy; returns what it printed (one lateness summary per closed connection)."
  def stop_proxy(%{holder: holder}) do
    send(holder, {:stop, self()})

    receive do
      {:proxy_lines, ^holder, lines} -> lines
    after
      5_000 -> []
    end
  end
end
