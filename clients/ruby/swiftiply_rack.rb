#!/usr/bin/env ruby
# frozen_string_literal: true
#
# swiftiply_rack.rb: serve a Rack application (Rails, Sinatra, Hanami, a plain
# config.ru) as native Swiftiply backends.
#
#   ruby swiftiply_rack.rb [--connect HOST:PORT] [--key KEY] [--connections N]
#                          [--id ID12] [CONFIG.ru]
#
# Swiftiply backends connect *to* the proxy. This program opens N connections
# to a section's `outgoing` address, one thread each, and on each one serves
# one request at a time (docs/protocol.md): handshake, then read an HTTP/1.1
# request, call the Rack app, write one response, repeat. The connection to the
# proxy is never closed for an HTTP reason; it is closed only when the stream
# can no longer be trusted (a malformed request, a response cut short), and
# then opened again.
#
# Response framing, in order:
#   - no body: HEAD request, 204, 304;
#   - the app's Content-Length: the body as it is;
#   - the app's Transfer-Encoding: chunked: the body as it is (the app, e.g.
#     Rack::Chunked, encoded it);
#   - an Array body (to_ary): Content-Length is computed and added;
#   - anything else streams in packet mode: `X-Swiftiply-Close: 1`, then each
#     chunk the body yields as "%08d" length + bytes, then "--------". The
#     proxy turns that into chunked encoding (HTTP/1.1 clients) or a
#     close-delimited body (HTTP/1.0 clients).
#
# Needs only Ruby's standard library and rack (2.2 or 3.x).

require "optparse"
require "socket"
require "stringio"
require "uri" # Rack 2.2's Lint validates SERVER_NAME/HTTP_HOST with URI but does not load it
require "io/wait"
require "rack"

