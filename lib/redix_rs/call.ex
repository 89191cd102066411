defmodule RedixRs.Call do
  # The path of every call: find the connection's native handle, submit, wait for the answer, emit
  # telemetry. Runs in the caller's process; the connection process is only asked when the handle is
  # not published (connecting, disconnected) or lives on another node.
  @moduledoc false

  alias RedixRs.{Command, ConnectionError, Handles, Native, SideConnections, Telemetry}

  @default_timeout 5_000

  # The hot path's helpers, compiled into it.
  @compile {:inline, enqueue: 4, await: 4, native_submit: 4}

  @type kind() :: :pipeline | :noreply | :transaction | :cached

  @doc """
  Runs `commands` as a submission of `kind`; returns every reply (wrappers included for
  `:transaction`, just CLIENT REPLY ON's for `:noreply`). `{:error, %ArgumentError{}}` only for a
  `:cached` read its connection, on another node, could not cache (raised by the caller).
  """
  @spec run(GenServer.server(), term(), kind(), keyword()) ::
          {:ok, [term()]} | {:error, ConnectionError.t() | %ArgumentError{}}
  def run(conn, commands, kind, opts) do
    {timeout, metadata} = call_options!(opts)
    # `nil`: no events.
    trace = if Telemetry.enabled?(), do: Telemetry.begin_pipeline(metadata)
    run_traced(conn, commands, kind, timeout, trace)
  end

  @doc """
  `run/4` with `timeout` and no telemetry event: what a connection process runs for a caller on
  another node, which emits the call's events on its own node.
  """
  @spec run_untraced(GenServer.server(), term(), kind(), timeout()) ::
          {:ok, [term()]} | {:error, ConnectionError.t() | %ArgumentError{}}
  def run_untraced(conn, commands, kind, timeout),
    do: run_traced(conn, commands, kind, timeout, nil)

  defp run_traced(conn, commands, kind, timeout, trace) do
    case lookup(conn) do
      {:ok, handle, owner} -> run_fast(conn, handle, owner, commands, kind, timeout, trace)
      :error -> not_published(conn, commands, kind, timeout, trace)
    end
  end

  # A cluster's name (`RedixRs.Cluster`), or a connection the slow path asks.
  defp not_published(conn, commands, kind, timeout, trace) do
    case is_atom(conn) && RedixRs.Cluster.Manager.lookup(conn) do
      {:ok, handle, owner} ->
        if kind == :noreply do
          raise ArgumentError, "noreply_* functions are not supported on a Redis Cluster"
        end

        cluster = {conn, handle, owner}
        RedixRs.Cluster.Call.run_handle(cluster, commands, kind, :primary, timeout, trace)

      _not_a_cluster ->
        ask_connection(conn, commands, kind, timeout, trace)
    end
  end

  # The hot path: one NIF call to encode and queue (a second, on a dirty scheduler, for large input;
  # a third after normalizing commands the NIF did not take as they are), then a receive on a
  # reference made in this same function, so the receive skips older messages. `:start` is emitted
  # once the commands are known to be valid (as Redix validates before it emits anything): invalid
  # input raises with no event at all.
  defp run_fast(conn, handle, owner, commands, kind, timeout, trace) do
    ref = make_ref()

    case enqueue(handle, ref, commands, kind) do
      {:side, pool} ->
        run_on_side(conn, pool, owner, commands, kind, timeout, trace)

      queued ->
        span = trace && start_event(trace, conn, owner, commands, kind)

        result =
          case queued do
            {:ok, token} -> await(ref, token, owner, timeout)
            {:error, reason} -> {:error, %ConnectionError{reason: refusal(reason)}}
          end

        if span, do: Telemetry.pipeline_stop(span, result), else: result
    end
  end

  # A submission holding a blocking command, which the NIF did not queue: on a side connection
  # borrowed from `pool` (`RedixRs.SideConnections`), within the same timeout. Checked first, so
  # that invalid commands raise before anything is borrowed or emitted.
  defp run_on_side(conn, pool, owner, commands, kind, timeout, trace) do
    normalized = Command.normalize_pipeline!(commands)
    # Telemetry reports the commands as given, as on the shared connection.
    span = trace && start_event(trace, conn, owner, commands, kind)
    started = System.monotonic_time(:millisecond)

    result =
      case SideConnections.checkout(pool, timeout) do
        {:ok, side, id} ->
          ref = make_ref()

          result =
            case native_submit(side, ref, normalized, kind) do
              {:ok, token} -> await(ref, token, owner, remaining(timeout, started))
              {:error, reason} -> {:error, %ConnectionError{reason: refusal(reason)}}
            end

          SideConnections.checkin(pool, id, result)
          result

        {:error, _} = error ->
          error

        # The connection (and its pool with it) stopped while this caller waited: it exits as the
        # callers in flight do.
        :gone ->
          exit({:redix_exited_during_call, Handles.exit_reason(owner)})
      end

    if span, do: Telemetry.pipeline_stop(span, result), else: result
  end

  defp start_event(trace, conn, pid, commands, kind),
    do: Telemetry.pipeline_start(trace, conn, pid, telemetry_commands(commands, kind))

  # `{:ok, token}` or `{:error, reason}` (the NIF's refusal); raises `ArgumentError` on invalid
  # commands.
  defp enqueue(handle, ref, commands, kind) do
    case native_submit(handle, ref, commands, kind) do
      :normalize ->
        commands = Command.normalize_pipeline!(commands)

        case native_submit(handle, ref, commands, kind) do
          :normalize -> raise ArgumentError, "invalid Redis commands: #{inspect(commands)}"
          result -> cacheable!(result)
        end

      result ->
        cacheable!(result)
    end
  end

  # A `cache: true` read the connection cannot cache (see RedixRs.Cache).
  defp cacheable!({:not_cacheable, message}), do: raise(ArgumentError, message)
  defp cacheable!(result), do: result

  defp await(ref, token, owner, timeout) do
    # `timeout: 0` always times out, as in Redix, even if the reply is already in the mailbox.
    if timeout == 0 do
      timed_out(ref, token)
    else
      receive do
        {^ref, :ok, replies} ->
          {:ok, replies}

        {^ref, :error, :owner_down} ->
          exit({:redix_exited_during_call, Handles.exit_reason(owner)})

        # This caller's own reply went past a `:reply_limits` limit.
        {^ref, :error, {:protocol_error, limit}} when is_atom(limit) ->
          {:error, %ConnectionError{reason: {:protocol_error, limit}}}

        {^ref, :error, _reason} ->
          {:error, %ConnectionError{reason: :disconnected}}
      after
        timeout -> timed_out(ref, token)
      end
    end
  end

  @doc """
  Submits already-valid `commands` for the calling process, which gets `{ref, :ok | :error, _}`:
  `{:ok, token}` or `{:error, %RedixRs.ConnectionError{}}`. For the connection processes' own
  commands (health checks, PINGs, CLIENT ID, remote callers).
  """
  def submit_for_self(handle, ref, commands, kind \\ :pipeline) do
    case native_submit(handle, ref, commands, kind) do
      {:ok, token} -> {:ok, token}
      # Not submitted: it goes to a side connection (`run/4` does that).
      {:side, pool} -> {:side, pool}
      {:error, reason} -> {:error, %ConnectionError{reason: refusal(reason)}}
      :normalize -> raise ArgumentError, "invalid Redis commands: #{inspect(commands)}"
      # A remote caller's `cache: true` read: raised in that caller, not here.
      {:not_cacheable, message} -> {:error, %ArgumentError{message: message}}
    end
  end

  # A normal-scheduler NIF call; input too large for it goes again to the dirty-scheduler one.
  defp native_submit(handle, ref, commands, kind) do
    case Native.submit(handle, ref, commands, kind) do
      :dirty -> Native.submit_dirty(handle, ref, commands, kind)
      other -> other
    end
  end

  # Either the answer will never be sent (cancelled), or it was sent just now and is taken out of the
  # mailbox here: a caller that timed out never finds a stray reply later. (Cluster calls too.)
  @doc false
  def timed_out(ref, token) do
    with :sent <- Native.cancel(token) do
      receive do
        {^ref, _, _} -> :ok
      after
        # The answer was claimed for sending: it arrives at once (only a crash in between could
        # lose it, and then waiting forever would be worse than a late stray message).
        1_000 -> :ok
      end
    end

    {:error, %ConnectionError{reason: :timeout}}
  end

  @doc false
  def refusal(:full), do: :write_queue_full
  def refusal(reason), do: reason

  defp lookup(conn) when is_pid(conn) or is_atom(conn), do: Handles.lookup(conn)

  defp lookup(conn) do
    case whereis(conn) do
      pid when is_pid(pid) -> Handles.lookup(pid)
      _ -> :error
    end
  end

  # What a connection argument stands for, as `GenServer.whereis/1` says: a pid, `{name, node}` for a
  # name on another node, or `nil` when nothing is registered under the name.
  defp whereis(conn) when is_pid(conn), do: conn

  defp whereis(conn)
       when is_atom(conn) or
              (is_tuple(conn) and tuple_size(conn) == 2 and elem(conn, 0) == :global) or
              (is_tuple(conn) and tuple_size(conn) == 3 and elem(conn, 0) == :via and
                 is_atom(elem(conn, 1))) or
              (is_tuple(conn) and tuple_size(conn) == 2 and is_atom(elem(conn, 0)) and
                 is_atom(elem(conn, 1))),
       do: GenServer.whereis(conn)

  defp whereis(conn) do
    raise ArgumentError,
          "expected a connection: a pid, an atom, {:global, term}, {:via, module, term} or " <>
            "{atom, node}, got: #{inspect(conn)}"
  end

  # The handle is not published: the connection process answers once its connection attempt ends
  # (bounded by this call's timeout), or at once with :closed while it waits to reconnect. A process on
  # another node (a pid, or `{name, node}`) runs the call itself, since a native handle cannot cross
  # nodes. Nothing running under that name: the caller exits as a Redix caller does.
  # This path is slow anyway: the commands are checked here first, so that invalid ones raise (with
  # no telemetry event) whatever state the connection is in.
  defp ask_connection(conn, commands, kind, timeout, trace) do
    normalized = Command.normalize_pipeline!(commands)
    pid = whereis(conn)
    span = trace && start_event(trace, conn, pid, commands, kind)

    result =
      case pid do
        nil ->
          exit({:redix_exited_during_call, :noproc})

        local when is_pid(local) and node(local) == node() ->
          # Checked first, as `timeout: 0` would otherwise win the race with the call's monitor.
          unless Process.alive?(local), do: exit({:redix_exited_during_call, :noproc})

          asked_at = System.monotonic_time(:millisecond)

          with {:ok, handle, owner} <- call(local, :handle, timeout) do
            # One deadline for the whole call: the wait for the connection counts.
            ref = make_ref()

            case enqueue(handle, ref, normalized, kind) do
              {:ok, token} ->
                await(ref, token, owner, remaining(timeout, asked_at))

              {:error, reason} ->
                {:error, %ConnectionError{reason: refusal(reason)}}

              {:side, pool} ->
                # The span (if any) is this function's: none from run_on_side/7.
                run_on_side(
                  conn,
                  pool,
                  owner,
                  normalized,
                  kind,
                  remaining(timeout, asked_at),
                  nil
                )
            end
          end

        remote ->
          call(remote, {:run, normalized, kind, timeout}, timeout)
      end

    if span, do: Telemetry.pipeline_stop(span, result), else: result
  end

  defp remaining(:infinity, _asked_at), do: :infinity

  defp remaining(timeout, asked_at) do
    max(timeout - (System.monotonic_time(:millisecond) - asked_at), 0)
  end

  # A call to the connection process. If it is not running, or exits before it answers, the caller
  # exits with `{:redix_exited_during_call, reason}`, as a Redix caller does (whose monitor says
  # `:noconnection` when the connection's node cannot be reached).
  defp call(server, request, timeout) do
    GenServer.call(server, request, timeout)
  catch
    :exit, {:timeout, {GenServer, :call, _}} ->
      {:error, %ConnectionError{reason: :timeout}}

    :exit, {{:nodedown, _node}, {GenServer, :call, _}} ->
      exit({:redix_exited_during_call, :noconnection})

    :exit, {reason, {GenServer, :call, _}} ->
      exit({:redix_exited_during_call, reason})
  end

  @doc "Validates per-call options (`:timeout`, `:telemetry_metadata`); raises `ArgumentError`."
  def options!(opts), do: call_options!(opts)

  defp call_options!([]), do: {@default_timeout, %{}}

  defp call_options!(opts) when is_list(opts) do
    Enum.reduce(opts, {@default_timeout, %{}}, fn
      {:timeout, t}, {_, meta} when (is_integer(t) and t >= 0) or t == :infinity ->
        {t, meta}

      {:timeout, t}, _ ->
        raise ArgumentError,
              "invalid value for :timeout option: expected a non-negative integer or :infinity, " <>
                "got: #{inspect(t)}"

      {:telemetry_metadata, meta}, {t, _} when is_map(meta) ->
        {t, meta}

      {:telemetry_metadata, meta}, _ ->
        raise ArgumentError,
              "invalid value for :telemetry_metadata option: expected a map, got: #{inspect(meta)}"

      {:cache, _}, _ ->
        raise ArgumentError,
              "the :cache option is for RedixRs.command/3 only: pipelines and transactions " <>
                "are never answered from the client-side cache"

      {key, _}, _ ->
        raise ArgumentError,
              "unknown options #{inspect([key])}, valid options are: [:timeout, :telemetry_metadata]"

      other, _ ->
        raise ArgumentError, "expected a keyword list of options, got: #{inspect(other)}"
    end)
  end

  # The one place where the commands reported by telemetry are made: as Redis sees them (Redix
  # reports the wrapped list).
  # AUTH passwords are redacted (see "Secrets" in the README).
  @doc false
  def telemetry_commands(commands, kind) do
    wrapped =
      case kind do
        :noreply -> [~w(CLIENT REPLY OFF)] ++ commands ++ [~w(CLIENT REPLY ON)]
        :transaction -> [["MULTI"]] ++ commands ++ [["EXEC"]]
        :pipeline -> commands
        :cached -> commands
      end

    RedixRs.Redact.commands(wrapped)
  end
end
