defmodule RedixRs.URI do
  @moduledoc """
  Parses Redis URIs into start options for `RedixRs.start_link/1`.

  The accepted URIs follow the same rules as `Redix.URI` (Redix 1.6):

    * the scheme is `redis://`, `valkey://` or `rediss://`; `rediss://` adds `ssl: true`
    * the userinfo is either `:PASSWORD` (password only) or `USERNAME:PASSWORD`; both parts
      are URL-decoded, so `%40` stands for `@`
    * the path `/N` (or `/N/anything`) selects database `N`
    * the host and the port become the `:host` and `:port` options

  RedixRs also accepts `unix://` URIs for Unix domain sockets, such as
  `unix:///var/run/redis.sock`. They give `host: {:local, path}` and `port: 0` and may
  select a database with the query `?database=N` (or its short form `?db=N`). They carry
  no userinfo (pass `:password`/`:username` as separate options), no host and no port.

  Only the options present in the URI are returned, in the same order as Redix:
  `:ssl`, `:database`, `:password`, `:username`, `:port`, `:host`. Options given next to a
  URI usually take precedence, which `Keyword.merge/2` gives:

      Keyword.merge(RedixRs.URI.to_start_options(uri), opts)

  Invalid URIs raise `ArgumentError`.
  """

  @schemes ["redis", "valkey", "rediss"]

  @doc """
  Returns the start options described by the Redis URI `uri`.

  Raises `ArgumentError` if the scheme is not one of `redis://`, `valkey://`, `rediss://`
  and `unix://`, if the userinfo has no `:` separating the username from the password, or
  if the database is not an integer. See the module documentation for the rules.

  ## Examples

      iex> RedixRs.URI.to_start_options("redis://:secret@example.com:6380/2")
      [database: 2, password: "secret", port: 6380, host: "example.com"]

      iex> RedixRs.URI.to_start_options("redis://localhost")
      [host: "localhost"]

      iex> RedixRs.URI.to_start_options("rediss://alice:p%40ss@redis.example.com:6379")
      [ssl: true, password: "p@ss", username: "alice", port: 6379, host: "redis.example.com"]

      iex> RedixRs.URI.to_start_options("valkey://localhost:6379/0")
      [database: 0, port: 6379, host: "localhost"]

      iex> RedixRs.URI.to_start_options("unix:///var/run/redis.sock")
      [port: 0, host: {:local, "/var/run/redis.sock"}]

      iex> RedixRs.URI.to_start_options("unix:///var/run/redis.sock?db=3")
      [database: 3, port: 0, host: {:local, "/var/run/redis.sock"}]

      iex> RedixRs.URI.to_start_options("http://example.com")
      ** (ArgumentError) expected scheme to be redis://, valkey://, or rediss://, got: http://

      iex> RedixRs.URI.to_start_options("redis://localhost/foo")
      ** (ArgumentError) expected database to be an integer, got: "/foo"

  """
  @spec to_start_options(binary()) :: keyword()
  def to_start_options(uri) when is_binary(uri) do
    case URI.parse(uri) do
      %URI{scheme: "unix"} = parsed -> unix_options(parsed)
      %URI{scheme: scheme} = parsed when scheme in @schemes -> tcp_options(parsed)
      %URI{scheme: scheme} -> raise ArgumentError, bad_scheme_message(scheme)
    end
  end

  # Redix's sentence (unix:// URIs are redix_rs's own addition, documented above).
  defp bad_scheme_message(scheme) do
    "expected scheme to be redis://, valkey://, or rediss://, got: #{scheme}://"
  end

  ## redis://, valkey://, rediss://

  defp tcp_options(%URI{} = uri) do
    {username, password} = username_and_password(uri.userinfo)
    host = if uri.host in [nil, ""], do: nil, else: uri.host

    # Keyword.put/3 prepends, so the options come out in the reverse order of the puts,
    # which is Redix's order.
    []
    |> put_present(:host, host)
    |> put_present(:port, uri.port)
    |> put_present(:username, username)
    |> put_present(:password, password)
    |> put_present(:database, database_from_path(uri.path))
    |> put_present(:ssl, if(uri.scheme == "rediss", do: true))
  end

  defp username_and_password(nil), do: {nil, nil}

  defp username_and_password(userinfo) do
    case String.split(userinfo, ":", parts: 2) do
      ["", password] ->
        {nil, URI.decode(password)}

      [username, password] ->
        {URI.decode(username), URI.decode(password)}

      # The userinfo is not shown: with no colon, it is most likely a password.
      [_no_colon] ->
        raise ArgumentError,
              "expected the userinfo of the Redis URI to be given as redis://:PASSWORD@HOST " <>
                "or redis://USERNAME:PASSWORD@HOST, got a userinfo with no \":\" " <>
                "(not shown: it may be a password; a username needs a \":\" and a password after it)"
    end
  end

  defp database_from_path(path) when path in [nil, "", "/"], do: nil

  defp database_from_path("/" <> rest = path) do
    case Integer.parse(rest) do
      {database, ""} -> database
      {database, "/" <> _anything} -> database
      _other -> raise ArgumentError, bad_path_message(path)
    end
  end

  defp database_from_path(path), do: raise(ArgumentError, bad_path_message(path))

  # A path with an `@` is most likely the end of a password with an unescaped `/` (the userinfo
  # then ends at that `/`): what precedes the last `@` is not shown.
  defp bad_path_message(path) do
    case :binary.matches(path, "@") do
      [] ->
        bad_database_message(path)

      matches ->
        {at, 1} = List.last(matches)
        <<_secret::binary-size(at), rest::binary>> = path

        bad_database_message("/" <> RedixRs.Redact.marker() <> rest) <>
          " (the path has an \"@\": a \"/\" in a password must be percent-encoded as %2F)"
    end
  end

  ## unix://

  defp unix_options(%URI{} = uri) do
    if uri.userinfo != nil do
      raise ArgumentError,
            "unix:// URIs do not accept a username or a password, got a userinfo (not shown: " <>
              "it may hold a password; pass :username and :password as separate options)"
    end

    if uri.host not in [nil, ""] or uri.port != nil do
      raise ArgumentError,
            "expected a unix:// URI to have no host and no port, as in unix:///path/to/redis.sock, " <>
              "got: #{inspect(URI.to_string(uri))}"
    end

    path = socket_path(uri.path)

    []
    |> Keyword.put(:host, {:local, path})
    |> Keyword.put(:port, 0)
    |> put_present(:database, database_from_query(uri.query))
  end

  defp socket_path(path) when path in [nil, "", "/"] do
    raise ArgumentError,
          "expected a unix:// URI to give the absolute path of a socket, as in " <>
            "unix:///path/to/redis.sock, got: #{inspect(path)}"
  end

  defp socket_path(path), do: URI.decode(path)

  defp database_from_query(nil), do: nil
  defp database_from_query(""), do: nil

  defp database_from_query(query) do
    params =
      try do
        URI.query_decoder(query) |> Enum.to_list()
      rescue
        ArgumentError ->
          reraise ArgumentError,
                  "invalid query in unix:// URI (not shown: it may hold a secret)",
                  __STACKTRACE__
      end

    Enum.reduce(params, nil, fn
      {key, value}, _database when key in ["database", "db"] ->
        case Integer.parse(value) do
          {database, ""} -> database
          _other -> raise ArgumentError, bad_database_message(value)
        end

      {key, _value}, _database ->
        raise ArgumentError,
              "unknown query parameter #{inspect(key)} in unix:// URI, " <>
                "expected only \"database\" or \"db\""
    end)
  end

  defp bad_database_message(value) do
    "expected database to be an integer, got: #{inspect(value)}"
  end

  defp put_present(opts, _key, nil), do: opts
  defp put_present(opts, key, value), do: Keyword.put(opts, key, value)
end
