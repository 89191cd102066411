defmodule RedixRs.ProtocolTest do
  # RedixRs.Protocol: its doctests, random values encoded then parsed whole and split at every byte
  # boundary (and fed one byte at a time), Redix's error texts, and commands packed by it sent to a
  # real redis-server over a plain socket, whose replies it parses.
  use ExUnit.Case, async: true

  import Bitwise

  alias RedixRs.Protocol
  alias RedixRs.Protocol.ParseError
  alias RedixRs.Test.Servers

  doctest RedixRs.Protocol
  doctest RedixRs.Protocol.ParseError

  @rounds 300

  ## Random RESP2 values, and an encoder written here independently of the module under test.

  # A random value of the types the parser returns, nested at most `depth` levels, with bulk
  # strings of at most `max` bytes.
  defp random_value(depth, max \\ 3000) do
    case :rand.uniform(if depth > 0, do: 9, else: 7) do
      1 -> random_string(min(20, max))
      2 -> random_string(max)
      3 -> random_integer()
      4 -> nil
      5 -> %RedixRs.Error{message: random_line()}
      6 -> {:simple, random_line()}
      7 -> ""
      _ -> for _ <- 1..(:rand.uniform(6) - 1), do: random_value(depth - 1, max)
    end
  end

  defp random_string(max), do: :crypto.strong_rand_bytes(:rand.uniform(max))

  defp random_integer do
    case :rand.uniform(4) do
      1 -> 0
      2 -> :rand.uniform(1000) - 500
      3 -> -:rand.uniform(1 <<< 62)
      4 -> :rand.uniform(1 <<< 62)
    end
  end

  @line_bytes Enum.to_list(0..255) -- [?\r, ?\n]

  # A line for a simple string or an error: any bytes but CR and LF.
  defp random_line do
    for _ <- 1..:rand.uniform(30), into: "", do: <<Enum.random(@line_bytes)>>
  end

  # The bytes of `value`: simple strings are `{:simple, line}` here, parsed back as binaries.
  defp encode({:simple, line}), do: ["+", line, "\r\n"]
  defp encode(%RedixRs.Error{message: message}), do: ["-", message, "\r\n"]
  defp encode(nil), do: "$-1\r\n"
  defp encode(int) when is_integer(int), do: [":", Integer.to_string(int), "\r\n"]

  defp encode(bin) when is_binary(bin),
    do: ["$", Integer.to_string(byte_size(bin)), "\r\n", bin, "\r\n"]

  defp encode(list) when is_list(list),
    do: ["*", Integer.to_string(length(list)), "\r\n", Enum.map(list, &encode/1)]

  # What parsing `value`'s encoding gives.
  defp parsed({:simple, line}), do: line
  defp parsed(list) when is_list(list), do: Enum.map(list, &parsed/1)
  defp parsed(other), do: other

  # Feeds `chunks` to `parse` one after the other: every chunk but the last must leave a
  # continuation.
  defp feed(parse, [last]), do: parse.(last)

  defp feed(parse, [chunk | rest]) do
    assert {:continuation, more} = parse.(chunk)
    feed(more, rest)
  end

  describe "pack/1" do
    test "random commands, packed, parse back to their strings" do
      for _ <- 1..@rounds do
        command =
          for _ <- 1..:rand.uniform(8) do
            Enum.random([random_string(50), random_integer(), :some_atom, 1.5, ~c"chars"])
          end

        packed = command |> Protocol.pack() |> IO.iodata_to_binary()
        assert Protocol.parse(packed <> "next") == {:ok, Enum.map(command, &to_string/1), "next"}
        # The same bytes as the encoder here makes for bulk strings.
        assert packed == IO.iodata_to_binary(encode(Enum.map(command, &to_string/1)))
      end
    end

    test "bad input raises ArgumentError" do
      assert_raise ArgumentError, ~r/expected a list of elements to pack, got: "GET"/, fn ->
        Protocol.pack("GET")
      end

      assert_raise ArgumentError, ~r/proper list/, fn -> Protocol.pack(["GET" | "k"]) end
      assert_raise ArgumentError, ~r/String.Chars, got: #PID/, fn -> Protocol.pack([self()]) end

      assert_raise ArgumentError, ~r/String.Chars, got: %\{\}/, fn ->
        Protocol.pack(["GET", %{}])
      end
    end
  end

  describe "parse/1 and parse_multi/2" do
    test "random values parse whole, with what follows them left over" do
      for _ <- 1..@rounds do
        value = random_value(3)
        bytes = IO.iodata_to_binary(encode(value))
        assert Protocol.parse(bytes) == {:ok, parsed(value), ""}
        assert Protocol.parse(bytes <> "+tail\r\n") == {:ok, parsed(value), "+tail\r\n"}
      end
    end

    test "split at every byte boundary, the continuation gives the same result" do
      for _ <- 1..@rounds do
        value = random_value(2, 40)
        bytes = IO.iodata_to_binary(encode(value)) <> "rest"
        expected = {:ok, parsed(value), "rest"}
        # Cutting inside the value leaves a continuation; at or after its end, the value is there.
        value_size = byte_size(bytes) - 4

        for at <- 0..(byte_size(bytes) - 1) do
          <<first::binary-size(at), second::binary>> = bytes

          if at < value_size do
            assert {:continuation, more} = Protocol.parse(first)
            assert more.(second) == expected
          else
            assert Protocol.parse(first) ==
                     {:ok, parsed(value), binary_part(first, value_size, at - value_size)}
          end
        end
      end
    end

    test "one byte at a time, and in random chunks" do
      for _ <- 1..@rounds do
        value = random_value(3)
        bytes = IO.iodata_to_binary(encode(value))

        assert feed(&Protocol.parse/1, for(<<b <- bytes>>, do: <<b>>)) == {:ok, parsed(value), ""}
        assert feed(&Protocol.parse/1, random_chunks(bytes)) == {:ok, parsed(value), ""}
      end
    end

    test "a continuation may be given no bytes, and more than one value's worth" do
      {:continuation, more} = Protocol.parse("*2\r\n$3\r\nab")
      assert {:continuation, more} = more.("")
      assert more.("c\r\n:7\r\n+next\r\n") == {:ok, ["abc", 7], "+next\r\n"}
    end

    test "parse_multi/2 reads several random values, in chunks" do
      for _ <- 1..@rounds do
        values = for _ <- 1..:rand.uniform(5), do: random_value(2)
        bytes = IO.iodata_to_binary(Enum.map(values, &encode/1))
        expected = {:ok, Enum.map(values, &parsed/1), ""}

        assert Protocol.parse_multi(bytes, length(values)) == expected
        assert feed(&Protocol.parse_multi(&1, length(values)), random_chunks(bytes)) == expected
      end
    end

    test "large values come out whole from many small pieces" do
      big = :crypto.strong_rand_bytes(1_000_000)
      bytes = IO.iodata_to_binary(encode([big, big]))
      chunks = for <<chunk::binary-size(1000) <- bytes>>, do: chunk
      tail = binary_part(bytes, length(chunks) * 1000, rem(byte_size(bytes), 1000))
      assert feed(&Protocol.parse/1, chunks ++ [tail]) == {:ok, [big, big], ""}
    end

    test "deep nesting" do
      deep = Enum.reduce(1..10_000, "leaf", fn _, acc -> [acc] end)
      assert Protocol.parse(IO.iodata_to_binary(encode(deep))) == {:ok, deep, ""}
    end
  end

  describe "errors, in Redix's words" do
    test "an unknown type byte (RESP3 types included)" do
      for type <- ~w(% ~ _ # , = > ! | x) do
        message = "invalid type specifier (#{inspect(type)})"
        assert_raise ParseError, message, fn -> Protocol.parse(type <> "1\r\n") end
      end

      # Also inside an array, and when it arrives through a continuation.
      assert_raise ParseError, ~s/invalid type specifier ("%")/, fn ->
        Protocol.parse("*2\r\n:1\r\n%0\r\n")
      end

      {:continuation, more} = Protocol.parse("*2\r\n:1\r\n")
      assert_raise ParseError, ~s/invalid type specifier ("%")/, fn -> more.("%0\r\n") end
    end

    test "bad integers and lengths, as soon as the offending byte is seen" do
      assert_raise ParseError, ~s/expected integer, found: "x"/, fn -> Protocol.parse(":x") end

      assert_raise ParseError, ~s/expected integer, found: "x"/, fn ->
        Protocol.parse("$x1\r\n")
      end

      assert_raise ParseError, ~s/expected integer, found: "x"/, fn -> Protocol.parse("*-x") end
      assert_raise ParseError, ~s/expected CRLF, found: "x"/, fn -> Protocol.parse(":12x") end
      assert_raise ParseError, ~s/expected CRLF, found: "\\r"/, fn -> Protocol.parse(":12\rx") end

      assert_raise ParseError, ~s/expected integer, found: "\\r"/, fn ->
        Protocol.parse(":\r\n")
      end

      assert_raise ParseError, ~s/expected integer, found: "\\r"/, fn ->
        Protocol.parse(":-\r\n")
      end

      assert_raise ParseError, ~r/invalid bulk string length: -2/, fn ->
        Protocol.parse("$-2\r\n")
      end

      assert_raise ParseError, ~r/invalid array length: -5/, fn -> Protocol.parse("*-5\r\n") end

      # Still waiting: what came so far can be the start of an integer.
      assert {:continuation, _} = Protocol.parse(":-12\r")
    end

    test "a bulk string not followed by CRLF" do
      assert_raise ParseError, ~s/expected CRLF, found: "x"/, fn ->
        Protocol.parse("$3\r\nabcx")
      end

      {:continuation, more} = Protocol.parse("$3\r\nabc\r")
      assert_raise ParseError, ~s/expected CRLF, found: "\\r"/, fn -> more.("x") end
    end
  end

  describe "against a real redis-server" do
    test "commands packed here, replies parsed here, over a plain socket" do
      {:ok, socket} =
        :gen_tcp.connect(~c"127.0.0.1", Servers.port(), [:binary, active: false], 5_000)

      key = "protocol:#{System.unique_integer([:positive])}"
      big = :crypto.strong_rand_bytes(300_000)

      commands = [
        ["PING"],
        ["SET", key, big],
        ["GET", key],
        ["DEL", key <> ":list"],
        ["RPUSH", key <> ":list", 1, "two", :three],
        ["LRANGE", key <> ":list", 0, -1],
        ["GET", key <> ":missing"],
        ["INCR", key],
        ["NOSUCHCOMMAND"],
        ["MULTI"],
        ["INCR", key <> ":n"],
        ["EXEC"]
      ]

      :ok = :gen_tcp.send(socket, Enum.map(commands, &Protocol.pack/1))

      assert {:ok, replies, ""} = receive_multi(socket, length(commands))

      assert [
               "PONG",
               "OK",
               ^big,
               _deleted,
               3,
               ["1", "two", "three"],
               nil,
               %RedixRs.Error{message: "ERR value is not an integer or out of range"},
               %RedixRs.Error{message: "ERR unknown command 'NOSUCHCOMMAND'" <> _},
               "OK",
               "QUEUED",
               [1]
             ] = replies

      :gen_tcp.close(socket)
    end
  end

  # Reads from `socket` until `count` replies are parsed, in the pieces the socket gives.
  defp receive_multi(socket, count) do
    {:ok, data} = :gen_tcp.recv(socket, 0, 5_000)
    continue(Protocol.parse_multi(data, count), socket)
  end

  defp continue({:continuation, more}, socket) do
    {:ok, data} = :gen_tcp.recv(socket, 0, 5_000)
    continue(more.(data), socket)
  end

  defp continue(done, _socket), do: done

  defp random_chunks(<<>>), do: []

  defp random_chunks(bytes) do
    size = min(:rand.uniform(50), byte_size(bytes))
    <<chunk::binary-size(size), rest::binary>> = bytes
    if rest == "", do: [chunk], else: [chunk | random_chunks(rest)]
  end
end
