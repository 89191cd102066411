defmodule RedixRs.Command do
  # The slow path of command validation. The NIF accepts binaries, integers and atoms and refuses
  # everything else with `:normalize`; then this module either raises Redix's `ArgumentError` or turns
  # every element into a binary through `String.Chars`, so the NIF can take it on the second try.
  #
  # Also the shaping of results that `RedixRs` and `RedixRs.Cluster` share: a transaction's result
  # from the replies of its MULTI ... EXEC, and the bang functions' value or raise.
  @moduledoc false

  @pubsub ~w(SUBSCRIBE PSUBSCRIBE UNSUBSCRIBE PUNSUBSCRIBE SSUBSCRIBE SUNSUBSCRIBE)

  @doc "Validates a pipeline and converts every element to a binary; raises `ArgumentError`."
  @spec normalize_pipeline!(term()) :: [[binary()]]
  def normalize_pipeline!([]), do: raise(ArgumentError, "no commands passed to the pipeline")

  def normalize_pipeline!(commands) when is_list(commands) do
    if proper_list?(commands) do
      Enum.map(commands, &normalize_command!/1)
    else
      raise ArgumentError, "expected a list of Redis commands, got: #{inspect(commands)}"
    end
  end

  def normalize_pipeline!(other) do
    raise ArgumentError, "expected a list of Redis commands, got: #{inspect(other)}"
  end

  defp normalize_command!([]) do
    raise ArgumentError, "got an empty command ([]), which is not a valid Redis command"
  end

  defp normalize_command!([_ | _] = command) do
    unless proper_list?(command) do
      raise ArgumentError,
            "expected a list of binaries as each Redis command, got: #{inspect(command)}"
    end

    strings = Enum.map(command, &element!(&1, command))
    refuse_forbidden!(strings, command)
    strings
  end

  defp normalize_command!(other) do
    raise ArgumentError,
          "expected a list of binaries as each Redis command, got: #{inspect(other)}"
  end

  defp proper_list?([]), do: true
  defp proper_list?([_ | tail]), do: proper_list?(tail)
  defp proper_list?(_), do: false

  defp element!(element, _command) when is_binary(element), do: element

  defp element!(element, command) do
    String.Chars.to_string(element)
  rescue
    Protocol.UndefinedError ->
      raise ArgumentError,
            "expected each element of a Redis command to be a binary or to implement " <>
              "String.Chars, got: #{inspect(element)} in #{inspect(command)}"
  end

  defp refuse_forbidden!([name | rest], command) do
    second = List.first(rest, "")

    cond do
      String.upcase(name) in @pubsub ->
        raise ArgumentError,
              "RedixRs doesn't support Pub/Sub commands on a plain connection; use " <>
                "RedixRs.PubSub connections for Pub/Sub (offending command: #{inspect(command)})"

      String.upcase(name) == "CLIENT" and String.upcase(second) == "REPLY" ->
        raise ArgumentError,
              "CLIENT REPLY commands are forbidden because of how RedixRs works internally. " <>
                "If you want to send commands without waiting for replies, use " <>
                "RedixRs.noreply_pipeline/3 or RedixRs.noreply_command/3"

      true ->
        :ok
    end
  end

  @doc """
  The result of a transaction from the result of its MULTI ... EXEC: `{:ok, replies}` with EXEC's
  replies, `{:ok, nil}` when a WATCHed key changed (Redis ran nothing: a null reply, as Redix
  reports it), `{:error, error}` when Redis aborted it (EXECABORT) or the call failed.
  """
  @spec transaction_result({:ok, [term()]} | {:error, term()}) ::
          {:ok, [term()] | nil} | {:error, term()}
  def transaction_result({:ok, replies}) do
    case List.last(replies) do
      %RedixRs.Error{} = error -> {:error, error}
      nil -> {:ok, nil}
      exec_replies -> {:ok, exec_replies}
    end
  end

  def transaction_result({:error, _} = error), do: error

  @doc "The value of `{:ok, value}`; raises the error of `{:error, error}` (the bang functions)."
  @spec ok!({:ok, value} | {:error, Exception.t()}) :: value when value: term()
  def ok!({:ok, value}), do: value
  def ok!({:error, error}), do: raise(error)
end