module Swiftiply
  # The proxy sent bytes that are not a valid HTTP/1.x request: the stream is
  # out of step and the connection must be dropped.
  class ProtocolError < StandardError; end

  # The response could not be completed after its head was written: the
  # connection must be dropped so the proxy knows the response was cut.
  class BrokenResponse < StandardError; end

  # Reading from or writing to the proxy failed: the connection is gone.
  class ConnectionLost < StandardError; end

  # One request as read off a backend connection.
  Request = Struct.new(:method, :target, :version, :headers, :body, :has_body)

  # Buffered reading of requests from one proxy connection. All reads that
  # happen once a request has begun give up after `timeout` seconds of
  # silence.
  class RequestReader
    READ_SIZE = 64 * 1024
    MAX_HEAD = 1024 * 1024
    MAX_HEADERS = 1000
    TOKEN = /\A[!#$%&'*+\-.^_`|~0-9A-Za-z]+\z/.freeze
    REQUEST_LINE = %r{\A([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([^ ]+) HTTP/(1\.[01])\z}n.freeze

    def initialize(sock, timeout)
      @sock = sock
      @timeout = timeout
      @buf = String.new(encoding: Encoding::BINARY)
    end

    # Bytes already read and not consumed yet.
    def buffered?
      !@buf.empty?
    end

    # Reads a request head (request line and header fields). nil when the
    # proxy closed the connection before sending a byte.
    def read_head
      return nil if @buf.empty? && !fill(eof_ok: true)

      line = read_line(MAX_HEAD)
      m = REQUEST_LINE.match(line) or
        raise ProtocolError, "bad request line #{line[0, 200].inspect}"
      size = line.bytesize
      headers = []
      loop do
        l = read_line(MAX_HEAD)
        break if l.empty?

        size += l.bytesize
        raise ProtocolError, "request head over #{MAX_HEAD} bytes" if size > MAX_HEAD
        raise ProtocolError, "more than #{MAX_HEADERS} header fields" if headers.size >= MAX_HEADERS

        name, value = l.split(":", 2)
        unless value && TOKEN.match?(name)
          raise ProtocolError, "bad header line #{l[0, 200].inspect}"
        end

        headers << [name, value.strip]
      end
      Request.new(m[1], m[2], "HTTP/#{m[3]}", headers, nil, false)
    end

    # How the body of `req` is framed: [:none], [:length, n] or [:chunked].
    def framing(req)
      te = req.headers.select { |n, _| n.casecmp?("transfer-encoding") }.map(&:last)
      cl = req.headers.select { |n, _| n.casecmp?("content-length") }.map(&:last)
      unless te.empty?
        codings = te.join(",").split(",").map(&:strip).reject(&:empty?)
        unless codings.last&.casecmp?("chunked") && !cl.any?
          raise ProtocolError, "unsupported request framing: Transfer-Encoding #{te.inspect}"
        end

        return [:chunked]
      end
      return [:none] if cl.empty?

      lengths = cl.join(",").split(",").map(&:strip).uniq
      unless lengths.size == 1 && lengths[0].match?(/\A\d{1,18}\z/)
        raise ProtocolError, "bad Content-Length #{cl.inspect}"
      end

      [:length, lengths[0].to_i]
    end

    # Reads the body of `req` (decoding chunked) into req.body.
    def read_body(req)
      kind, n = framing(req)
      req.has_body = kind != :none
      req.body =
        case kind
        when :none then String.new(encoding: Encoding::BINARY)
        when :length then read_exact(n)
        when :chunked then read_chunked
        end
      req
    end

    private

    # One more read into the buffer. false at EOF (only when eof_ok).
    def fill(eof_ok: false)
      loop do
        data = @sock.read_nonblock(READ_SIZE, exception: false)
        case data
        when :wait_readable
          next if @sock.wait_readable(@timeout)

          raise ProtocolError, "no bytes from the proxy for #{@timeout} s in the middle of a request"
        when nil
          return false if eof_ok

          raise EOFError, "the proxy closed the connection in the middle of a request"
        else
          @buf << data
          return true
        end
      end
    end

    # One line without its line end (CRLF, or a bare LF).
    def read_line(limit)
      loop do
        if (i = @buf.index("\n"))
          raise ProtocolError, "line over #{limit} bytes" if i > limit

          line = @buf.slice!(0, i + 1)
          line.chomp!
          return line
        end
        raise ProtocolError, "line over #{limit} bytes" if @buf.bytesize > limit

        fill
      end
    end

    def read_exact(n, into = String.new(capacity: [n, READ_SIZE].min, encoding: Encoding::BINARY))
      want = into.bytesize + n
      while into.bytesize < want
        fill if @buf.empty?
        take = [want - into.bytesize, @buf.bytesize].min
        into << (take == @buf.bytesize ? @buf.slice!(0..-1) : @buf.slice!(0, take))
      end
      into
    end

    def read_chunked
      body = String.new(encoding: Encoding::BINARY)
      loop do
        line = read_line(4096)
        size = line.split(";", 2)[0].strip
        raise ProtocolError, "bad chunk size line #{line[0, 100].inspect}" unless size.match?(/\A\h{1,15}\z/)

        n = size.to_i(16)
        break if n.zero?

        read_exact(n, body)
        raise ProtocolError, "chunk data not followed by a line end" unless read_line(2).empty?
      end
      # Trailer fields: read and dropped.
      size = 0
      loop do
        l = read_line(MAX_HEAD)
        break if l.empty?

        size += l.bytesize
        raise ProtocolError, "trailers over #{MAX_HEAD} bytes" if size > MAX_HEAD
      end
      body
    end
  end

  # Builds the Rack environment for one request.
  module RackEnv
    RACK_VERSION = (defined?(::Rack::VERSION) && ::Rack::VERSION.is_a?(Array) ? ::Rack::VERSION : [1, 3]).freeze
    SOFTWARE = "swiftiply_rack"
    AUTHORITY = /\A(\[[^\]]*\]|[^:]*)(?::(\d*))?\z/.freeze

    module_function

    # `proxy_ip`: the address of the proxy end of this connection.
    def build(req, proxy_ip)
      path, query = split_target(req.target)
      env = {
        "REQUEST_METHOD" => req.method,
        "SCRIPT_NAME" => "",
        "PATH_INFO" => path,
        "QUERY_STRING" => query,
        "REQUEST_URI" => req.target,
        "REQUEST_PATH" => path,
        "SERVER_PROTOCOL" => req.version,
        "GATEWAY_INTERFACE" => "CGI/1.2",
        "SERVER_SOFTWARE" => SOFTWARE,
      }
      forwarded = []
      req.headers.each do |name, value|
        # A name with "_" would land in the same env key as its "-" twin
        # (X_Forwarded_For vs X-Forwarded-For): drop it, as nginx does.
        next if name.include?("_")

        key = name.upcase.tr("-", "_")
        case key
        when "CONTENT_TYPE" then env["CONTENT_TYPE"] = value
        when "CONTENT_LENGTH", "TRANSFER_ENCODING" then next # the body is decoded; see below
        else
          forwarded << value if key == "X_FORWARDED_FOR"
          k = "HTTP_#{key}"
          old = env[k]
          env[k] = old ? "#{old}#{key == 'COOKIE' ? '; ' : ', '}#{value}" : value
        end
      end
      env["CONTENT_LENGTH"] = req.body.bytesize.to_s if req.has_body

      server_name, server_port = server_authority(env["HTTP_HOST"], proxy_ip)
      env["SERVER_NAME"] = server_name
      env["SERVER_PORT"] = server_port
      env["REMOTE_ADDR"] = remote_addr(forwarded, proxy_ip)

      input = StringIO.new(req.body)
      input.set_encoding(Encoding::BINARY)
      env.merge!(
        "rack.version" => RACK_VERSION,
        "rack.url_scheme" => "http",
        "rack.input" => input,
        "rack.errors" => $stderr,
        "rack.multithread" => true,
        "rack.multiprocess" => false,
        "rack.run_once" => false,
        "rack.hijack?" => false,
        "rack.response_finished" => [],
      )
      env
    end

    # [PATH_INFO, QUERY_STRING] of a request target. The proxy already turns
    # absolute-form targets into origin form; this copes with one anyway.
    def split_target(target)
      t = target.sub(%r{\A[a-zA-Z][a-zA-Z0-9+.\-]*://[^/?#]*}, "")
      t = t.split("#", 2)[0]
      path, query = t.split("?", 2)
      path ||= ""
      path = "/" if path.empty? && target != t
      path = "" if path == "*" # OPTIONS *: REQUEST_URI keeps the "*"; "" is valid in Rack 2 and 3
      [path, query || ""]
    end

    def server_authority(host, proxy_ip)
      if host && !host.empty? && (m = AUTHORITY.match(host))
        port = m[2].nil? || m[2].empty? ? "80" : m[2]
        [m[1], port]
      else
        [proxy_ip.include?(":") ? "[#{proxy_ip}]" : proxy_ip, "80"]
      end
    end

    # The proxy (with `xforwardedfor: true`) *appends* the address of the
    # client it accepted to X-Forwarded-For, so the last entry is the one the
    # proxy vouches for; entries before it came from the client and can be
    # anything. Rack::Request#ip and Rails' RemoteIp still see the whole
    # header for trusted-proxy chains.
    def remote_addr(forwarded, proxy_ip)
      last = forwarded.join(",").split(",").map(&:strip).reject(&:empty?).last
      last || proxy_ip
    end
  end

  # Writes one Rack response on a proxy connection.
  class ResponseWriter
    TOKEN = /\A[!#$%&'*+\-.^_`|~0-9A-Za-z]+\z/.freeze
    MAX_PACKET = 99_999_999 # what "%08d" can express
    COALESCE = 64 * 1024

    # Streamed body for Rack 3 "streaming bodies" (body.call(stream)):
    # every write is one packet.
    class PacketStream
      def initialize(writer)
        @writer = writer
        @closed = false
      end

      def write(data)
        s = data.to_s
        @writer.packet(s)
        s.bytesize
      end

      def <<(data)
        write(data)
        self
      end

      def flush = self
      def read(*) = nil
      def read_partial(*) = raise(EOFError)
      def close_read = nil
      def close_write = (@closed = true)
      def close = (@closed = true)
      def closed? = @closed
    end

    attr_reader :head_sent

    def initialize(sock, log)
      @sock = sock
      @log = log
      @head_sent = false
    end

    # Writes the response. Raises BrokenResponse when it had to stop after the
    # head was sent; anything raised before that leaves the socket untouched.
    def write(method, status, headers, body)
      status = Integer(status)
      raise ArgumentError, "status #{status} cannot be a final response" if status < 200 || status > 999

      lines, length, chunked = header_lines(headers)
      reason = ::Rack::Utils::HTTP_STATUS_CODES[status] || "Status #{status}"
      head = +"HTTP/1.1 #{status} #{reason}\r\n"
      lines.each { |l| head << l }

      if method == "HEAD" || status == 204 || status == 304
        send_head(head)
      elsif length
        send_head(head)
        send_with_length(body, length)
      elsif chunked
        send_head(head)
        body.each { |c| out(c) unless c.empty? }
      elsif body.respond_to?(:to_ary)
        parts = body.to_ary
        size = parts.sum(&:bytesize)
        head << "Content-Length: #{size}\r\n"
        send_head(head, size <= COALESCE ? parts : [])
        parts.each { |p| out(p) unless p.empty? } if size > COALESCE
      elsif body.respond_to?(:each) || body.respond_to?(:call)
        head << "X-Swiftiply-Close: 1\r\n"
        send_head(head)
        if body.respond_to?(:each)
          body.each { |c| packet(c) }
        else
          body.call(PacketStream.new(self)) # a Rack 3 streaming body
        end
        out("--------")
      else
        raise ArgumentError, "the body (#{body.class}) responds to none of each, to_ary, call"
      end
    rescue BrokenResponse, ConnectionLost
      raise
    rescue Exception => e # rubocop:disable Lint/RescueException
      raise unless @head_sent

      raise BrokenResponse, "#{e.class}: #{e.message} while writing the body"
    end

    # One packet-mode packet (empty chunks are skipped).
    def packet(chunk)
      s = chunk.to_str
      off = 0
      while off < s.bytesize
        n = [s.bytesize - off, MAX_PACKET].min
        piece = off.zero? && n == s.bytesize ? s : s.byteslice(off, n)
        out(format("%08d", n), piece)
        off += n
      end
    end

    private

    def send_head(head, parts = [])
      @head_sent = true
      out(head, "\r\n", *parts)
    end

    def out(*parts)
      @sock.write(*parts)
    rescue IOError, SystemCallError => e
      raise ConnectionLost, "writing to the proxy: #{e.message}"
    end

    # The app's headers as lines, plus its Content-Length (Integer or nil)
    # and whether it declared Transfer-Encoding: chunked. Accepts Rack 2
    # (String values, "\n" between several) and Rack 3 (Array values).
    def header_lines(headers)
      lines = []
      length = nil
      chunked = false
      headers.each do |name, value|
        name = name.to_s
        unless TOKEN.match?(name)
          @log.call("dropping response header with invalid name #{name.inspect}")
          next
        end
        lname = name.downcase
        next if lname == "x-swiftiply-close" || lname.start_with?("rack.")

        values = value.is_a?(Array) ? value : [value]
        values = values.flat_map { |v| v.to_s.empty? ? [""] : v.to_s.split("\n") }
        if values.any? { |v| v.match?(/[\r\0]/) }
          @log.call("dropping response header #{name}: a control character in its value")
          next
        end
        values.each do |v|
          case lname
          when "content-length"
            unless v.strip.match?(/\A\d{1,18}\z/) && (length.nil? || length == v.strip.to_i)
              @log.call("dropping bad or conflicting Content-Length #{v.inspect}")
              next
            end
            next if length # one line is enough

            length = v.strip.to_i
          when "transfer-encoding"
            unless v.strip.casecmp?("chunked")
              @log.call("dropping Transfer-Encoding #{v.inspect}: only chunked is supported")
              next
            end
            chunked = true
          end
          lines << "#{name}: #{v}\r\n"
        end
      end
      if length && chunked
        @log.call("both Content-Length and Transfer-Encoding: chunked; using Content-Length")
        lines.reject! { |l| l.downcase.start_with?("transfer-encoding:") }
        chunked = false
      end
      [lines, length, chunked]
    end

    def send_with_length(body, length)
      sent = 0
      chunks = body.respond_to?(:to_ary) ? body.to_ary : body
      chunks.each do |c|
        next if c.empty? || sent >= length

        if sent + c.bytesize > length
          @log.call("the body is longer than its Content-Length #{length}; cut")
          c = c.byteslice(0, length - sent)
        end
        out(c)
        sent += c.bytesize
      end
      return if sent == length

      raise BrokenResponse, "the body ended after #{sent} of its Content-Length #{length} bytes"
    end
  end

  # Serves a Rack app on `connections` connections to one proxy address.
  class RackBackend
    MAGIC = "swiftclient"
    CONNECT_TIMEOUT = 5
    REQUEST_TIMEOUT = 300
    BACKOFF_MAX = 5.0

    attr_reader :host, :port, :connections

    # id: nil (per connection: 8 hex digits of the pid + 4 of the index) or
    # exactly 12 printable ASCII characters, used by every connection.
    def initialize(app, host:, port:, key: "", connections: 4, id: nil, log: nil)
      raise ArgumentError, "connections must be at least 1" if connections < 1
      raise ArgumentError, "the key is longer than 255 bytes" if key.bytesize > 255
      raise ArgumentError, "the id must be exactly 12 printable ASCII characters" if id && !RackBackend.valid_id?(id)

      @app = app
      @host = host
      @port = port
      @key = key.b
      @connections = connections
      @id = id
      @log = log || ->(msg) { $stderr.write("swiftiply_rack[#{Process.pid}]: #{msg}\n") }
      @stopping = false
      @wake_r, @wake_w = IO.pipe
    end

    def self.valid_id?(id)
      id.bytesize == 12 && id.bytes.all? { |b| b >= 0x20 && b < 0x7f }
    end

    # The default id of connection `index`: always exactly 12 characters.
    def self.default_id(pid, index)
      format("%08x", pid)[-8, 8] + format("%04x", index & 0xffff)
    end

    def handshake(index)
      id = @id || RackBackend.default_id(Process.pid, index)
      "#{MAGIC}#{id}#{format('%02x', @key.bytesize)}".b + @key
    end

    # Runs until #stop; then the requests in flight finish and it returns.
    def run
      threads = Array.new(@connections) do |i|
        Thread.new do
          Thread.current.name = "swiftiply-#{i}"
          connection_loop(i)
        end
      end
      threads.each(&:join)
    ensure
      @wake_r.close unless @wake_r.closed?
      @wake_w.close unless @wake_w.closed?
    end

    # Stops taking requests. Safe to call from a signal handler.
    def stop
      @stopping = true
      begin
        @wake_w.write_nonblock("x", exception: false)
      rescue IOError
        nil
      end
    end

    def stopping?
      @stopping
    end

    private

    def log(msg)
      @log.call(msg)
    end

    # Keeps connection `index` open, reconnecting after random pauses of
    # 0.2–1.0 s that grow (up to BACKOFF_MAX) while nothing gets served.
    def connection_loop(index)
      failures = 0
      until @stopping
        served = 0
        begin
          sock = connect(index, failures)
          served = serve(sock, index) if sock
        rescue StandardError => e # a bug here must not cost a connection
          log("connection #{index}: #{e.class}: #{e.message}\n\t#{(e.backtrace || []).first(10).join("\n\t")}")
        ensure
          sock.close if sock && !sock.closed?
        end
        break if @stopping

        failures = served.positive? ? 1 : failures + 1
        pause(backoff(failures))
      end
    end

    def backoff(failures)
      grow = 2**[[failures - 1, 0].max, 3].min
      [rand(0.2..1.0) * grow, BACKOFF_MAX].min
    end

    # Sleeps `seconds`, or less when #stop is called.
    def pause(seconds)
      IO.select([@wake_r], nil, nil, seconds)
    end

    def connect(index, failures)
      sock = Socket.tcp(@host, @port, connect_timeout: CONNECT_TIMEOUT)
      sock.setsockopt(Socket::IPPROTO_TCP, Socket::TCP_NODELAY, 1)
      sock.setsockopt(Socket::SOL_SOCKET, Socket::SO_KEEPALIVE, 1)
      sock.write(handshake(index))
      log("connection #{index} connected to #{@host}:#{@port} again") if failures.positive?
      sock
    rescue SystemCallError, SocketError, IOError => e
      sock&.close
      log("connection #{index}: cannot connect to #{@host}:#{@port}: #{e.message}") if failures < 2 || (failures % 10).zero?
      nil
    end

    # Serves requests on `sock` until the proxy closes it, the stream breaks
    # or the backend stops. Returns how many requests were answered.
    def serve(sock, index)
      reader = RequestReader.new(sock, REQUEST_TIMEOUT)
      proxy_ip = sock.remote_address.ip_address
      served = 0
      loop do
        return served unless wait_for_request(sock, reader)

        req = reader.read_head
        if req.nil?
          log("connection #{index}: the proxy closed the connection; reconnecting")
          return served
        end
        continue_if_expected(sock, reader, req)
        reader.read_body(req)
        respond(sock, req, proxy_ip)
        served += 1
        return served if @stopping
      end
    rescue ProtocolError => e
      log("connection #{index}: the proxy sent something that is not a valid request (#{e.message}); reconnecting")
      served
    rescue BrokenResponse => e
      log("connection #{index}: response cut short: #{e.message}; reconnecting")
      served
    rescue ConnectionLost, EOFError, IOError, SystemCallError => e
      log("connection #{index}: #{e.message}; reconnecting")
      served
    end

    # Waits for the next request; false when #stop was called and none has
    # started to arrive.
    def wait_for_request(sock, reader)
      return true if reader.buffered?

      loop do
        ready, = IO.select([sock, @wake_r])
        return true if ready.include?(sock)
        # Stopping: a request the proxy dispatched just now is served; after
        # that nothing more is taken.
        return !IO.select([sock], nil, nil, 0).nil? if @stopping
      end
    end

    # An HTTP/1.1 client that sent `Expect: 100-continue` waits for a 100
    # before sending its body; the proxy relays it.
    def continue_if_expected(sock, reader, req)
      return unless req.version == "HTTP/1.1" && !reader.buffered?

      expect = req.headers.find { |n, _| n.casecmp?("expect") }
      return unless expect && expect[1].casecmp?("100-continue")
      return if reader.framing(req) == [:none] || reader.framing(req) == [:length, 0]

      sock.write("HTTP/1.1 100 Continue\r\n\r\n")
    end

    # Calls the app and writes its response. An exception from the app before
    # any response byte was written becomes a 500; after that, the response
    # can only be cut (BrokenResponse). The connection stays open otherwise.
    def respond(sock, req, proxy_ip)
      writer = ResponseWriter.new(sock, method(:log))
      env = status = headers = body = error = nil
      begin
        env = RackEnv.build(req, proxy_ip)
        status, headers, body = @app.call(env)
        writer.write(req.method, status, headers, body)
      rescue BrokenResponse, ConnectionLost => e
        error = e
        raise
      rescue Exception => e # rubocop:disable Lint/RescueException
        error = e
        log("#{req.method} #{req.target}: #{e.class}: #{e.message}\n\t#{(e.backtrace || []).first(15).join("\n\t")}")
        raise BrokenResponse, "#{e.class} after the head was sent" if writer.head_sent

        status = 500
        headers = { "content-type" => "text/plain" }
        error_response(sock, req)
      ensure
        close_body(body)
        finished(env, status, headers, error) if env
      end
    end

    def error_response(sock, req)
      text = "Internal Server Error\n"
      head = "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n" \
             "Content-Length: #{text.bytesize}\r\n\r\n"
      sock.write(head, req.method == "HEAD" ? "" : text)
    rescue IOError, SystemCallError => e
      raise ConnectionLost, "writing to the proxy: #{e.message}"
    end

    def close_body(body)
      body.close if body.respond_to?(:close)
    rescue Exception => e # rubocop:disable Lint/RescueException
      log("body.close raised #{e.class}: #{e.message}")
    end

    # Rack 3 `rack.response_finished` callbacks.
    def finished(env, status, headers, error)
      Array(env["rack.response_finished"]).each do |cb|
        cb.call(env, status, headers, error)
      rescue Exception => e # rubocop:disable Lint/RescueException
        log("rack.response_finished callback raised #{e.class}: #{e.message}")
      end
    end
  end

  # Loads the app of a rackup file: Rack 2 returns [app, options], Rack 3 the
  # app alone.
  def self.load_rack_app(path)
    loaded = ::Rack::Builder.parse_file(path)
    loaded.is_a?(Array) ? loaded.first : loaded
  end

  # "HOST:PORT", "[V6]:PORT" or "PORT" (127.0.0.1) => [host, port].
  def self.parse_address(text)
    m = /\A(?:\[([^\]]+)\]|([^:\[\]]*)):(\d+)\z/.match(text) || /\A()()(\d+)\z/.match(text)
    raise ArgumentError, "#{text.inspect} is not HOST:PORT" unless m

    host = m[1] || m[2]
    host = "127.0.0.1" if host.nil? || host.empty?
    port = m[3].to_i
    raise ArgumentError, "port #{port} is out of range" unless (1..65_535).cover?(port)

    [host, port]
  end

  # The command line.
  module RackCLI
    DEFAULT_ADDRESS = "127.0.0.1:30000"

    module_function

    # Returns the exit status.
    def main(argv)
      begin
        opts = parse(argv)
        return 0 unless opts

        host, port = Swiftiply.parse_address(opts[:connect])
      rescue ArgumentError, OptionParser::ParseError => e
        $stderr.write("swiftiply_rack: #{e.message} (see --help)\n")
        return 2
      end
      # Load the whole app before connecting: no request reaches a backend
      # that is still booting.
      app = Swiftiply.load_rack_app(opts[:config])
      backend = RackBackend.new(app, host: host, port: port, key: opts[:key],
                                     connections: opts[:connections], id: opts[:id])
      install_signal_handlers(backend)
      $stderr.write("swiftiply_rack[#{Process.pid}]: serving #{opts[:config]} on " \
                    "#{opts[:connections]} connection#{opts[:connections] == 1 ? "" : "s"} to #{host}:#{port}\n")
      backend.run
      $stderr.write("swiftiply_rack[#{Process.pid}]: stopped\n")
      0
    end

    def parse(argv)
      opts = {
        connect: ENV.fetch("SWIFTIPLY", "").empty? ? DEFAULT_ADDRESS : ENV["SWIFTIPLY"],
        key: ENV.fetch("SWIFTIPLY_KEY", ""),
        connections: 4,
        id: nil,
      }
      parser = OptionParser.new do |o|
        o.banner = "usage: ruby swiftiply_rack.rb [options] [CONFIG.ru]\n" \
                   "Serves a Rack app as Swiftiply backends (connections *to* the proxy)."
        o.on("--connect HOST:PORT", "the section's outgoing address (env SWIFTIPLY; default #{DEFAULT_ADDRESS})") { |v| opts[:connect] = v }
        o.on("--key KEY", "the section's key (env SWIFTIPLY_KEY; default none)") { |v| opts[:key] = v }
        o.on("--connections N", Integer, "connections to hold, one thread each (default 4)") { |v| opts[:connections] = v }
        o.on("--id ID12", "backend id, exactly 12 printable ASCII characters (default: pid + index in hex)") { |v| opts[:id] = v }
        o.on("-h", "--help", "this text") do
          puts o
          return nil
        end
      end
      rest = parser.parse(argv)
      raise ArgumentError, "one CONFIG.ru at most (got #{rest.join(' ')})" if rest.size > 1

      opts[:config] = rest.first || "config.ru"
      raise ArgumentError, "no such file: #{opts[:config]}" unless File.file?(opts[:config])
      raise ArgumentError, "--connections must be at least 1" if opts[:connections] < 1
      raise ArgumentError, "--key must be at most 255 bytes" if opts[:key].bytesize > 255
      if opts[:id] && !RackBackend.valid_id?(opts[:id])
        raise ArgumentError, "--id must be exactly 12 printable ASCII characters (got #{opts[:id].inspect})"
      end

      opts
    end

    # First TERM/INT: stop taking requests, finish those in flight, exit 0.
    # A second one: exit at once.
    def install_signal_handlers(backend)
      %w[TERM INT].each do |sig|
        Signal.trap(sig) do
          if backend.stopping?
            $stderr.syswrite("swiftiply_rack[#{Process.pid}]: SIG#{sig} again; exiting now\n")
            exit!(1)
          end
          $stderr.syswrite("swiftiply_rack[#{Process.pid}]: SIG#{sig}: finishing requests in flight\n")
          backend.stop
        end
      end
    end
  end
end

exit(Swiftiply::RackCLI.main(ARGV)) if $PROGRAM_NAME == __FILE__
