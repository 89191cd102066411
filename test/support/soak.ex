defmodule RedixRs.Test.Soak do
  @moduledoc false
  # The soak that counts every reply: `make soak` (bench/soak.exs, 1,000,000 INCRs) and its short run
  # in test/redix_rs/soak_test.exs share this module.
  #
  # `run/1` starts a redis-server with `appendonly yes` and `appendfsync always` on a free loopback
  # port, then:
  #
  #   1. warms up (a small run of steps 2 and 4 on another key) and takes the baseline footprint: the
  #      VM's memory (`:erlang.memory(:total)`), OS threads (/proc/self/task), file descriptors
  #      (/proc/self/fd), Erlang processes and the resident set (the native side's memory too), after
  #      a garbage collection of every process;
  #   2. the load: `:processes` processes share `:calls` INCR calls of one key on one RedixRs
  #      connection, one call at a time each (1% of them with a 1..3 ms timeout, so that replies race
  #      timeouts), while a chaos process kills the connection with
  #      `CLIENT KILL`, restarts the server (`SHUTDOWN`, then a new redis-server on the same port and
  #      data dir: the AOF is replayed) and pauses it (`SIGSTOP`, `SIGCONT` after a bit longer than the
  #      call timeout). Each fault fires when the number of answered calls reaches a random point of
  #      the run (one point per slot of 5%..80% of the calls), and waits until the connection answers
  #      PING again before the next one;
  #   3. the accounting: every call got exactly one answer (issued = answered = calls, and no message
  #      is left in any caller's mailbox a second after its last answer); every acknowledged value is
  #      distinct and larger than the caller's previous one; acknowledged <= final counter <=
  #      acknowledged + the calls answered `:disconnected` or `:timeout` (their INCR may have run;
  #      `:closed` means not sent, and a `-LOADING` error, which a restarted server answers until it
  #      has replayed its AOF, means not run); no answer of any other kind; no caller is left waiting;
  #   4. the footprint after the load, after `:cycles` start/stop cycles of `RedixRs` connections (a
  #      PING each) and after `:cycles` of `RedixRs.PubSub` (a SUBSCRIBE, confirmed, each) is compared
  #      with the baseline, within `@tolerances`, after up to `@settle_ms` for it to come back.
  #
  # It returns a map that `RedixRs.Test.Soak.Report.format/1` prints as tables; `result.violations` lists every broken
  # invariant (empty when all hold).

  alias RedixRs.ConnectionError
  alias RedixRs.Test.Soak.Report
  alias RedixRs.Test.RedisServer

  @client_name "redix_rs_soak"
  @channel "soak:channel"

  # How far the footprint may end above the baseline, once every process was garbage collected and
  # the footprint had up to `@settle_ms` to come back: the VM allocates some memory lazily (code,
  # atoms, ETS growth, allocator bookkeeping; RedixRs.Handles remembers why each connection exited for
  # 10 s), and tokio's blocking pool keeps an idle thread for 10 s after a host lookup.
  @tolerances %{memory: 2_000_000, threads: 2, fds: 2, processes: 2, rss: 20_000_000}
  @settle_ms 25_000

  # A caller that gets no answer for this long (in ms, beyond the call timeout) is hung.
  @stall_ms 30_000

  @defaults [
    calls: 1_000_000,
    processes: 500,
    call_timeout: 1_000,
    kills: 5,
    restarts: 2,
    pauses: 1,
    # CLIENT KILL, then SIGSTOP after 1..100 ms (while the connection is reconnecting).
    kill_pauses: 0,
    # The share of calls made with a timeout of 1..3 ms instead of `call_timeout`: their reply races
    # their timeout (the answer must still be exactly one, and no late reply may reach the caller).
    short_timeouts: 0.01,
    # default: call_timeout + 500
    pause_ms: nil,
    cycles: 10_000,
    seed: nil,
    log: nil
  ]

  @outcomes [:ok, :disconnected, :timeout, :closed, :loading, :other]

  @doc "Runs the soak; see the module comment. Options: see `@defaults`."
  def run(opts \\ []) do
    opts = Keyword.merge(@defaults, opts)
    seed = opts[:seed] || :rand.uniform(1_000_000)
    opts = Keyword.merge(opts, seed: seed, pause_ms: opts[:pause_ms] || opts[:call_timeout] + 500)
    log = opts[:log] || fn _line -> :ok end
    opts = Keyword.merge(opts, log: log, key: "soak:counter")
    :rand.seed(:exsss, {seed, seed, seed})
    started = now()

    server = RedisServer.start(args: ["--appendonly", "yes", "--appendfsync", "always"])
    log.("redis-server #{server_version()} on 127.0.0.1:#{server.port} (#{server.dir})")

    server = warm_up(server, opts)
    baseline = footprint()
    log.("baseline: #{inspect(baseline)}")

    {load, server} = load(server, opts, log)
    after_load = settle(baseline, log)
    log.("after the load: #{inspect(after_load)}")

    conn_cycles = cycles(:connection, server, opts[:cycles], log)
    after_conns = settle(baseline, log)
    log.("after #{opts[:cycles]} connection cycles: #{inspect(after_conns)}")

    pubsub_cycles = cycles(:pubsub, server, opts[:cycles], log)
    after_pubsub = settle(baseline, log)
    log.("after #{opts[:cycles]} pub/sub cycles: #{inspect(after_pubsub)}")

    RedisServer.stop(server)

    footprints = [
      {"baseline", baseline},
      {"after the load", after_load},
      {"after #{Report.fmt(opts[:cycles])} connections", after_conns},
      {"after #{Report.fmt(opts[:cycles])} pub/subs", after_pubsub}
    ]

    result = %{
      opts: opts,
      tolerances: @tolerances,
      settle_ms: @settle_ms,
      seconds: (now() - started) / 1000,
      load: load,
      cycles: [connection: conn_cycles, pubsub: pubsub_cycles],
      footprints: footprints
    }

    Map.put(result, :violations, violations(result))
  end

  ## Warm-up and footprint

  # A small run of the whole load (every fault included) and a few cycles of each kind: what the VM
  # sets up once (code loaded on first use, the tokio runtime, heap sizes, allocator carriers) is in
  # place before the baseline.
  defp warm_up(server, opts) do
    quiet = fn _line -> :ok end

    warm =
      Keyword.merge(opts,
        key: "soak:warm",
        calls: max(div(opts[:calls], 20), 1_000),
        kills: 1,
        restarts: 1,
        pauses: 1,
        kill_pauses: min(opts[:kill_pauses], 1),
        log: quiet
      )

    {_load, server} = load(server, warm, quiet)
    cycles(:connection, server, 200, quiet)
    cycles(:pubsub, server, 200, quiet)
    server
  end

  defp footprint do
    Enum.each(Process.list(), &:erlang.garbage_collect/1)
    Process.sleep(200)
    Enum.each(Process.list(), &:erlang.garbage_collect/1)

    %{
      memory: :erlang.memory(:total),
      threads: length(File.ls!("/proc/self/task")),
      fds: length(File.ls!("/proc/self/fd")),
      processes: :erlang.system_info(:process_count),
      rss: rss(),
      # Not compared; shown in the log.
      detail: Keyword.take(:erlang.memory(), [:processes, :binary, :ets, :code, :atom, :system])
    }
  end

  # The resident set of the OS process: the VM and the native side (tokio, buffers, rustls).
  defp rss do
    [_, kb] = Regex.run(~r/VmRSS:\s+(\d+) kB/, File.read!("/proc/self/status"))
    String.to_integer(kb) * 1024
  end

  # The footprint once it is back within the tolerances of the baseline, or the last one measured
  # after `@settle_ms`.
  defp settle(baseline, log), do: settle(baseline, log, now(), now() + @settle_ms)

  defp settle(baseline, log, started, deadline) do
    sample = footprint()

    cond do
      within?(sample, baseline) ->
        sample

      now() >= deadline ->
        log.("the footprint did not settle in #{@settle_ms} ms")
        sample

      true ->
        if now() - started >= 1_000 and rem(now() - started, 5_000) < 700,
          do: log.("  settling: #{inspect(sample)}")

        Process.sleep(500)
        settle(baseline, log, started, deadline)
    end
  end

  defp within?(sample, baseline),
    do: Enum.all?(@tolerances, fn {key, tol} -> sample[key] - baseline[key] <= tol end)

  ## The load

  defp load(server, opts, log) do
    total = opts[:calls]

    {:ok, conn} =
      RedixRs.start_link(
        port: server.port,
        client_name: @client_name,
        sync_connect: true,
        backoff_initial: 50,
        backoff_max: 500
      )

    # 1: calls issued, 2: calls answered.
    counters = :counters.new(2, [:write_concurrency])
    words = div(total - 1, 64) + 1

    ctx = %{
      conn: conn,
      counters: counters,
      seen: :atomics.new(words, signed: false),
      words: words,
      key: opts[:key],
      timeout: opts[:call_timeout],
      # Out of 10,000 calls, this many get a short timeout.
      short: round(opts[:short_timeouts] * 10_000),
      coordinator: self()
    }

    events = plan_events(opts)
    log.("faults planned (at answered calls): #{format_plan(events)}")
    chaos = spawn_link(fn -> chaos_loop(%{ctx | seen: nil}, server, events, opts, []) end)

    load_started = now()
    workers = start_workers(ctx, total, opts[:processes])
    {stats, hung} = await_workers(workers, counters, total, opts, log)
    load_ms = now() - load_started

    send(chaos, {:stop, self()})

    {server, fired, unfired} =
      receive do
        {:chaos_done, server, fired, unfired} -> {server, fired, unfired}
      end

    # A reply that reaches a caller after its answer would be there by now.
    Process.sleep(1_000)
    strays = check_mailboxes(workers -- hung)
    # Every caller has exited (and this process's mailbox holds none of their :DOWN messages).
    exited = Enum.count(workers, &await_down/1)

    final = final_counter(server, opts[:key])
    alive_after = RedixRs.command(conn, ["PING"], timeout: 5_000)
    :ok = RedixRs.stop(conn)

    load = %{
      calls: total,
      processes: opts[:processes],
      issued: :counters.get(counters, 1),
      answered: :counters.get(counters, 2),
      outcomes: sum_outcomes(stats),
      other_examples: stats |> Enum.flat_map(& &1.other_examples) |> Enum.take(5),
      duplicates: sum(stats, :duplicates),
      out_of_order: sum(stats, :out_of_order),
      out_of_range: sum(stats, :out_of_range),
      strays: strays,
      hung: length(hung),
      not_exited: length(workers) - exited,
      final: final,
      fired: Enum.reverse(fired),
      unfired: unfired,
      conn_after: alive_after,
      load_ms: load_ms
    }

    {load, server}
  end

  defp start_workers(ctx, total, processes) do
    share = div(total, processes)
    extra = rem(total, processes)

    for i <- 1..processes do
      calls = if i <= extra, do: share + 1, else: share
      {pid, _ref} = spawn_monitor(fn -> worker(ctx, calls) end)
      pid
    end
  end

  defp worker(ctx, calls) do
    stats = worker_loop(calls, ctx, empty_stats())
    send(ctx.coordinator, {:done, self(), stats})

    # Told to look once every caller is done and a second has passed: anything here but that
    # message came after an answer.
    receive do
      {:check, from} ->
        {:messages, messages} = Process.info(self(), :messages)
        send(from, {:mailbox, self(), length(messages)})
    end
  end

  defp worker_loop(0, _ctx, stats), do: stats

  defp worker_loop(left, ctx, stats) do
    :counters.add(ctx.counters, 1, 1)
    timeout = if :rand.uniform(10_000) <= ctx.short, do: :rand.uniform(3), else: ctx.timeout
    result = incr(ctx.conn, ctx.key, timeout)
    :counters.add(ctx.counters, 2, 1)
    stats = record(result, stats, ctx)

    # A caller that got an error waits a little before its next call, as an application would.
    if timeout == ctx.timeout and not match?({:ok, _}, result),
      do: Process.sleep(5 + :rand.uniform(15))

    worker_loop(left - 1, ctx, stats)
  end

  defp incr(conn, key, timeout) do
    RedixRs.command(conn, ["INCR", key], timeout: timeout)
  catch
    :exit, reason -> {:exit, reason}
  end

  defp record({:ok, value}, stats, ctx) when is_integer(value) do
    # Each caller waits for its answer before its next call: its next INCR ran after this one.
    stats = if value <= stats.last, do: bump(stats, :out_of_order), else: stats
    stats = %{stats | ok: stats.ok + 1, last: max(value, stats.last)}

    case mark(ctx.seen, ctx.words, value) do
      :ok -> stats
      :duplicate -> bump(stats, :duplicates)
      :out_of_range -> bump(stats, :out_of_range)
    end
  end

  defp record({:error, %ConnectionError{reason: reason}}, stats, _ctx)
       when reason in [:disconnected, :timeout, :closed],
       do: bump(stats, reason)

  # After a restart Redis answers -LOADING until it has replayed its AOF: nothing ran.
  defp record({:error, %RedixRs.Error{message: "LOADING" <> _}}, stats, _ctx),
    do: bump(stats, :loading)

  defp record(other, stats, _ctx) do
    examples = Enum.take([inspect(other) | stats.other_examples], 3)
    %{bump(stats, :other) | other_examples: examples}
  end

  defp bump(stats, key), do: Map.update!(stats, key, &(&1 + 1))

  # One bit per counter value 1..calls (the counter cannot pass the number of INCRs).
  defp mark(_seen, _words, value) when value < 1, do: :out_of_range

  defp mark(seen, words, value) do
    index = div(value - 1, 64) + 1
    bit = Bitwise.bsl(1, rem(value - 1, 64))

    if index > words, do: :out_of_range, else: set_bit(seen, index, bit)
  end

  defp set_bit(seen, index, bit) do
    old = :atomics.get(seen, index)

    cond do
      Bitwise.band(old, bit) != 0 ->
        :duplicate

      :atomics.compare_exchange(seen, index, old, Bitwise.bor(old, bit)) == :ok ->
        :ok

      true ->
        set_bit(seen, index, bit)
    end
  end

  # Collects every worker's stats; a worker that has not answered when no call was answered for
  # `@stall_ms` beyond the call timeout is hung: it is listed and killed.
  defp await_workers(workers, counters, total, opts, log) do
    pending = MapSet.new(workers)
    stall = opts[:call_timeout] + @stall_ms
    state = %{answered: 0, moved_at: now(), logged_at: now()}
    await_workers(pending, [], counters, total, stall, state, log)
  end

  defp await_workers(pending, stats, counters, total, stall, state, log) do
    if MapSet.size(pending) == 0 do
      {stats, []}
    else
      receive do
        {:done, pid, worker_stats} ->
          pending = MapSet.delete(pending, pid)
          await_workers(pending, [worker_stats | stats], counters, total, stall, state, log)

        {:DOWN, _ref, :process, pid, reason} when reason != :normal ->
          log.("a caller crashed: #{inspect(reason)}")
          crashed = %{empty_stats() | other: 1, other_examples: [inspect({:crash, reason})]}

          await_workers(
            MapSet.delete(pending, pid),
            [crashed | stats],
            counters,
            total,
            stall,
            state,
            log
          )
      after
        500 ->
          answered = :counters.get(counters, 2)
          t = now()

          state =
            if answered != state.answered,
              do: %{state | answered: answered, moved_at: t},
              else: state

          state =
            if t - state.logged_at >= 5_000 do
              log.("  #{Report.fmt(answered)} / #{Report.fmt(total)} calls answered")
              %{state | logged_at: t}
            else
              state
            end

          if t - state.moved_at > stall do
            hung = MapSet.to_list(pending)

            log.(
              "#{length(hung)} callers got no answer for #{stall} ms: #{inspect(stacks(hung))}"
            )

            Enum.each(hung, &Process.exit(&1, :kill))
            {stats, hung}
          else
            await_workers(pending, stats, counters, total, stall, state, log)
          end
      end
    end
  end

  defp empty_stats do
    %{
      ok: 0,
      disconnected: 0,
      timeout: 0,
      closed: 0,
      loading: 0,
      other: 0,
      other_examples: [],
      duplicates: 0,
      out_of_order: 0,
      out_of_range: 0,
      last: 0
    }
  end

  defp stacks(pids),
    do: pids |> Enum.take(3) |> Enum.map(&Process.info(&1, :current_stacktrace))

  defp check_mailboxes(workers) do
    Enum.each(workers, &send(&1, {:check, self()}))

    Enum.reduce(workers, 0, fn pid, acc ->
      receive do
        {:mailbox, ^pid, count} -> acc + count
      after
        5_000 -> acc + 1
      end
    end)
  end

  defp await_down(pid) do
    receive do
      {:DOWN, _ref, :process, ^pid, _reason} -> true
    after
      # A caller that crashed: its :DOWN was taken already.
      5_000 -> not Process.alive?(pid)
    end
  end

  defp sum_outcomes(stats), do: Map.new(@outcomes, &{&1, sum(stats, &1)})
  defp sum(stats, key), do: stats |> Enum.map(&Map.fetch!(&1, key)) |> Enum.sum()

  defp final_counter(server, key) do
    case RedisServer.redis_cli(server, ["GET", key]) do
      "$-1\r\n" ->
        0

      reply ->
        [_, value] = Regex.run(~r/^\$\d+\r\n(\d+)\r\n$/, reply)
        String.to_integer(value)
    end
  end

  ## The faults

  # One random point per slot of 5%..80% of the calls, the kinds shuffled over the slots.
  defp plan_events(opts) do
    kinds =
      List.duplicate(:kill, opts[:kills]) ++
        List.duplicate(:restart, opts[:restarts]) ++
        List.duplicate(:pause, opts[:pauses]) ++
        List.duplicate(:kill_pause, opts[:kill_pauses])

    count = length(kinds)
    slot = 0.75 / max(count, 1)

    kinds
    |> Enum.shuffle()
    |> Enum.with_index()
    |> Enum.map(fn {kind, i} ->
      at = (0.05 + slot * (i + :rand.uniform())) * opts[:calls]
      {trunc(at), kind}
    end)
  end

  defp format_plan(events),
    do: Enum.map_join(events, ", ", fn {at, kind} -> "#{kind} @ #{Report.fmt(at)}" end)

  defp chaos_loop(ctx, server, [{at, kind} | rest] = events, opts, fired) do
    receive do
      {:stop, from} -> send(from, {:chaos_done, server, fired, events})
    after
      0 ->
        if :counters.get(ctx.counters, 2) >= at do
          t0 = now()
          {server, detail} = fault(kind, server, opts)
          recovered = RedixRs.Test.Helpers.await_pong(ctx.conn, 30_000, 1_000)

          opts[:log].(
            "fault #{kind} at #{Report.fmt(at)} answered calls: #{detail}, recovered in #{recovered} ms"
          )

          event = %{
            kind: kind,
            at: at,
            detail: detail,
            recovered_ms: recovered,
            took_ms: now() - t0
          }

          chaos_loop(ctx, server, rest, opts, [event | fired])
        else
          Process.sleep(5)
          chaos_loop(ctx, server, events, opts, fired)
        end
    end
  end

  defp chaos_loop(_ctx, server, [], _opts, fired) do
    receive do
      {:stop, from} -> send(from, {:chaos_done, server, fired, []})
    end
  end

  defp fault(:kill, server, _opts) do
    id = await_client_id(server, now() + 5_000)

    case RedisServer.redis_cli(server, ["CLIENT", "KILL", "ID", id]) do
      ":1\r\n" -> {server, "CLIENT KILL ID #{id}: killed"}
      reply -> {server, "CLIENT KILL ID #{id}: #{inspect(reply)}"}
    end
  end

  defp fault(:restart, server, _opts) do
    t0 = now()
    shutdown(server)
    down = now()
    server = RedisServer.restart(server)
    {server, "SHUTDOWN took #{down - t0} ms, restarted (AOF replayed) in #{now() - down} ms"}
  end

  # The connection killed and the server paused at once: the reconnection's handshake meets a
  # server that does not answer.
  defp fault(:kill_pause, server, opts) do
    {server, detail} = fault(:kill, server, opts)
    Process.sleep(:rand.uniform(100))
    {server, pause} = fault(:pause, server, opts)
    {server, detail <> ", then " <> pause}
  end

  defp fault(:pause, server, opts) do
    :ok = RedisServer.os_kill(server, "STOP")
    Process.sleep(opts[:pause_ms])
    :ok = RedisServer.os_kill(server, "CONT")
    {server, "SIGSTOP, SIGCONT after #{opts[:pause_ms]} ms"}
  end

  # SHUTDOWN (the AOF is fsynced) from a connection of our own; waits for redis-server to exit.
  defp shutdown(server) do
    monitor = Process.monitor(server.holder)
    {:ok, socket} = :gen_tcp.connect({127, 0, 0, 1}, server.port, [:binary, active: false], 5_000)
    :ok = :gen_tcp.send(socket, "*1\r\n$8\r\nSHUTDOWN\r\n")

    case :gen_tcp.recv(socket, 0, 30_000) do
      {:error, :closed} -> :ok
      other -> raise "SHUTDOWN answered #{inspect(other)}"
    end

    :gen_tcp.close(socket)

    receive do
      {:DOWN, ^monitor, :process, _pid, _reason} -> :ok
    after
      30_000 -> raise "redis-server did not exit after SHUTDOWN"
    end
  end

  # The id of the soak connection (it may be reconnecting).
  defp await_client_id(server, deadline) do
    list = RedisServer.redis_cli(server, ["CLIENT", "LIST"])

    case Regex.run(~r/id=(\d+) [^\n]* name=#{@client_name} /, list) do
      [_, id] ->
        id

      nil ->
        if now() >= deadline, do: raise("the soak connection is not connected")
        Process.sleep(10)
        await_client_id(server, deadline)
    end
  end

  ## Start/stop cycles

  defp cycles(kind, server, n, log) do
    started = now()

    failures =
      Enum.reduce(1..n, 0, fn i, failures ->
        if rem(i, 2_000) == 0, do: log.("  #{kind} cycles: #{Report.fmt(i)} / #{Report.fmt(n)}")
        if cycle(kind, server.port) == :ok, do: failures, else: failures + 1
      end)

    # A stopped pub/sub connection sends nothing more to its subscriber.
    {:messages, left} = Process.info(self(), :messages)
    strays = Enum.count(left, &match?({:redix_pubsub, _, _, _, _}, &1))
    %{cycles: n, failures: failures, strays: strays, ms: now() - started}
  end

  defp cycle(:connection, port) do
    {:ok, conn} = RedixRs.start_link(port: port, sync_connect: true)
    result = RedixRs.command(conn, ["PING"])
    :ok = RedixRs.stop(conn)
    if result == {:ok, "PONG"}, do: :ok, else: {:error, result}
  end

  defp cycle(:pubsub, port) do
    {:ok, pubsub} = RedixRs.PubSub.start_link(port: port, sync_connect: true)
    {:ok, ref} = RedixRs.PubSub.subscribe(pubsub, @channel, self())

    result =
      receive do
        {:redix_pubsub, ^pubsub, ^ref, :subscribed, %{channel: @channel}} -> :ok
      after
        5_000 -> {:error, :not_subscribed}
      end

    :ok = RedixRs.PubSub.stop(pubsub)
    result
  end

  ## The verdict

  defp violations(%{load: load, cycles: cycles, footprints: footprints, opts: opts}) do
    o = load.outcomes
    unknown = o.disconnected + o.timeout
    answered = Enum.sum(Map.values(o))

    checks = [
      {load.issued == load.calls, "issued #{load.issued} calls of #{load.calls}"},
      {load.answered == load.calls and answered == load.calls,
       "answered #{load.answered} (outcomes sum to #{answered}) of #{load.calls} calls"},
      {load.strays == 0, "#{load.strays} messages reached callers after their answer"},
      {load.hung == 0, "#{load.hung} callers were left waiting"},
      {load.not_exited == 0, "#{load.not_exited} callers did not exit"},
      {load.duplicates == 0, "#{load.duplicates} acknowledged values were acknowledged twice"},
      {load.out_of_order == 0, "#{load.out_of_order} acknowledged values were out of order"},
      {load.out_of_range == 0, "#{load.out_of_range} acknowledged values were out of range"},
      {o.other == 0, "#{o.other} unexpected answers: #{Enum.join(load.other_examples, "; ")}"},
      {o.ok <= load.final,
       "acknowledged #{o.ok} > final counter #{load.final}: acknowledged writes were lost"},
      {load.final <= o.ok + unknown,
       "final counter #{load.final} > acknowledged #{o.ok} + unknown #{unknown}: a call " <>
         "answered :closed (or an error) ran"},
      {load.unfired == [], "faults not injected while the load ran: #{inspect(load.unfired)}"},
      {Enum.all?(load.fired, &(&1.recovered_ms != :never)), "the connection did not recover"},
      {Enum.all?(load.fired, &(&1.kind != :kill or &1.detail =~ ": killed")),
       "a CLIENT KILL killed nothing: #{inspect(Enum.map(load.fired, & &1.detail))}"},
      {load.conn_after == {:ok, "PONG"},
       "the connection answered #{inspect(load.conn_after)} after the load"}
    ]

    cycle_checks =
      Enum.flat_map(cycles, fn {kind, c} ->
        [
          {c.failures == 0, "#{c.failures} of #{c.cycles} #{kind} cycles failed"},
          {c.strays == 0, "#{c.strays} pub/sub messages arrived after a #{kind} cycle"}
        ]
      end)

    [{"baseline", baseline} | rest] = footprints

    footprint_checks =
      for {stage, sample} <- rest, {key, tol} <- @tolerances do
        {sample[key] - baseline[key] <= tol,
         "#{key} #{stage}: #{sample[key]} vs baseline #{baseline[key]} (tolerance +#{tol})"}
      end

    _ = opts

    for {false, message} <- checks ++ cycle_checks ++ footprint_checks, do: message
  end

  defp server_version do
    case System.cmd("redis-server", ["--version"], stderr_to_stdout: true) do
      {out, 0} ->
        out
        |> String.split()
        |> Enum.find("?", &String.starts_with?(&1, "v="))
        |> String.trim_leading("v=")

      _ ->
        "?"
    end
  end

  defp now, do: System.monotonic_time(:millisecond)
end
