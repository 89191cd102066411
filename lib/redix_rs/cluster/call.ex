defmodule RedixRs.Cluster.Call do
  # The path of a call on a cluster, in the caller's process: find the cluster's native handle,
  # submit (the NIF routes every command to its node), wait for the one answer.
  @moduledoc false

  alias RedixRs.{Command, ConnectionError, Handles, Native, Telemetry}

  @default_timeout 5_000
  @routes [:primary, :replica, :prefer_replica]

  @doc """
  Runs `commands` (`kind`: `:pipeline` or `:transaction`) on the cluster `name`; returns every
  reply (MULTI's and EXEC's included for a transaction). Options: `:timeout`, `:route`,
  `:telemetry_metadata` (accepted, as on a connection).
  """
  def run(name, commands, kind, opts) do
    {timeout, route, metadata} = options!(opts, kind)
    trace = if Telemetry.enabled?(), do: Telemetry.begin_pipeline(metadata)
    run_on(name, commands, kind, route, timeout, trace)
  end

  @doc """
  As `run/4`, with options already checked; `route` may also be `{:node, "host:port"}`. With a
  `trace` (`RedixRs.Telemetry.begin_pipeline/1`), the call's pipeline events are emitted: `:start`
  once its commands are accepted, `:stop` with its result.
  """
  def run_on(name, commands, kind, route, timeout, trace \\ nil) do
    case RedixRs.Cluster.Manager.lookup(name) do
      {:ok, handle, owner} ->
        run_handle({name, handle, owner}, commands, kind, route, timeout, trace)

      :error ->
        exit({:redix_exited_during_call, :noproc})
    end
  end

  @doc "As `run_on/6`, for a cluster already looked up: `{name, handle, owner}`."
  def run_handle({name, handle, owner}, commands, kind, route, timeout, trace) do
    ref = make_ref()
    submitted = submit(handle, ref, commands, kind, route, timeout)
    span = trace && start_event(trace, name, commands, kind)

    result =
      case submitted do
        {:ok, token} -> await(ref, token, owner, timeout)
        {:error, reason} -> refused(reason)
      end

    if span, do: Telemetry.pipeline_stop(span, result), else: result
  end

  defp start_event(trace, name, commands, kind) do
    commands = RedixRs.Call.telemetry_commands(commands, kind)
    Telemetry.pipeline_start(trace, name, GenServer.whereis(name), commands)
  end

  defp submit(handle, ref, commands, kind, route, timeout) do
    case native_submit(handle, ref, commands, kind, route, timeout) do
      :normalize ->
        commands = Command.normalize_pipeline!(commands)

        case native_submit(handle, ref, commands, kind, route, timeout) do
          :normalize -> raise ArgumentError, "invalid Redis commands: #{inspect(commands)}"
          result -> result
        end

      result ->
        result
    end
  end

  defp native_submit(handle, ref, commands, kind, route, timeout) do
    case Native.cluster_submit(handle, ref, commands, kind, route, timeout) do
      :dirty -> Native.cluster_submit_dirty(handle, ref, commands, kind, route, timeout)
      other -> other
    end
  end

  defp refused({:redis_error, message}), do: {:error, %RedixRs.Error{message: message}}
  defp refused(reason), do: {:error, %ConnectionError{reason: RedixRs.Call.refusal(reason)}}

  defp await(ref, token, owner, timeout) do
    if timeout == 0 do
      RedixRs.Call.timed_out(ref, token)
    else
      receive do
        {^ref, :ok, replies} ->
          {:ok, replies}

        {^ref, :error, :owner_down} ->
          exit({:redix_exited_during_call, Handles.exit_reason(owner)})

        {^ref, :error, reason} ->
          refused(reason)
      after
        timeout -> RedixRs.Call.timed_out(ref, token)
      end
    end
  end

  defp options!(opts, kind) when is_list(opts) do
    Enum.reduce(opts, {@default_timeout, :primary, %{}}, fn
      {:timeout, t}, {_, route, meta} when (is_integer(t) and t >= 0) or t == :infinity ->
        {t, route, meta}

      {:timeout, t}, _ ->
        raise ArgumentError,
              "invalid value for :timeout option: expected a non-negative integer or :infinity, " <>
                "got: #{inspect(t)}"

      {:route, :primary}, {t, _, meta} ->
        {t, :primary, meta}

      {:route, route}, _ when kind == :transaction ->
        raise ArgumentError,
              "transaction_pipeline/3 only supports route: :primary, got: #{inspect(route)} " <>
                "(a transaction runs on the primary of its slot)"

      {:route, route}, {t, _, meta} when route in @routes ->
        {t, route, meta}

      {:route, route}, _ ->
        raise ArgumentError,
              "invalid :route option: #{inspect(route)}, expected one of #{inspect(@routes)}"

      {:telemetry_metadata, meta}, {t, route, _} when is_map(meta) ->
        {t, route, meta}

      {:telemetry_metadata, meta}, _ ->
        raise ArgumentError,
              "invalid value for :telemetry_metadata option: expected a map, got: #{inspect(meta)}"

      {key, _}, _ ->
        raise ArgumentError,
              "unknown options #{inspect([key])}, valid options are: " <>
                "[:timeout, :route, :telemetry_metadata]"

      other, _ ->
        raise ArgumentError, "expected a keyword list of options, got: #{inspect(other)}"
    end)
  end

  defp options!(other, _kind),
    do: raise(ArgumentError, "expected a keyword list of options, got: #{inspect(other)}")
end
