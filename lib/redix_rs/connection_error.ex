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
    * a POSIX reason such as `:econnrefused`, or `:tcp_closed` (`:ssl_closed` over TLS), when
      connecting or the socket fails
    * `{:tls_alert, {alert, message}}` - TLS failed, with the alert names of Erlang's `:ssl`
      (`message` is a string): `:unknown_ca` (the server's certificate is not signed by a trusted
      CA), `:certificate_expired`, `:handshake_failure` (among others, a certificate that does not
      match the host name or `server_name_indication`), `:certificate_required` (the server
      requires a client certificate), `:bad_certificate`, ...
    * `{:tls_config, message}` - the TLS settings cannot be used, e.g. a `:certfile` that cannot be
      read or holds no certificate

  ## Examples

      iex> Exception.message(%RedixRs.ConnectionError{reason: :closed})
      "the connection to Redis is closed"
      iex> Exception.message(%RedixRs.ConnectionError{reason: :econnrefused})
      "connection refused"
      iex> Exception.message(%RedixRs.ConnectionError{reason: {:tls_alert, {:unknown_ca, "not trusted"}}})
      "TLS alert unknown_ca: not trusted"
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

  def format_reason(:pubsub_backlog),
    do: "the pub/sub connection had more than 1,000,000 messages waiting for delivery"

  def format_reason(:write_queue_full), do: "the write queue of the connection is full"

  def format_reason(reason) when is_atom(reason) do
    case :inet.format_error(reason) do
      ~c"unknown POSIX error" ++ _ -> "unknown POSIX error: #{reason}"
      message -> List.to_string(message)
    end
  end

  def format_reason({:protocol_error, message}), do: "protocol error: #{message}"

  def format_reason({:tls_alert, {alert, message}}) when is_atom(alert),
    do: "TLS alert #{alert}: #{message}"

  def format_reason({:tls_config, message}), do: "TLS configuration error: #{message}"
  def format_reason(reason), do: inspect(reason)
end
