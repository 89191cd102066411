defmodule RedixRs.Cache do
  # Client-side caching, the Elixir side: the `:client_cache` option, the cache resource its
  # connection process creates once and keeps across reconnections, and `command/3` with
  # `cache: true`. A hit is a `:persistent_term` read and one NIF call in the caller's process
  # (`Native.cache_get/2`, which builds the reply's term from the cached frame); a miss is an ordinary call of kind `:cached`, whose
  # waiter fills the cache on the connection's reader, in wire order (see "Client-side caching" in
  # the README for why fills are correct).
  @moduledoc false

  alias RedixRs.{Call, Native}

  @defaults [max_entries: 10_000, max_bytes: 64 * 1024 * 1024, mode: :optin, prefixes: []]
  @keys Keyword.keys(@defaults)
  # The store counts entries in 32 bits.
  @max_entries 4_294_967_294

  @doc "Validates the `:client_cache` option: `{:ok, keyword}` with defaults, or `{:error, expected}`."
  @spec validate(term()) :: {:ok, keyword()} | {:error, String.t()}
  def validate(opts) when is_list(opts) do
    if Keyword.keyword?(opts) do
      opts = Keyword.merge(@defaults, opts)

      case Enum.find(opts, &(not valid?(&1))) do
        nil -> check_mode(opts)
        {key, _} -> {:error, expected(key)}
      end
    else
      {:error, "a keyword list of #{inspect(@keys)}"}
    end
  end

  def validate(_other), do: {:error, "a keyword list of #{inspect(@keys)}"}

  defp valid?({:max_entries, n}), do: is_integer(n) and n in 1..@max_entries
  defp valid?({:max_bytes, n}), do: is_integer(n) and n > 0
  defp valid?({:mode, mode}), do: mode in [:optin, :broadcast]

  defp valid?({:prefixes, prefixes}),
    do: is_list(prefixes) and Enum.all?(prefixes, &(is_binary(&1) and &1 != ""))

  defp valid?({_unknown, _}), do: false

  defp check_mode(opts) do
    if opts[:mode] == :optin and opts[:prefixes] != [] do
      {:error, "prefixes only with mode: :broadcast"}
    else
      {:ok, opts}
    end
  end

  defp expected(:max_entries), do: "max_entries to be an integer between 1 and #{@max_entries}"
  defp expected(:max_bytes), do: "max_bytes to be a positive integer"
  defp expected(:mode), do: "mode to be :optin or :broadcast"
  defp expected(:prefixes), do: "prefixes to be a list of non-empty binaries"
  defp expected(key), do: "a keyword list of #{inspect(@keys)} (got #{inspect(key)})"

  @doc "Creates the cache of a connection process that asked for one (kept under `:cache_resource`)."
  @spec setup(keyword()) :: keyword()
  def setup(opts) do
    case opts[:client_cache] do
      nil -> opts
      cache -> Keyword.put(opts, :cache_resource, Native.cache_new(Map.new(cache)))
    end
  end

  @doc """
  Publishes the cache of the calling connection process under `keys` (its pid, and its name when it
  has one) for hits. In `:persistent_term`: a hit then costs no ETS lookup and no copy. Written once
  per connection process (not per reconnection), erased when it stops (`forget/1`). A leftover entry
  (a killed process's) holds a cache its connection flushed when it closed: it answers only `:miss`.
  """
  @spec publish([term()], keyword()) :: :ok
  def publish(keys, opts) do
    if cache = opts[:cache_resource] do
      Enum.each(keys, &:persistent_term.put({__MODULE__, &1}, cache))
    end

    :ok
  end

  @doc "Withdraws what `publish/2` published under `keys` (when it is still this process's cache)."
  @spec forget([term()], keyword()) :: :ok
  def forget(keys, opts) do
    if cache = opts[:cache_resource] do
      for key <- keys, :persistent_term.get({__MODULE__, key}, nil) == cache do
        :persistent_term.erase({__MODULE__, key})
      end
    end

    :ok
  end

  @doc "Withdraws the cache published under `pid` (its process is gone; see `RedixRs.Handles`)."
  @spec forget_pid(pid()) :: :ok
  def forget_pid(pid) do
    :persistent_term.erase({__MODULE__, pid})
    :ok
  end

  @doc "The connection process's answer to `:cache_stats`."
  @spec stats_of(keyword()) :: {:ok, map()} | :no_cache
  def stats_of(opts) do
    case opts[:cache_resource] do
      nil -> :no_cache
      cache -> {:ok, Native.cache_stats(cache)}
    end
  end

  @doc """
  Every counter of the cache of `conn`: `RedixRs.cache_stats/1`'s, plus `:refused_fills`,
  `:entries` and `:bytes`.
  """
  @spec stats(RedixRs.connection()) :: %{atom() => non_neg_integer()}
  def stats(conn) do
    case GenServer.call(conn, :cache_stats) do
      {:ok, stats} ->
        stats

      :no_cache ->
        raise ArgumentError,
              "cache_stats/1 needs a connection started with the :client_cache option"
    end
  end

  @doc "`RedixRs.command/3` with `cache: true` (`opts` without it)."
  @spec command(RedixRs.connection(), RedixRs.command(), keyword()) ::
          {:ok, RedixRs.redis_value()} | {:error, RedixRs.Error.t() | RedixRs.ConnectionError.t()}
  def command(conn, command, opts) do
    if opts != [], do: Call.options!(opts)

    case :persistent_term.get({__MODULE__, conn}, nil) do
      nil ->
        miss(conn, command, opts)

      cache ->
        case Native.cache_get(cache, command) do
          {:ok, value} ->
            {:ok, value}

          :miss ->
            miss(conn, command, opts)

          # Elements to convert (floats, structs): converted (or refused) as for command/3.
          :normalize ->
            [command] = RedixRs.Command.normalize_pipeline!([command])

            case Native.cache_get(cache, command) do
              {:ok, value} -> {:ok, value}
              _ -> miss(conn, command, opts)
            end
        end
    end
  end

  # Not cached: an ordinary call, whose reply fills the cache as it arrives (when it may). Invalid
  # commands raise there, as for `command/3`.
  defp miss(conn, command, opts) do
    case Call.run(conn, [command], :cached, opts) do
      {:ok, [%RedixRs.Error{} = error]} -> {:error, error}
      {:ok, [value]} -> {:ok, value}
      {:error, %ArgumentError{} = error} -> raise error
      {:error, _} = error -> error
    end
  end
end
