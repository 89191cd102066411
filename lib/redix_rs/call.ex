defmodule RedixRs.Call do
  # The path of every call: find the connection's native handle, submit, wait for the answer, emit
  # telemetry. Runs in the caller's process; the connection process is only asked when the handle is
  # not published (connecting, disconnected) or lives on another node.
  @moduledoc false

  alias RedixRs.{Command, ConnectionError, Handles, Native, Telemetry}

  @default_timeout 5_000

  @type kind() :: :pipeline | :noreply | :transaction

  @doc """
  Runs `commands` as a submission of `kind`; returns every reply (wrappers included for
  `:transaction`, just CLIENT REPLY ON's for `:noreply`).
  """
  @spec run(GenServer.server(), term(), kind(), keyword()) ::
          {:ok, [term()]} | {:error, ConnectionError.t()}
  def run(conn, commands, kind, opts) do
    {timeout, metadata} = call_options!(opts)

    if Telemetry.enabled?() do
      # `:start` is emitted once the commands are known to be valid (as Redix validates before it
      # emits anything): invalid input raises with no event at all. AUTH passwords are redacted.
      traced = RedixRs.Redact.commands(wrapped(commands, kind))

      Telemetry.span_pipeline(conn, traced, metadata, fn started ->
        run_untraced(conn, commands, kind, timeout, started)
      end)
    else
      run_untraced(conn, commands, kind, timeout, &no_event/0)
    end
  end

  defp no_event, do: :ok

  defp run_untraced(conn, commands, kind, timeout, started) do
    case lookup(conn) do
      {:ok, handle, owner} -> submit(handle, owner, commands, kind, timeout, :fast, started)
      :error -> ask_connection(conn, commands, kind, timeout, started)
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
      {:error, reason} -> {:error, %ConnectionError{reason: refusal(reason)}}
      :normalize -> raise ArgumentError, "invalid Redis commands: #{inspect(commands)}"
    end
  end

  # The hot path: one NIF call to encode and queue (a second, on a dirty scheduler, for large input),
  # then a receive on a reference made in this same function, so the receive skips older messages.
  defp submit(handle, owner, commands, kind, timeout, attempt, started) do
    ref = make_ref()
    result = native_submit(handle, ref, commands, kind)
    if result != :normalize, do: started.()

    case result do
      # `timeout: 0` always times out, as in Redix, even if the reply is already in the mailbox.
      {:ok, token} when timeout == 0 ->
        timed_out(ref, token)

      {:ok, token} ->
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

      :normalize when attempt == :fast ->
        commands = Command.normalize_pipeline!(commands)
        submit(handle, owner, commands, kind, timeout, :normalized, started)

      :normalize ->
        raise ArgumentError, "invalid Redis commands: #{inspect(commands)}"

      {:error, reason} ->
        {:error, %ConnectionError{reason: refusal(reason)}}
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
  # mailbox here: a caller that timed out never finds a stray reply later.
  defp timed_out(ref, token) do
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

  defp refusal(:full), do: :write_queue_full
  defp refusal(reason), do: reason

  defp lookup(conn) when is_pid(conn) or is_atom(conn), do: Handles.lookup(conn)

  defp lookup(conn) do
    case GenServer.whereis(conn) do
      pid when is_pid(pid) -> Handles.lookup(pid)
      _ -> :error
    end
  end

  # The handle is not published: the connection process answers once its connection attempt ends
  # (bounded by this call's timeout), or at once with :closed while it waits to reconnect. A process on
  # another node runs the call itself, since a native handle cannot cross nodes.
  # This path is slow anyway: the commands are checked here first, so that invalid ones raise (with
  # no telemetry event) whatever state the connection is in.
  defp ask_connection(conn, commands, kind, timeout, started) do
    commands = Command.normalize_pipeline!(commands)
    started.()

    case GenServer.whereis(conn) do
      pid when is_pid(pid) and node(pid) != node() ->
        call(conn, {:run, commands, kind, timeout}, timeout)

      _ ->
        asked_at = System.monotonic_time(:millisecond)

        with {:ok, handle, owner} <- call(conn, :handle, timeout) do
          # One deadline for the whole call: the wait for the connection counts.
          submit(
            handle,
            owner,
            commands,
            kind,
            remaining(timeout, asked_at),
            :normalized,
            started
          )
        end
    end
  end

  defp remaining(:infinity, _asked_at), do: :infinity

  defp remaining(timeout, asked_at) do
    max(timeout - (System.monotonic_time(:millisecond) - asked_at), 0)
  end

  defp call(conn, request, timeout) do
    GenServer.call(conn, request, timeout)
  catch
    :exit, {:timeout, _} -> {:error, %ConnectionError{reason: :timeout}}
  end

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

      {key, _}, _ ->
        raise ArgumentError,
              "unknown options #{inspect([key])}, valid options are: [:timeout, :telemetry_metadata]"

      other, _ ->
        raise ArgumentError, "expected a keyword list of options, got: #{inspect(other)}"
    end)
  end

  # The commands as Redis sees them, for telemetry (Redix reports the wrapped list).
  defp wrapped(commands, :noreply) when is_list(commands),
    do: [~w(CLIENT REPLY OFF)] ++ commands ++ [~w(CLIENT REPLY ON)]

  defp wrapped(commands, :transaction) when is_list(commands),
    do: [["MULTI"]] ++ commands ++ [["EXEC"]]

  defp wrapped(commands, _kind), do: commands
end
