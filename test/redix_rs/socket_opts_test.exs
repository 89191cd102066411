defmodule RedixRs.SocketOptsTest do
  # The table of `:socket_opts` (RedixRs.Options.Socket): it covers every `:gen_tcp` connect option
  # and every `:ssl` client option of OTP 25, each row does what it says, and the mapped TCP options
  # reach the socket (seen by Redis, by `ss`, or by what the kernel does with them).
  use ExUnit.Case, async: true

  import ExUnit.CaptureLog

  alias RedixRs.ConnectionError
  alias RedixRs.Options.Socket
  alias RedixRs.Test.{RedisServer, Servers, SocketOptsSamples, TLSCerts}

  # OTP 25's lists, from the types of ssl.erl (client_option/0, common_option/0,
  # transport_option/0) and gen_tcp.erl (connect_option/0, which includes inet's address_family/0
  # and gen_tcp's option/0). The first test checks them against the installed OTP when it is 25.
  @otp25_ssl_client ~w(verify reuse_session reuse_sessions cacerts cacertfile
                       alpn_advertised_protocols client_preferred_next_protocols psk_identity
                       srp_identity server_name_indication max_fragment_length
                       customize_hostname_check fallback middlebox_comp_mode
                       certificate_authorities session_tickets use_ticket early_data)a
  @otp25_ssl_common ~w(protocol handshake cert certfile key keyfile password certs_keys ciphers
                       eccs signature_algs signature_algs_cert supported_groups secure_renegotiate
                       keep_secrets depth verify_fun crl_check crl_cache max_handshake_size
                       partial_chain versions user_lookup_fun log_level log_alert hibernate_after
                       padding_check beast_mitigation ssl_imp session_tickets key_update_at
                       receiver_spawn_opts sender_spawn_opts)a
  @otp25_ssl_transport [:cb_info]
  @otp25_gen_tcp_connect ~w(fd inet inet6 local ifaddr ip port tcp_module netns bind_to_device
                            active buffer debug delay_send deliver dontroute exit_on_close header
                            high_msgq_watermark high_watermark keepalive linger
                            low_msgq_watermark low_watermark mode list binary nodelay packet
                            packet_size priority raw recbuf reuseaddr send_timeout
                            send_timeout_close show_econnreset sndbuf tos tclass ttl recvtos
                            recvtclass recvttl ipv6_v6only)a

  setup_all do
    dir = RedixRs.Test.Helpers.tmp_dir!("redix_rs_sockopts")
    on_exit(fn -> File.rm_rf!(dir) end)
    certs = TLSCerts.generate!(dir)
    %{certs: certs}
  end

  defp keys(rows), do: rows |> Enum.map(&elem(&1, 0)) |> Enum.sort()

  describe "the table" do
    test "has every :gen_tcp connect option and :ssl client option of OTP 25, once" do
      table = Socket.table()
      assert keys(table) == table |> keys() |> Enum.uniq()
      layer = Map.new(table, fn {key, layer, _, _} -> {key, layer} end)

      for key <- @otp25_gen_tcp_connect, do: assert({key, layer[key]} == {key, :gen_tcp})

      for key <- @otp25_ssl_client ++ @otp25_ssl_common ++ @otp25_ssl_transport,
          do: assert({key, layer[key]} == {key, :ssl})

      if :erlang.system_info(:otp_release) == ~c"25" do
        assert Enum.sort(type_keys(:gen_tcp, :connect_option)) ==
                 Enum.sort(@otp25_gen_tcp_connect)

        assert Enum.sort(type_keys(:ssl, :client_option)) == Enum.sort(@otp25_ssl_client)
        assert Enum.sort(type_keys(:ssl, :common_option)) == Enum.sort(@otp25_ssl_common)
        assert Enum.sort(type_keys(:ssl, :transport_option)) == @otp25_ssl_transport
      end
    end

    test "is in the RedixRs docs, with a row per option" do
      {:docs_v1, _, _, _, %{"en" => moduledoc}, _, _} = Code.fetch_docs(RedixRs)
      assert moduledoc =~ "## Socket options"

      for {key, layer, treatment, text} <- Socket.table() do
        name = %{mapped: "mapped", no_effect: "no effect", refused: "refused"}[treatment]
        row = "| `#{inspect(key)}` | `#{inspect(layer)}` | #{name} | #{Socket.cell(text)} |"
        assert String.contains?(moduledoc, row), "no row for #{inspect(key)}"
      end

      assert moduledoc =~ "ECDHE-RSA-AES128-GCM-SHA256"
    end

    test "each row does what it says", %{certs: certs} do
      samples = SocketOptsSamples.samples(certs)
      assert Enum.sort(Map.keys(samples)) == keys(Socket.table())

      for {key, layer, treatment, text} <- Socket.table() do
        # The row's option, and the ones it needs (a key needs a certificate, ...).
        [option | _] = socket_opts = List.wrap(samples[key])
        opts = [socket_opts: socket_opts, ssl: layer == :ssl]

        case treatment do
          :refused ->
            error = assert_raise ArgumentError, fn -> RedixRs.Options.validate!(opts) end

            assert error.message ==
                     "the socket option #{inspect(key)} is not supported by " <>
                       "redix_rs: #{text}"

          _accepted ->
            assert RedixRs.Options.validate!(opts)[:socket_opts] == socket_opts, inspect(key)
        end

        # `:ssl` options need `ssl: true` (refused ones say why first).
        if layer == :ssl and treatment != :refused do
          assert_raise ArgumentError, ~r/are TLS options: they need ssl: true/, fn ->
            RedixRs.Options.validate!(socket_opts: [option])
          end
        end
      end
    end

    test "unknown options and bad values raise" do
      for {socket_opts, message} <- [
            {[:keepalive], "unknown socket option :keepalive"},
            {[nodelay: 1], "invalid value for the :nodelay socket option: expected a boolean"},
            {[linger: 5], "expected {boolean, seconds}"},
            {[linger: {true, 5}], "use {true, 0} (close with a reset) or leave it out"},
            {[tos: 256], "expected an integer from 0 to 255"},
            {[ip: ~c"127.0.0.1"], "expected an IP address tuple"},
            {[ip: {:local, "/tmp/x"}], "use `host: {:local, path}`"},
            {[port: 70_000], "expected an integer from 0 to 65535"},
            {[send_timeout: -1], "expected a non-negative integer (milliseconds) or :infinity"},
            {[{:raw, 1, 2, <<0::32>>}], "only {:raw, 6, 4 | 5 | 6, <<n::native-32>>}"},
            {[{:raw, 6, 7, <<1::native-32>>}], "use the named option"},
            {[{:raw, 6, 4, <<0::native-32>>}], "with n > 0"},
            {[{:raw, 6, 4}], "the socket option :raw is not supported"},
            {:nope, "invalid value for :socket_opts option"},
            {[:inet | :improper], "invalid value for :socket_opts option"},
            {["keepalive"], "invalid value for :socket_opts option"}
          ] do
        assert_raise ArgumentError, ~r/#{Regex.escape(message)}/, fn ->
          RedixRs.Options.validate!(socket_opts: socket_opts)
        end
      end
    end

    test "value-dependent rows: the harmless values of refused options, the others refused" do
      for opt <- [crl_check: false, ocsp_stapling: false, protocol: :tls, handshake: :full] do
        assert RedixRs.Options.validate!(socket_opts: [opt], ssl: true)
      end

      for {opt, message} <- [
            {[crl_check: true], "certificate revocation lists are not checked"},
            {[ocsp_stapling: true], "no OCSP response is requested"},
            {[protocol: :dtls], "Redis serves TLS over TCP"},
            {[handshake: :hello], "a handshake cannot be paused"}
          ] do
        assert_raise ArgumentError, ~r/#{Regex.escape(message)}/, fn ->
          RedixRs.Options.validate!(socket_opts: opt, ssl: true)
        end
      end
    end
  end

  describe "what the TCP options do" do
    test "the local address and port (ip, ifaddr, port) are what Redis sees" do
      server = Servers.get(:password)
      # Not sync_connect: a port taken meanwhile then shows as a failed PING, which connect_bound
      # retries (a failed sync_connect would exit this linked test process).
      base = [port: server.port, password: "s3cret"]

      for make_opts <- [
            fn -> [ip: {127, 0, 0, 2}, port: free_port()] end,
            fn -> [ifaddr: %{family: :inet, addr: {127, 0, 0, 3}, port: free_port()}] end,
            fn -> [ifaddr: {127, 0, 0, 4}] end
          ] do
        {conn, socket_opts} =
          connect_bound(
            make_opts,
            &RedixRs.start_link([host: "127.0.0.1", socket_opts: &1] ++ base)
          )

        {:ok, info} = RedixRs.command(conn, ["CLIENT", "INFO"])
        [_, address] = Regex.run(~r/ addr=(\S+) /, info)
        {ip, port} = local(socket_opts)
        assert address =~ ~r/^#{Regex.escape(ip)}:\d+$/, info
        if port, do: assert(address == "#{ip}:#{port}")
        GenServer.stop(conn)
      end
    end

    test "a local address of the other family cannot reach the server" do
      Process.flag(:trap_exit, true)

      assert {:error, %ConnectionError{}} =
               RedixRs.start_link(
                 host: "127.0.0.1",
                 port: Servers.port(),
                 socket_opts: [ip: {0, 0, 0, 0, 0, 0, 0, 1}],
                 sync_connect: true
               )
    end

    test "every mapped TCP option at once, read back with ss where it shows them" do
      make_opts = fn -> every_mapped_option(free_port()) end
      start = &RedixRs.start_link(host: "127.0.0.1", port: Servers.port(), socket_opts: &1)
      {_conn, socket_opts} = connect_bound(make_opts, start)
      local_port = socket_opts[:port]

      if ss = System.find_executable("ss") do
        {out, 0} =
          System.cmd(ss, ["-tnieo", "--tos", "state", "established", "( sport = :#{local_port} )"])

        # tos, priority (class_id) and the keepalive timer started from TCP_KEEPIDLE (33 s).
        assert out =~ "tos:0x10", out
        assert out =~ "class_id:0x5", out
        [_, seconds] = Regex.run(~r/timer:\(keepalive,(\d+)sec/, out)
        assert String.to_integer(seconds) in 20..33, out
      end
    end

    @tag timeout: 60_000
    test "send_timeout closes a connection whose server reads nothing (:etimedout)" do
      # A real server, stopped (SIGSTOP): the kernel still takes bytes until its buffers are full.
      server = RedisServer.start()
      test_pid = self()
      id = "sockopts-#{System.unique_integer([:positive])}"

      :ok =
        :telemetry.attach(
          id,
          [:redix_rs, :disconnection],
          fn event, _measurements, meta, _ -> send(test_pid, {event, meta}) end,
          nil
        )

      on_exit(fn -> :telemetry.detach(id) end)

      {:ok, conn} =
        RedixRs.start_link(
          port: server.port,
          socket_opts: [send_timeout: 300, sndbuf: 4096],
          sync_connect: true,
          backoff_initial: 60_000
        )

      assert RedixRs.command(conn, ["PING"]) == {:ok, "PONG"}
      :ok = RedisServer.os_kill(server, "STOP")
      value = :binary.copy("x", 32 * 1024 * 1024)

      capture_log(fn ->
        {elapsed, result} =
          :timer.tc(fn -> RedixRs.command(conn, ["SET", "k", value], timeout: 30_000) end)

        assert result == {:error, %ConnectionError{reason: :disconnected}}
        assert_receive {[:redix_rs, :disconnection], %{connection: ^conn, reason: reason}}, 5_000
        assert reason == %ConnectionError{reason: :etimedout}
        # Not before the timeout; long before the kernel's own retransmission limit (minutes).
        assert elapsed >= 300_000 and elapsed < 20_000_000, "#{elapsed} µs"
      end)

      RedisServer.os_kill(server, "CONT")
    end
  end

  defp local(socket_opts) do
    case socket_opts do
      [ip: ip, port: port] -> {to_string(:inet.ntoa(ip)), port}
      [ifaddr: %{addr: ip, port: port}] -> {to_string(:inet.ntoa(ip)), port}
      [ifaddr: ip] -> {to_string(:inet.ntoa(ip)), nil}
    end
  end

  # A local port picked by free_port/0 may be taken by another socket before the connection binds
  # it (test runs side by side open many): a connection that cannot answer is retried with options
  # made afresh. Returns the connection and the options it was started with.
  defp connect_bound(make_opts, start, attempts \\ 5) do
    socket_opts = make_opts.()

    answer =
      case start.(socket_opts) do
        {:ok, conn} -> {conn, RedixRs.command(conn, ["PING"])}
        error -> {nil, error}
      end

    case answer do
      {conn, {:ok, "PONG"}} ->
        {conn, socket_opts}

      {conn, _not_connected} when attempts > 1 ->
        if conn, do: GenServer.stop(conn)
        connect_bound(make_opts, start, attempts - 1)

      {_conn, other} ->
        flunk("no connection with #{inspect(socket_opts)}: #{inspect(other)}")
    end
  end

  # Every TCP option the socket-option table maps, binding the connection to `local_port`.
  defp every_mapped_option(local_port) do
    [
      {:raw, 6, 4, <<33::native-32>>},
      {:raw, 6, 5, <<11::native-32>>},
      {:raw, 6, 6, <<4::native-32>>},
      :inet,
      port: local_port,
      keepalive: true,
      delay_send: true,
      linger: {true, 0},
      tos: 0x10,
      priority: 5,
      ttl: 64,
      dontroute: false,
      bind_to_device: "lo",
      sndbuf: 128 * 1024,
      recbuf: 128 * 1024,
      send_timeout: 5_000,
      send_timeout_close: true
    ]
  end

  defp free_port do
    {:ok, socket} = :gen_tcp.listen(0, ip: {127, 0, 0, 1})
    {:ok, port} = :inet.port(socket)
    :ok = :gen_tcp.close(socket)
    port
  end

  # The keys of the tuple (or atom) options of a type of `module`, from its abstract code.
  defp type_keys(module, type) do
    {:ok, {_, [abstract_code: {:raw_abstract_v1, forms}]}} =
      :beam_lib.chunks(:code.which(module), [:abstract_code])

    types =
      for {:attribute, _, kind, {name, ast, _}} <- forms,
          kind in [:type, :opaque],
          into: %{},
          do: {name, ast}

    types |> Map.fetch!(type) |> type_ast_keys(types) |> Enum.uniq()
  end

  defp type_ast_keys({:type, _, :union, alternatives}, types),
    do: Enum.flat_map(alternatives, &type_ast_keys(&1, types))

  defp type_ast_keys({:type, _, :tuple, [{:atom, _, key} | _]}, _types), do: [key]
  defp type_ast_keys({:atom, _, atom}, _types), do: [atom]
  defp type_ast_keys({:user_type, _, name, _}, types), do: type_ast_keys(types[name], types)
  defp type_ast_keys({:ann_type, _, [_, type]}, types), do: type_ast_keys(type, types)

  defp type_ast_keys({:remote_type, _, [{:atom, _, module}, {:atom, _, name}, _]}, _types),
    do: type_keys(module, name)
end
