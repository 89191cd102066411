defmodule RedixRs.URITest do
  use ExUnit.Case, async: true

  doctest RedixRs.URI

  import RedixRs.URI, only: [to_start_options: 1]

  describe "schemes" do
    test "redis://" do
      assert to_start_options("redis://localhost:6379") == [port: 6379, host: "localhost"]
    end

    test "valkey://" do
      assert to_start_options("valkey://localhost:6379") == [port: 6379, host: "localhost"]
    end

    test "rediss:// adds ssl: true first" do
      assert to_start_options("rediss://localhost:6379") ==
               [ssl: true, port: 6379, host: "localhost"]

      assert to_start_options("rediss://localhost") == [ssl: true, host: "localhost"]
    end

    test "the scheme is case-insensitive" do
      assert to_start_options("REDIS://localhost") == [host: "localhost"]
      assert to_start_options("Rediss://localhost") == [ssl: true, host: "localhost"]
    end

    test "other schemes raise ArgumentError" do
      message = "expected scheme to be redis://, valkey://, or rediss://, got: foo://"

      assert_raise ArgumentError, message, fn -> to_start_options("foo://localhost") end

      assert_raise ArgumentError, ~r"got: http://$", fn ->
        to_start_options("http://localhost:6379")
      end

      assert_raise ArgumentError, ~r"got: ://$", fn -> to_start_options("//localhost") end
    end
  end

  describe "host and port" do
    test "only the keys present in the URI are emitted" do
      assert to_start_options("redis://example.com") == [host: "example.com"]
      assert to_start_options("redis://example.com:7000") == [port: 7000, host: "example.com"]
      assert to_start_options("redis://") == []
      assert to_start_options("redis://:6380") == [port: 6380]
    end

    test "IPv6 hosts lose their brackets" do
      assert to_start_options("redis://[::1]:6379") == [port: 6379, host: "::1"]
    end

    test "the query and the fragment are ignored" do
      assert to_start_options("redis://localhost:6379/1?foo=bar#frag") ==
               [database: 1, port: 6379, host: "localhost"]
    end
  end

  describe "userinfo" do
    test "\":password\" gives only a password" do
      assert to_start_options("redis://:pw@localhost") == [password: "pw", host: "localhost"]
    end

    test "\"username:password\" gives a username and a password" do
      assert to_start_options("redis://alice:pw@localhost") ==
               [password: "pw", username: "alice", host: "localhost"]
    end

    test "a password may contain colons" do
      assert to_start_options("redis://alice:a:b:c@localhost") ==
               [password: "a:b:c", username: "alice", host: "localhost"]
    end

    test "an empty password is kept" do
      assert to_start_options("redis://alice:@localhost") ==
               [password: "", username: "alice", host: "localhost"]

      assert to_start_options("redis://:@localhost") == [password: "", host: "localhost"]
    end

    test "username and password are URL-decoded" do
      assert to_start_options("redis://us%3Aer:p%40ss%2Fw%25rd@localhost") ==
               [password: "p@ss/w%rd", username: "us:er", host: "localhost"]
    end

    test "a userinfo without a colon raises ArgumentError" do
      error = assert_raise ArgumentError, fn -> to_start_options("redis://alice@localhost") end

      assert error.message =~ "redis://:PASSWORD@HOST"
      assert error.message =~ "redis://USERNAME:PASSWORD@HOST"
      # Not echoed: a userinfo without a colon is most likely a password.
      refute error.message =~ "alice"
    end

    test "a userinfo without a host" do
      assert to_start_options("redis://:pw@/3") == [database: 3, password: "pw"]
    end
  end

  describe "database" do
    test "/N selects database N" do
      assert to_start_options("redis://localhost/3") == [database: 3, host: "localhost"]
      assert to_start_options("redis://localhost/0") == [database: 0, host: "localhost"]
      assert to_start_options("redis://localhost/15") == [database: 15, host: "localhost"]
    end

    test "/N/anything selects database N" do
      assert to_start_options("redis://localhost/3/anything") ==
               [database: 3, host: "localhost"]

      assert to_start_options("redis://localhost/3/") == [database: 3, host: "localhost"]
    end

    test "an empty path or / gives no database" do
      assert to_start_options("redis://localhost") == [host: "localhost"]
      assert to_start_options("redis://localhost/") == [host: "localhost"]
    end

    test "a non-integer database raises ArgumentError" do
      assert_raise ArgumentError, ~s(expected database to be an integer, got: "/foo"), fn ->
        to_start_options("redis://localhost/foo")
      end

      assert_raise ArgumentError, ~s(expected database to be an integer, got: "/3foo"), fn ->
        to_start_options("redis://localhost/3foo")
      end

      assert_raise ArgumentError, ~s(expected database to be an integer, got: "//3"), fn ->
        to_start_options("redis://localhost//3")
      end
    end
  end

  describe "order of the options" do
    test "follows Redix: ssl, database, password, username, port, host" do
      assert to_start_options("rediss://user:pass@host.example:1234/5") == [
               ssl: true,
               database: 5,
               password: "pass",
               username: "user",
               port: 1234,
               host: "host.example"
             ]
    end
  end

  describe "unix://" do
    test "gives the socket path as {:local, path} and port 0" do
      assert to_start_options("unix:///path/to/redis.sock") ==
               [port: 0, host: {:local, "/path/to/redis.sock"}]
    end

    test "the single-slash form unix:/path is accepted too" do
      assert to_start_options("unix:/path/to/redis.sock") ==
               [port: 0, host: {:local, "/path/to/redis.sock"}]
    end

    test "the path is URL-decoded" do
      assert to_start_options("unix:///tmp/my%20dir/redis.sock") ==
               [port: 0, host: {:local, "/tmp/my dir/redis.sock"}]
    end

    test "?database=N and ?db=N select a database" do
      assert to_start_options("unix:///tmp/redis.sock?database=3") ==
               [database: 3, port: 0, host: {:local, "/tmp/redis.sock"}]

      assert to_start_options("unix:///tmp/redis.sock?db=3") ==
               [database: 3, port: 0, host: {:local, "/tmp/redis.sock"}]

      assert to_start_options("unix:///tmp/redis.sock?") ==
               [port: 0, host: {:local, "/tmp/redis.sock"}]
    end

    test "a non-integer database raises ArgumentError" do
      assert_raise ArgumentError, ~s(expected database to be an integer, got: "foo"), fn ->
        to_start_options("unix:///tmp/redis.sock?db=foo")
      end

      assert_raise ArgumentError, ~s(expected database to be an integer, got: ""), fn ->
        to_start_options("unix:///tmp/redis.sock?database=")
      end
    end

    test "unknown query parameters raise ArgumentError" do
      assert_raise ArgumentError, ~r/unknown query parameter "password"/, fn ->
        to_start_options("unix:///tmp/redis.sock?password=x")
      end
    end

    test "userinfo is rejected" do
      assert_raise ArgumentError, ~r/unix:\/\/ URIs do not accept a username or a password/, fn ->
        to_start_options("unix://:pw@/tmp/redis.sock")
      end
    end

    test "a host or a port is rejected" do
      assert_raise ArgumentError, ~r/no host and no port/, fn ->
        to_start_options("unix://tmp/redis.sock")
      end

      assert_raise ArgumentError, ~r/no host and no port/, fn ->
        to_start_options("unix://localhost:6379/tmp/redis.sock")
      end
    end

    test "a missing path is rejected" do
      assert_raise ArgumentError, ~r/absolute path of a socket/, fn ->
        to_start_options("unix://")
      end

      assert_raise ArgumentError, ~r/absolute path of a socket/, fn ->
        to_start_options("unix:///")
      end
    end
  end
end
