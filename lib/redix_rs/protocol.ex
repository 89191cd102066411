defmodule RedixRs.Protocol do
  @moduledoc ~S"""
  Builds and reads the [Redis protocol](https://redis.io/docs/reference/protocol-spec/) (RESP2) in
  Elixir, with the functions and return shapes of `Redix.Protocol`.

  redix_rs itself encodes commands and parses replies in Rust; this module is for code that works
  with RESP directly (libraries that build commands for a socket of their own, or read a dump of
  replies), so that code written against `Redix.Protocol` keeps working.

  As in Redix, RESP2 is what it parses: simple strings and bulk strings become binaries, integers
  integers, errors `%RedixRs.Error{}`, arrays lists, and null bulk strings and null arrays `nil`.
  Data that is not valid RESP2 (an unknown type byte, such as RESP3's `%`, a bad number or a missing
  `\r\n`) raises `RedixRs.Protocol.ParseError`.

  ## Incomplete data

  Parsing functions return `{:ok, value, rest}` when `data` holds a whole value (`rest` is what
  follows it), and `{:continuation, fun}` when it holds only the beginning of one: call `fun` with
  the bytes that come next (as they are read from a socket, in pieces of any size), and it returns
  the same shapes. What was already read is not parsed again (except for the line of a simple
  string, an error or a length, which is short).

      iex> {:continuation, more} = RedixRs.Protocol.parse("*2\r\n$5\r\nhel")
      iex> {:continuation, more} = more.("lo\r\n:4")
      iex> more.("2\r\nextra")
      {:ok, ["hello", 42], "extra"}
  """

  defmodule ParseError do
    @moduledoc """
    Raised by `RedixRs.Protocol`'s parsing functions when data is not valid RESP2.

    ## Examples

        iex> RedixRs.Protocol.parse("%1\\r\\n")
        ** (RedixRs.Protocol.ParseError) invalid type specifier ("%")
    """
    defexception [:message]

    @typedoc "An error found while parsing RESP."
    @type t() :: %__MODULE__{message: String.t()}
  end

  @typedoc "A RESP2 value, as parsed."
  @type redis_value() :: binary() | integer() | nil | RedixRs.Error.t() | [redis_value()]

  @typedoc "What a parsing function returns: a value and the bytes after it, or a continuation."
  @type on_parse(value) :: {:ok, value, binary()} | {:continuation, (binary() -> on_parse(value))}

  @doc ~S"""
  Encodes a command as a RESP array of bulk strings.

  Each element is a binary or anything `String.Chars` turns into one (atoms, integers, floats,
  charlists), as in Redix. Returns iodata (`IO.iodata_to_binary/1` makes it a binary), ready for
  `:gen_tcp.send/2`. Raises `ArgumentError` when `items` is not a proper list or an element cannot
  be turned into a string.

  ## Examples

      iex> RedixRs.Protocol.pack(["SET", "mykey", 1]) |> IO.iodata_to_binary()
      "*3\r\n$3\r\nSET\r\n$5\r\nmykey\r\n$1\r\n1\r\n"

      iex> RedixRs.Protocol.pack([:incrbyfloat, "n", 1.5]) |> IO.iodata_to_binary()
      "*3\r\n$11\r\nincrbyfloat\r\n$1\r\nn\r\n$3\r\n1.5\r\n"

      iex> RedixRs.Protocol.pack([]) |> IO.iodata_to_binary()
      "*0\r\n"
  """
  @spec pack([String.Chars.t()]) :: iodata()
  def pack(items) when is_list(items) do
    {count, bulks} = bulk_strings(items, 0, [], items)
    [?*, Integer.to_string(count), "\r\n" | bulks]
  end

  def pack(other) do
    raise ArgumentError, "expected a list of elements to pack, got: #{inspect(other)}"
  end

  # Counts and encodes in one pass; `bulks` is built in reverse and turned round at the end.
  defp bulk_strings([item | rest], count, bulks, items) do
    string = element_to_string(item)
    bulk = [?$, Integer.to_string(byte_size(string)), "\r\n", string, "\r\n"]
    bulk_strings(rest, count + 1, [bulk | bulks], items)
  end

  defp bulk_strings([], count, bulks, _items), do: {count, :lists.reverse(bulks)}

  defp bulk_strings(_improper_tail, _count, _bulks, items) do
    raise ArgumentError, "expected a proper list of elements to pack, got: #{inspect(items)}"
  end

  defp element_to_string(binary) when is_binary(binary), do: binary

  defp element_to_string(term) do
    String.Chars.to_string(term)
  rescue
    Protocol.UndefinedError ->
      reraise ArgumentError,
              "expected every element to pack to be a binary or to implement String.Chars, " <>
                "got: #{inspect(term)}",
              __STACKTRACE__
  end

  @doc ~S"""
  Parses one RESP2 value at the start of `data`.

  Returns `{:ok, value, rest}`, or `{:continuation, fun}` if `data` ends before the value does
  (see "Incomplete data" in the module docs). Raises `RedixRs.Protocol.ParseError` on data that is
  not RESP2.

  ## Examples

      iex> RedixRs.Protocol.parse("+OK\r\nrest")
      {:ok, "OK", "rest"}

      iex> RedixRs.Protocol.parse("-ERR unknown command 'NOPE'\r\n")
      {:ok, %RedixRs.Error{message: "ERR unknown command 'NOPE'"}, ""}

      iex> RedixRs.Protocol.parse("*3\r\n:1\r\n$-1\r\n*0\r\n")
      {:ok, [1, nil, []], ""}

      iex> {:continuation, fun} = RedixRs.Protocol.parse("$3\r\nfo")
      iex> fun.("o\r\n")
      {:ok, "foo", ""}

      iex> RedixRs.Protocol.parse(":12x\r\n")
      ** (RedixRs.Protocol.ParseError) expected CRLF, found: "x"
  """
  @spec parse(binary()) :: on_parse(redis_value())
  def parse(data) when is_binary(data), do: next(data, [])

  @doc ~S"""
  Parses `count` RESP2 values, one after the other, at the start of `data`.

  Returns `{:ok, values, rest}` with the values in a list, or `{:continuation, fun}` until `count`
  whole values have been read. Raises `RedixRs.Protocol.ParseError` as `parse/1` does.

  ## Examples

      iex> RedixRs.Protocol.parse_multi("+OK\r\n:2\r\n$1\r\nx\r\n", 3)
      {:ok, ["OK", 2, "x"], ""}

      iex> {:continuation, fun} = RedixRs.Protocol.parse_multi("+OK\r\n", 2)
      iex> fun.("+PONG\r\n+QUEUED\r\n")
      {:ok, ["OK", "PONG"], "+QUEUED\r\n"}

      iex> RedixRs.Protocol.parse_multi("+OK\r\n", 0)
      {:ok, [], "+OK\r\n"}
  """
  @spec parse_multi(binary(), non_neg_integer()) :: on_parse([redis_value()])
  def parse_multi(data, count) when is_binary(data) and is_integer(count) and count >= 0 do
    if count == 0, do: {:ok, [], data}, else: next(data, [{count, []}])
  end

  ## The parser.
  #
  # `stack` holds the lists being filled, innermost first, as `{values_still_to_read, values_read}`
  # (the values read in reverse); `parse_multi/2` starts with one such list. Every function ends in a
  # call to another (tail calls), so nesting depth costs no stack.

  # The next value starts at `data`.
  defp next(<<>>, stack), do: {:continuation, &next(&1, stack)}
  defp next(<<?+, line::binary>> = data, stack), do: line(line, data, stack, :simple)
  defp next(<<?-, line::binary>> = data, stack), do: line(line, data, stack, :error)
  defp next(<<?:, line::binary>> = data, stack), do: line(line, data, stack, :integer)
  defp next(<<?$, line::binary>> = data, stack), do: line(line, data, stack, :bulk)
  defp next(<<?*, line::binary>> = data, stack), do: line(line, data, stack, :array)

  defp next(<<type, _::binary>>, _stack) do
    raise ParseError, message: "invalid type specifier (#{inspect(<<type>>)})"
  end

  # The line after a type byte: a whole one is handled by `kind`; a partial one waits for more (and
  # is parsed again from `data`, its type byte, when more comes).
  defp line(after_type, data, stack, kind) do
    case :binary.match(after_type, "\r\n") do
      {at, 2} ->
        <<line::binary-size(at), "\r\n", rest::binary>> = after_type
        whole_line(kind, line, rest, stack)

      :nomatch ->
        if kind in [:integer, :bulk, :array], do: check_partial_integer(after_type)
        {:continuation, &next(data <> &1, stack)}
    end
  end

  defp whole_line(:simple, line, rest, stack), do: value(line, rest, stack)

  defp whole_line(:error, line, rest, stack),
    do: value(%RedixRs.Error{message: line}, rest, stack)

  defp whole_line(:integer, line, rest, stack), do: value(integer!(line), rest, stack)

  defp whole_line(:bulk, line, rest, stack) do
    case integer!(line) do
      -1 -> value(nil, rest, stack)
      size when size >= 0 -> bulk(rest, size, [], stack)
      size -> raise ParseError, message: "invalid bulk string length: #{size}"
    end
  end

  defp whole_line(:array, line, rest, stack) do
    case integer!(line) do
      -1 -> value(nil, rest, stack)
      0 -> value([], rest, stack)
      count when count > 0 -> next(rest, [{count, []} | stack])
      count -> raise ParseError, message: "invalid array length: #{count}"
    end
  end

  # The body of a bulk string: `missing` more bytes, after `read` (iodata) read so far.
  defp bulk(data, missing, read, stack) when byte_size(data) >= missing do
    <<last::binary-size(missing), rest::binary>> = data
    string = if read == [], do: last, else: IO.iodata_to_binary([read, last])
    crlf(rest, string, stack)
  end

  defp bulk(data, missing, read, stack) do
    {:continuation, &bulk(&1, missing - byte_size(data), [read, data], stack)}
  end

  # The `\r\n` that ends a bulk string.
  defp crlf(<<"\r\n", rest::binary>>, string, stack), do: value(string, rest, stack)
  defp crlf(<<>>, string, stack), do: {:continuation, &crlf(&1, string, stack)}

  defp crlf(<<?\r>>, string, stack),
    do: {:continuation, &crlf(<<?\r, &1::binary>>, string, stack)}

  defp crlf(<<byte, _::binary>>, _string, _stack) do
    raise ParseError, message: "expected CRLF, found: #{inspect(<<byte>>)}"
  end

  # A value was read: it ends the parse, or goes into the innermost list (which may end with it).
  defp value(value, rest, []), do: {:ok, value, rest}

  defp value(value, rest, [{1, read} | stack]),
    do: value(:lists.reverse(read, [value]), rest, stack)

  defp value(value, rest, [{left, read} | stack]),
    do: next(rest, [{left - 1, [value | read]} | stack])

  # An integer line: an optional `-`, then digits.
  defp integer!(line) do
    case check_digits(line) do
      :ok -> String.to_integer(line)
      # A line with no digit: Redix reports the `\r` that ends it.
      :empty -> raise ParseError, message: ~S(expected integer, found: "\r")
    end
  end

  # The beginning of an integer line (its `\r` may have come, not its `\n`): raises at once on a
  # byte that cannot be part of it.
  defp check_partial_integer(partial) do
    size = byte_size(partial)

    case partial do
      <<digits::binary-size(size - 1), ?\r>> when size > 0 -> check_digits(digits)
      _ -> check_digits(partial)
    end
  end

  defp check_digits(<<?-, digits::binary>>), do: check_digits(digits, :first)
  defp check_digits(digits), do: check_digits(digits, :first)

  defp check_digits(<<>>, :first), do: :empty
  defp check_digits(<<>>, :more), do: :ok

  defp check_digits(<<digit, rest::binary>>, _) when digit in ?0..?9,
    do: check_digits(rest, :more)

  defp check_digits(<<byte, _::binary>>, :first) do
    raise ParseError, message: "expected integer, found: #{inspect(<<byte>>)}"
  end

  defp check_digits(<<byte, _::binary>>, :more) do
    raise ParseError, message: "expected CRLF, found: #{inspect(<<byte>>)}"
  end
end
