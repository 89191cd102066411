defmodule RedixRs.ConnectionError do
  @moduledoc """
  An error in the connection to Redis, rather than an error reply.

  `reason` is what users match on. The reasons Redix also has, with the same meaning:

    * `:closed` - the connection is not established (it is connecting after a failure, or waiting to
      reconnect); the command was not sent
    * `:disconnected` - the connection was lost while the command was in flight: it may or may not have
      been executed
    * `:timeout` - no reply within the call's `:timeout` (or, when connecting, within the connection's
      `:timeout`)
    * `:health_check_timeout` - a health check (`:health_check_interval`) found the server
      unresponsive, and the connection was closed to be re-established
    * `:tcp_closed` (`:ssl_closed` over TLS) - the server closed the connection
    * a POSIX reason such as `:econnrefused`, `:econnreset` or `:nxdomain`, when connecting or when
      the socket fails
    * `:no_viable_sentinel_connection`, `:sentinel_no_primary_found`,
      `:sentinel_no_replicas_found_for_given_primary`, `{:wrong_role, role}` - through Sentinel, no
      sentinel could be used, none knew the group's primary (or a replica), or the server a sentinel
      named does not have the role asked for (`role` is what its `ROLE` said)
    * `:client_id_not_stored` - `RedixRs.PubSub.get_client_id/1` without `fetch_client_id_on_connect`
    * `%RedixRs.Error{}` - with `sync_connect: true`, the server refused the handshake (`AUTH`,
      `SELECT`, `READONLY`, ...)

  And the reasons only redix_rs has:

    * `:write_queue_full` - more than `:write_queue_limit` bytes are waiting to be written
    * `:pubsub_backlog` - a `RedixRs.PubSub` connection had too many messages waiting to be
      delivered, and was closed (then re-established) rather than grow memory without bound
    * `:sentinel_failover` - through Sentinel, a sentinel announced (`+switch-master`) that the
      group's primary moved, so the connection left its server and reconnected at once (the
      reason of the `:disconnection` telemetry event; callers in flight get `:disconnected`). A
      connection leaves its server with `{:wrong_role, role}` when the server answered `-READONLY`
      and `ROLE` then said it is no longer a primary
    * `{:tls_alert, {alert, message}}` - TLS failed, with the alert names of Erlang's `:ssl`
      (`message` is a string): `:unknown_ca` (the server's certificate is not signed by a trusted
      CA), `:certificate_expired`, `:handshake_failure` (among others, a certificate that does not
      match the host name or `server_name_indication`), `:certificate_required` (the server
      requires a client certificate), `:bad_certificate`, ...
    * `{:tls_config, message}` - the TLS settings cannot be used, e.g. a `:certfile` that cannot be
      read or holds no certificate
    * `{:protocol_error, message}` - the server sent something that is not valid RESP; the
      connection was closed
    * `{:protocol_error, limit}` - this caller's reply went past a limit of the `:reply_limits`
      option (`:reply_too_large`, `:bulk_too_long`, `:aggregate_too_long`, `:too_deep`); the
      connection was closed and is re-established, and other callers in flight got `:disconnected`
    * `:slot_moved` - in a `:disconnected` message of a `RedixRs.PubSub` on a Redis Cluster: the
      hash slot of a shard channel moved to another node (it is subscribed again there)
    * `:unexpected_reply` - the server sent a reply no command was waiting for; the connection was
      closed
    * `:partial_submission` - a submission failed after part of it was written, so the replies could
      no longer be matched to their commands; the connection was closed
    * `{:io_error, message}` - a socket error with no POSIX name
    * `{:panic, message}` - a bug in redix_rs's native code ended the connection (it reconnects)

  `Exception.message/1` gives Redix's text for the reasons Redix has, computed as Redix 1.6 computes
  it: its own sentences for a few reasons, `:inet.format_error/1` for the other atoms (so it follows
  the OTP release: up to OTP 25, an atom that is not a POSIX error reads
  `"unknown POSIX error: timeout"`), `inspect/1` for the other terms.

  ## Examples

      iex> Exception.message(%RedixRs.ConnectionError{reason: :closed})
      "the connection to Redis is closed"
      iex> Exception.message(%RedixRs.ConnectionError{reason: :econnrefused})
      "connection refused"
      iex> Exception.message(%RedixRs.ConnectionError{reason: {:wrong_role, "slave"}})
      "wrong role: slave"
      iex> Exception.message(%RedixRs.ConnectionError{reason: {:tls_alert, {:unknown_ca, "not trusted"}}})
      "TLS alert unknown_ca: not trusted"
  """

  defexception [:reason]

  @typedoc "Why a connection failed or a call could not be answered (see the module docs)."
  @type reason() ::
          :closed
          | :disconnected
          | :timeout
          | :health_check_timeout
          | :tcp_closed
          | :ssl_closed
          | :inet.posix()
          | :nxdomain
          | :no_viable_sentinel_connection
          | :sentinel_no_primary_found
          | :sentinel_no_replicas_found_for_given_primary
          | {:wrong_role, String.t()}
          | :client_id_not_stored
          | RedixRs.Error.t()
          | :write_queue_full
          | :pubsub_backlog
          | :slot_moved
          | :sentinel_failover
          | {:tls_alert, {atom(), String.t()}}
          | {:tls_config, String.t()}
          | {:protocol_error, String.t()}
          | {:protocol_error, :reply_too_large | :bulk_too_long | :aggregate_too_long | :too_deep}
          | :unexpected_reply
          | :partial_submission
          | {:io_error, String.t()}
          | {:panic, String.t()}

  @typedoc "A connection error: `reason` says what happened (see `t:reason/0`)."
  @type t() :: %__MODULE__{reason: reason()}

  @impl true
  def message(%__MODULE__{reason: reason}), do: format_reason(reason)

  @doc false
  # Redix's own sentences (Redix 1.6).
  def format_reason(:tcp_closed), do: "TCP connection closed"
  def format_reason(:ssl_closed), do: "SSL connection closed"
  def format_reason(:closed), do: "the connection to Redis is closed"

  def format_reason(:no_replica_connection) do
    "no replica connection available for the slot (was the cluster started with " <>
      "read_from_replicas: true?)"
  end

  def format_reason({:wrong_role, role}), do: "wrong role: #{role}"

  def format_reason(:health_check_timeout),
    do: "a command went unanswered for longer than the configured :health_check_interval"

  # Reasons Redix does not have: sentences of our own.
  def format_reason(:too_many_redirections),
    do:
      "too many cluster redirections (MOVED/ASK) for one command: the cluster keeps moving its slot"

  def format_reason(:write_queue_full), do: "the write queue of the connection is full"

  def format_reason(:pubsub_backlog),
    do: "too many pub/sub messages were waiting to be delivered to subscribers"

  def format_reason(:slot_moved),
    do: "the shard channel's hash slot moved to another node of the Redis Cluster"

  def format_reason(:sentinel_failover),
    do: "Sentinel announced a new primary: the connection moved to it"

  def format_reason(:unexpected_reply),
    do: "the server sent a reply that no command was waiting for"

  def format_reason(:partial_submission),
    do: "a submission failed after part of it was written, so replies could no longer be matched"

  def format_reason({:tls_alert, {alert, message}}) when is_atom(alert),
    do: "TLS alert #{alert}: #{message}"

  def format_reason({:tls_config, message}), do: "TLS configuration error: #{message}"

  def format_reason({:protocol_error, limit})
      when limit in [:reply_too_large, :bulk_too_long, :aggregate_too_long, :too_deep] do
    key =
      case limit do
        :reply_too_large -> :max_reply_bytes
        :bulk_too_long -> :max_bulk_bytes
        :aggregate_too_long -> :max_elements
        :too_deep -> :max_depth
      end

    "the reply went past the #{inspect(key)} limit of the :reply_limits option"
  end

  def format_reason({:protocol_error, message}), do: "protocol error: #{message}"
  def format_reason({:io_error, message}), do: "I/O error: #{message}"
  def format_reason({:panic, message}), do: "internal error in redix_rs's native code: #{message}"

  # Any other atom, as Redix formats it: `:inet.format_error/1`, whose text for atoms that are not
  # POSIX errors is a bare "unknown POSIX error" up to OTP 25 (Redix then adds the atom) and names
  # the atom itself from OTP 26.
  def format_reason(reason) when is_atom(reason) do
    case :inet.format_error(reason) do
      ~c"unknown POSIX error" -> "unknown POSIX error: #{reason}"
      message -> List.to_string(message)
    end
  end

  def format_reason(reason), do: inspect(reason)
end
