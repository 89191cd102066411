defmodule RedixRs.Options.Sentinel do
  # The `:sentinel` start option, validated as Redix does (same keys, defaults and messages).
  @moduledoc false

  alias RedixRs.Redact

  @schema [
    sentinels: nil,
    group: nil,
    role: :primary,
    password: nil,
    timeout: 500,
    ssl: false,
    socket_opts: []
  ]

  @doc """
  Validates the keyword list given as `:sentinel`; returns it with defaults and each sentinel as
  `%{host: binary, port: integer, password: binary | mfa | nil}`. Raises `ArgumentError`.
  """
  def validate!(opts) when is_list(opts) do
    case Keyword.keys(opts) -- Keyword.keys(@schema) do
      [] ->
        :ok

      unknown ->
        raise ArgumentError,
              "unknown options #{inspect(unknown)} in :sentinel, valid options are: " <>
                inspect(Keyword.keys(@schema))
    end

    opts = Keyword.merge(@schema, opts)

    opts =
      opts
      |> Keyword.update!(:sentinels, &sentinels!/1)
      |> Keyword.update!(:group, &group!/1)
      |> Keyword.update!(:role, &role!/1)
      |> Keyword.update!(:timeout, &timeout!/1)
      |> Keyword.update!(:ssl, &boolean!(&1, :ssl))
      |> Keyword.update!(:password, &password!/1)

    # The sentinels' socket and TLS options follow the rules of the connection's own.
    RedixRs.Options.validate!(socket_opts: opts[:socket_opts], ssl: opts[:ssl])
    opts
  end

  def validate!(other) do
    raise ArgumentError,
          "expected :sentinel to be a keyword list, got: #{inspect(Redact.term(other))}"
  end

  defp password!(password) when is_binary(password) or is_nil(password), do: password

  defp password!({m, f, a} = mfa) when is_atom(m) and is_atom(f) and is_list(a), do: mfa

  defp password!(other) do
    raise ArgumentError,
          "expected a sentinel password to be a string or a {module, function, args} tuple, " <>
            "got: #{Redact.describe(other)}"
  end

  defp sentinels!([_ | _] = sentinels), do: Enum.map(sentinels, &sentinel!/1)

  defp sentinels!(other) do
    raise ArgumentError,
          "expected :sentinels in :sentinel to be a non-empty list of URIs or keyword lists, got: " <>
            inspect(Redact.term(other))
  end

  defp sentinel!(uri) when is_binary(uri),
    do: uri |> RedixRs.URI.to_start_options() |> sentinel!()

  defp sentinel!(opts) when is_list(opts) do
    host = opts[:host] || raise ArgumentError, "a host should be specified for each sentinel"
    port = opts[:port] || raise ArgumentError, "a port should be specified for each sentinel"

    unless is_binary(host) and is_integer(port) and port in 1..65_535 do
      raise ArgumentError, "invalid sentinel address: #{inspect(Redact.term(opts))}"
    end

    %{host: host, port: port, password: password!(opts[:password])}
  end

  defp sentinel!(other) do
    raise ArgumentError,
          "expected each sentinel to be a URI or a keyword list, got: " <>
            inspect(Redact.term(other))
  end

  defp group!(group) when is_binary(group) and group != "", do: group

  defp group!(other) do
    raise ArgumentError,
          "expected :group in :sentinel to be a string (required), got: #{inspect(other)}"
  end

  defp role!(role) when role in [:primary, :replica], do: role

  defp role!(other) do
    raise ArgumentError,
          "expected :role in :sentinel to be :primary or :replica, got: #{inspect(other)}"
  end

  defp timeout!(t) when is_integer(t) and t > 0, do: t

  defp timeout!(other) do
    raise ArgumentError,
          "expected :timeout in :sentinel to be a positive integer, got: #{inspect(other)}"
  end

  defp boolean!(b, _key) when is_boolean(b), do: b

  defp boolean!(other, key) do
    raise ArgumentError,
          "expected #{inspect(key)} in :sentinel to be a boolean, got: #{inspect(other)}"
  end
end
