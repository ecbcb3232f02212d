# frozen_string_literal: true
#
# A small Rack app to try swiftiply_rack.rb with (and the one tests/rack.rs
# runs):
#
#   ruby clients/ruby/swiftiply_rack.rb --connect 127.0.0.1:30000 clients/ruby/example/config.ru
#
#   /hello         "hello!\n"
#   /stream        five chunks from a body with no length (packet mode);
#                  ?ms=N pauses N ms before each
#   /echo          (POST) the request body back
#   /env           a few Rack env values, one NAME=value per line
#   /slow?ms=N     answers after N ms (at most 10000)
#   /boom          raises (the handler answers 500 and keeps serving)
#
# Header names are lower case so the app is valid under Rack 2 and Rack 3.

# A streamed body: no Content-Length, chunks come from #each.
class FiveChunks
  def initialize(pause)
    @pause = pause
  end

  def each
    1.upto(5) do |i|
      sleep(@pause) if @pause.positive?
      yield "chunk #{i}\n"
    end
  end
end

ENV_KEYS = %w[
  REQUEST_METHOD PATH_INFO QUERY_STRING HTTP_HOST REMOTE_ADDR
  SERVER_NAME SERVER_PORT SERVER_PROTOCOL HTTP_X_FORWARDED_FOR
].freeze

TEXT = { "content-type" => "text/plain" }.freeze

def millis(env, default)
  ms = Rack::Utils.parse_query(env["QUERY_STRING"])["ms"]
  ms = ms.is_a?(String) && ms.match?(/\A\d+\z/) ? ms.to_i : default
  [ms, 10_000].min
end

app = lambda do |env|
  case env["PATH_INFO"]
  when "/hello"
    [200, TEXT.dup, ["hello!\n"]]
  when "/stream"
    [200, TEXT.dup, FiveChunks.new(millis(env, 0) / 1000.0)]
  when "/echo"
    next [405, TEXT.merge("allow" => "POST"), ["POST only\n"]] unless env["REQUEST_METHOD"] == "POST"

    body = env["rack.input"].read
    [200, { "content-type" => env["CONTENT_TYPE"] || "application/octet-stream" }, [body]]
  when "/env"
    [200, TEXT.dup, [ENV_KEYS.map { |k| "#{k}=#{env[k]}\n" }.join]]
  when "/slow"
    ms = millis(env, 100)
    env["rack.errors"].puts("slow: start #{ms} ms")
    env["rack.errors"].flush
    sleep(ms / 1000.0)
    [200, TEXT.dup, ["slept #{ms} ms\n"]]
  when "/boom"
    raise "boom: this route always fails"
  else
    [404, TEXT.dup, ["not found: #{env['PATH_INFO']}\n"]]
  end
end

run app
