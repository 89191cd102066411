defmodule RedixRs.Redact do
  # Keeps passwords out of what people read: crash reports and `:sys.get_status/1` of the library's
  # processes (through their `format_status` callbacks), `inspect/1` of their state structs, the
  # messages of `ArgumentError`s about options and URIs, and the commands in telemetry metadata.
  #
  # Everything here builds a copy for display; no process state is ever changed. A password given as
  # `{module, function, args}` is shown as it is: the MFA holds no secret, only the way to get one.
  @moduledoc false

  import Bitwise, only: [|||: 2]

  @marker "**redacted**"

  # `scheme://` followed by a userinfo (up to the last `@` before a space or a quote).
  @uri_userinfo ~r{([A-Za-z][A-Za-z0-9+.\-]*://)([^\s"'<>]*)@}

  @doc "What a secret is replaced with."
  @spec marker() :: String.t()
  def marker, do: @marker

  ## Processes

  @doc """
  For `format_status/1` (OTP 25+), called by crash reports and `:sys.get_status/1`: every part of
  the status (state, crash reason, last message, debug log) with its passwords redacted. The stack
  trace of a crash is not part of it (OTP adds it to the report as it is): see `scrub/1` and the
  `Inspect` implementations of the state structs.
  """
  @spec status(map()) :: map()
  def status(status) when is_map(status), do: :maps.map(fn _key, value -> term(value) end, status)

  @doc "For `format_status/2` (the callback OTP calls when `format_status/1` does not exist)."
  @spec status(:normal | :terminate, [term()]) :: term()
  def status(:terminate, [_pdict, state]), do: term(state)
  def status(_normal, [_pdict, state]), do: [data: [{~c"State", term(state)}]]

  @doc "For `Inspect` implementations of structs that hold options: the struct, redacted."
  @spec inspect_struct(struct(), Inspect.Opts.t()) :: Inspect.Algebra.t()
  def inspect_struct(struct, opts), do: Inspect.Any.inspect(term(struct), opts)

  @doc """
  Runs `fun` and returns its result; what it raises, throws or exits with is raised again with
  its reason and stack trace redacted. For the code of the library's processes that gets their
  options as arguments: the top entry of a stack trace can hold the arguments of the call that
  failed (a `FunctionClauseError`, a NIF's `badarg`), and a crash report prints the stack trace
  as it is, without going through `format_status`.
  """
  @spec scrub((() -> result)) :: result when result: term()
  def scrub(fun) do
    fun.()
  catch
    kind, reason -> :erlang.raise(kind, term(reason), term(__STACKTRACE__))
  end

  ## Any term

  @doc """
  A copy of `term` with every secret it holds replaced by the marker: values of `:password` keys
  (in keyword lists, maps and structs; `nil` and MFAs are kept), the passwords of the native
  sentinel tuples `{host, port, password}`, the password in the userinfo of a URI (in a binary or a
  `%URI{}`) and the arguments of `AUTH` and `HELLO ... AUTH` commands.
  """
  @spec term(term()) :: term()
  def term({:password, value}), do: {:password, secret(value)}
  def term({:sentinels, sentinels}), do: {:sentinels, sentinels(sentinels)}

  def term(%URI{} = uri) do
    %URI{
      uri
      | userinfo: uri.userinfo && userinfo(uri.userinfo),
        authority: uri.authority && authority(uri.authority)
    }
  end

  def term(map) when is_map(map), do: :maps.map(&map_value/2, map)

  def term([name | _] = list) do
    if secret_command?(name), do: command(list), else: list(list)
  end

  def term(tuple) when is_tuple(tuple), do: tuple |> Tuple.to_list() |> list() |> List.to_tuple()
  def term(binary) when is_binary(binary), do: uri(binary)
  def term(other), do: other

  defp map_value(:password, value), do: secret(value)
  defp map_value(:sentinels, value), do: sentinels(value)
  defp map_value(_key, value), do: term(value)

  # Element by element, improper lists included.
  defp list([head | tail]), do: [term(head) | list(tail)]
  defp list([]), do: []
  defp list(tail), do: term(tail)

  defp secret(nil), do: nil
  defp secret({m, f, a} = mfa) when is_atom(m) and is_atom(f) and is_list(a), do: mfa
  defp secret(_secret), do: @marker

  # The native side's `[{host, port, password}]` for sentinels; elsewhere, sentinels are keyword
  # lists, maps or URIs, which the general rules cover.
  defp sentinels([{host, port, password} | rest]) when is_integer(port),
    do: [{term(host), port, secret(password)} | sentinels(rest)]

  defp sentinels([other | rest]), do: [term(other) | sentinels(rest)]
  defp sentinels(other), do: term(other)

  ## URIs

  @doc """
  `text` with the password of every URI in it replaced by the marker (`redis://user:PW@host`
  becomes `redis://user:**redacted**@host`). A userinfo with no `:` is replaced whole, since
  `redis://PASSWORD@host` is a common mistake.
  """
  @spec uri(binary()) :: binary()
  def uri(text) when is_binary(text) do
    if :binary.match(text, "://") != :nomatch and :binary.match(text, "@") != :nomatch do
      Regex.replace(@uri_userinfo, text, fn _match, scheme, userinfo ->
        scheme <> userinfo(userinfo) <> "@"
      end)
    else
      text
    end
  end

  defp userinfo(userinfo) do
    case :binary.split(userinfo, ":") do
      [username, _password] -> username <> ":" <> @marker
      [_no_colon] -> @marker
    end
  end

  # `userinfo@host:port` in a `%URI{}`: the userinfo ends at the last `@`.
  defp authority(authority) do
    case :binary.matches(authority, "@") do
      [] ->
        authority

      matches ->
        {at, 1} = List.last(matches)
        <<info::binary-size(at), rest::binary>> = authority
        userinfo(info) <> rest
    end
  end

  ## Commands

  @doc """
  For the `:commands` of telemetry metadata: the commands with the arguments of `AUTH` (the
  username of `AUTH username password` is kept) and the password of `HELLO ... AUTH username
  password` replaced by the marker. Only the first element of each command is looked at, and the
  list itself is returned when no command needs it. Never raises, whatever `commands` is (invalid
  commands are reported by the caller's validation, not here).
  """
  @spec commands(term()) :: term()
  def commands(commands) when is_list(commands) do
    if any_secret?(commands), do: map_commands(commands), else: commands
  end

  def commands(other), do: other

  # The usual case (binary names, few of 4 or 5 bytes) in one clause, without a call per command.
  defp any_secret?([[name | _] | rest]) when is_binary(name) do
    case byte_size(name) do
      4 -> auth?(name) or any_secret?(rest)
      5 -> hello?(name) or any_secret?(rest)
      _ -> any_secret?(rest)
    end
  end

  defp any_secret?([[name | _] | rest]), do: secret_command?(name) or any_secret?(rest)
  defp any_secret?([_ | rest]), do: any_secret?(rest)
  defp any_secret?(_end), do: false

  defp map_commands([command | rest]), do: [command(command) | map_commands(rest)]
  defp map_commands(tail), do: tail

  defp command([name | args] = command) do
    cond do
      auth?(name) -> [name | auth_args(args)]
      hello?(name) -> [name | hello_args(args)]
      true -> command
    end
  end

  defp command(other), do: other

  defp secret_command?(name), do: auth?(name) or hello?(name)

  # AUTH password | AUTH username password (anything else: every argument).
  defp auth_args([username, _password]), do: [username, @marker]
  defp auth_args(args), do: mask_all(args)

  # HELLO [protover [AUTH username password] [SETNAME clientname]]
  defp hello_args([arg | rest]) do
    cond do
      not auth?(arg) -> [arg | hello_args(rest)]
      match?([_, _ | _], rest) -> [arg, hd(rest), @marker | hello_args(tl(tl(rest)))]
      true -> [arg | mask_all(rest)]
    end
  end

  defp hello_args(tail), do: tail

  defp mask_all([_ | rest]), do: [@marker | mask_all(rest)]
  defp mask_all([]), do: []
  defp mask_all(_tail), do: @marker

  # Case-insensitive, without building anything: ORing 32 maps an ASCII upper-case letter to its
  # lower case, and only those two bytes give the lower-case letter.
  defguardp is?(byte, lower) when is_integer(byte) and (byte ||| 32) == lower

  defp auth?(<<a, u, t, h>>) when is?(a, ?a) and is?(u, ?u) and is?(t, ?t) and is?(h, ?h),
    do: true

  defp auth?([a, u, t, h]) when is?(a, ?a) and is?(u, ?u) and is?(t, ?t) and is?(h, ?h),
    do: true

  defp auth?(name) when is_atom(name) and name not in [nil, true, false],
    do: auth?(Atom.to_string(name))

  defp auth?(_name), do: false

  defp hello?(<<h, e, l1, l2, o>>)
       when is?(h, ?h) and is?(e, ?e) and is?(l1, ?l) and is?(l2, ?l) and is?(o, ?o),
       do: true

  defp hello?([h, e, l1, l2, o])
       when is?(h, ?h) and is?(e, ?e) and is?(l1, ?l) and is?(l2, ?l) and is?(o, ?o),
       do: true

  defp hello?(name) when is_atom(name) and name not in [nil, true, false],
    do: hello?(Atom.to_string(name))

  defp hello?(_name), do: false

  ## Error messages

  @doc """
  What an error message says about an invalid secret instead of showing it: its type.

      iex> RedixRs.Redact.describe(~c"s3cret")
      "a list (not shown: it may be a secret)"
  """
  @spec describe(term()) :: String.t()
  def describe(value) do
    kind =
      cond do
        is_integer(value) -> "an integer"
        is_float(value) -> "a float"
        is_atom(value) -> "an atom"
        is_binary(value) -> "a binary"
        is_list(value) -> "a list"
        is_tuple(value) -> "a tuple of #{tuple_size(value)} elements"
        is_map(value) -> "a map"
        is_function(value) -> "a function"
        true -> "a pid, port or reference"
      end

    kind <> " (not shown: it may be a secret)"
  end
end
