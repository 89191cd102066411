defmodule RedixRs.ConnectionError do
  @moduledoc """
  An error in the connection to Redis, rather than an error reply.

  `reason` is what users match on:

    * `:closed` - the connection is not established (it is connecting after a failure, or waiting to
      reconnect); the command was not sent
    * `:disconnected` - the connection was lost while the command was in flight: it may or may not have
      been executed
    * `:timeout` - no reply within the call's `:timeout`
    * `:write_queue_full` - more than `:write_queue_limit` bytes are waiting to be written
    * a POSIX reason such as `:econnrefused`, or `:tcp_closed`, when connecting or the socket fails

  ## Examples

      iex> Exception.message(%RedixRs.ConnectionError{reason: :closed})
      "the connection to Redis is closed"
      iex> Exception.message(%RedixRs.ConnectionError{reason: :econnrefused})
      "connection refused"
  """

  defexception [:reason]

  @type t() :: %__MODULE__{reason: term()}

  @impl true
  def message(%__MODULE__{reason: reason}), do: format_reason(reason)

  @doc false
  def format_reason(:tcp_closed), do: "TCP connection closed"
  def format_reason(:ssl_closed), do: "SSL connection closed"
  def format_reason(:closed), do: "the connection to Redis is closed"
  def format_reason(:disconnected), do: "the connection to Redis was lost during the call"
  def format_reason(:timeout), do: "timeout"
  def format_reason(:write_queue_full), do: "the write queue of the connection is full"

  def format_reason(reason) when is_atom(reason) do
    case :inet.format_error(reason) do
      ~c"unknown POSIX error" ++ _ -> "unknown POSIX error: #{reason}"
      message -> List.to_string(message)
    end
  end

  def format_reason({:protocol_error, message}), do: "protocol error: #{message}"
  def format_reason(reason), do: inspect(reason)
end
