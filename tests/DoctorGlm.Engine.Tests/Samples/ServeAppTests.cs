using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using DoctorGlm.Engine.Generation;
using DoctorGlm.Engine.Tests.Models;

namespace DoctorGlm.Engine.Tests.Samples;

/// <summary>
/// The Serve sample as a process on a free local port, over the chat fixture's model folder: the routes, a JSON answer
/// equal to the library's, server-sent events that add up to it, a 400 with OpenAI's error body, concurrent requests,
/// and shutdown on SIGTERM. Skipped outside a checkout (the GPU runner's published tests have no Serve build).
/// </summary>
public sealed class ServeAppTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "doctorglm-serve-" + Guid.NewGuid().ToString("N"));

    public ServeAppTests() => ChatModelFixture.WriteFolder(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static int FreePort()
    {
        using var l = new TcpListener(IPAddress.Loopback, 0);
        l.Start();
        return ((IPEndPoint)l.LocalEndpoint).Port;
    }

    [Fact]
    public async Task Serves_the_openai_chat_api_and_stops_on_sigterm()
    {
        var ct = TestContext.Current.CancellationToken;
        // The key comes the variable's way (--api-key is the other).
        using var server = ServeProcess.Start(_dir, ["--batch", "3", "--name", "fixture"], ("DOCTORGLM_API_KEY", "sk-test-serve"));
        try
        {
            using var http = new HttpClient { BaseAddress = new Uri(server.Url), Timeout = TimeSpan.FromMinutes(2) };
            await server.WaitForHealthAsync(http, ct);
            // /health answered without a key; /v1/ wants it.
            using (var refused = await http.GetAsync("/v1/models", ct))
            {
                Assert.Equal(HttpStatusCode.Unauthorized, refused.StatusCode);
                using var doc = JsonDocument.Parse(await refused.Content.ReadAsStringAsync(ct));
                Assert.Equal("invalid_api_key", doc.RootElement.GetProperty("error").GetProperty("code").GetString());
            }
            http.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Bearer", "sk-test-serve");
            Assert.Contains("\"fixture\"", await http.GetStringAsync("/v1/models", ct));

            const string body = """{"messages": [{"role": "user", "content": "头疼怎么办"}], "temperature": 0, "max_tokens": 16, "repetition_penalty": 5}""";
            var tok = ChatModelFixture.Tokenizer();
            using var model = ChatModelFixture.Model(tok);
            var (expected, _) = new GlmChat(model, tok).Chat("头疼怎么办", null, new GenerationOptions { DoSample = false, MaxNewTokens = 16, RepetitionPenalty = 5 }, ct);

            async Task<string> Post(string json)
            {
                using var r = await http.PostAsync("/v1/chat/completions", new StringContent(json, Encoding.UTF8, "application/json"), ct);
                Assert.Equal(HttpStatusCode.OK, r.StatusCode);
                return await r.Content.ReadAsStringAsync(ct);
            }
            // Four at once (the batch holds three): every answer is the library's.
            var answers = await Task.WhenAll(Enumerable.Range(0, 4).Select(_ => Post(body)));
            foreach (var a in answers)
            {
                using var doc = JsonDocument.Parse(a);
                Assert.Equal(expected, doc.RootElement.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString());
            }

            using (var r = await http.PostAsync("/v1/chat/completions", new StringContent(body.Replace("\"temperature\"", "\"stream\": true, \"temperature\""), Encoding.UTF8, "application/json"), ct))
            {
                Assert.Equal("text/event-stream", r.Content.Headers.ContentType?.MediaType);
                var events = (await r.Content.ReadAsStringAsync(ct)).Split("\n\n", StringSplitOptions.RemoveEmptyEntries);
                Assert.All(events, e => Assert.StartsWith("data: ", e));
                Assert.Equal("data: [DONE]", events[^1]);
                string text = string.Concat(events[..^1].Select(e =>
                {
                    using var doc = JsonDocument.Parse(e["data: ".Length..]);
                    var delta = doc.RootElement.GetProperty("choices")[0].GetProperty("delta");
                    return delta.TryGetProperty("content", out var c) ? c.GetString() : "";
                }));
                Assert.Equal(expected, text);
            }

            using (var bad = await http.PostAsync("/v1/chat/completions", new StringContent("""{"messages": [], "n": 1}""", Encoding.UTF8, "application/json"), ct))
            {
                Assert.Equal(HttpStatusCode.BadRequest, bad.StatusCode);
                using var doc = JsonDocument.Parse(await bad.Content.ReadAsStringAsync(ct));
                Assert.Equal("messages", doc.RootElement.GetProperty("error").GetProperty("param").GetString());
            }
        }
        finally { server.StopAndAssert(); }
    }

    /// <summary>
    /// A batch of one with no waiting allowed (<c>--batch 1 --max-waiting 0</c>): of six requests sent at once, the one
    /// that finds the place free is answered and the others are refused at once with 503, <c>Retry-After</c> and
    /// OpenAI's <c>server_error</c> body (code <c>overloaded</c>), streamed or not; every answer given is the library's.
    /// </summary>
    [Fact]
    public async Task A_busy_server_answers_503_with_retry_after()
    {
        var ct = TestContext.Current.CancellationToken;
        using var server = ServeProcess.Start(_dir, ["--batch", "1", "--max-waiting", "0"]);
        try
        {
            using var http = new HttpClient { BaseAddress = new Uri(server.Url), Timeout = TimeSpan.FromMinutes(2) };
            await server.WaitForHealthAsync(http, ct);
            const string body = """{"messages": [{"role": "user", "content": "头疼怎么办"}], "temperature": 0, "max_tokens": 200, "repetition_penalty": 1.1}""";
            var tok = ChatModelFixture.Tokenizer();
            using var model = ChatModelFixture.Model(tok);
            var (expected, _) = new GlmChat(model, tok).Chat("头疼怎么办", null, new GenerationOptions { DoSample = false, MaxNewTokens = 200, RepetitionPenalty = 1.1f }, ct);
            async Task<(HttpStatusCode Status, string? RetryAfter, string Text)> Post(bool stream)
            {
                using var r = await http.PostAsync("/v1/chat/completions",
                    new StringContent(stream ? body.Replace("\"temperature\"", "\"stream\": true, \"temperature\"") : body, Encoding.UTF8, "application/json"), ct);
                return (r.StatusCode, r.Headers.RetryAfter?.ToString(), await r.Content.ReadAsStringAsync(ct));
            }
            var answers = await Task.WhenAll(Enumerable.Range(0, 6).Select(i => Post(stream: i % 2 == 1)));
            var refused = answers.Where(a => a.Status == HttpStatusCode.ServiceUnavailable).ToArray();
            var served = answers.Where(a => a.Status == HttpStatusCode.OK).ToArray();
            Assert.Equal(answers.Length, refused.Length + served.Length);
            Assert.NotEmpty(refused);
            Assert.NotEmpty(served);
            foreach (var (_, retryAfter, text) in refused)
            {
                Assert.Equal("1", retryAfter);
                using var doc = JsonDocument.Parse(text);
                Assert.Equal("overloaded", doc.RootElement.GetProperty("error").GetProperty("code").GetString());
                Assert.Equal("server_error", doc.RootElement.GetProperty("error").GetProperty("type").GetString());
            }
            // A JSON answer's message, or a stream's deltas put together.
            static string? Content(string text)
            {
                if (!text.StartsWith("data: ", StringComparison.Ordinal))
                {
                    using var doc = JsonDocument.Parse(text);
                    return doc.RootElement.GetProperty("choices")[0].GetProperty("message").GetProperty("content").GetString();
                }
                return string.Concat(text.Split("\n\n", StringSplitOptions.RemoveEmptyEntries)[..^1].Select(e =>
                {
                    using var doc = JsonDocument.Parse(e["data: ".Length..]);
                    var delta = doc.RootElement.GetProperty("choices")[0].GetProperty("delta");
                    return delta.TryGetProperty("content", out var c) ? c.GetString() : "";
                }));
            }
            foreach (var (_, _, text) in served) Assert.Equal(expected, Content(text));
            // Once the place is free again, a request is answered.
            Assert.Equal(HttpStatusCode.OK, (await Post(stream: false)).Status);
        }
        finally { server.StopAndAssert(); }
    }

    /// <summary>The Serve sample as a child process on a free port, with its output kept for failure messages.</summary>
    private sealed class ServeProcess : IDisposable
    {
        private readonly Process _process;
        private readonly StringBuilder _log = new();

        private ServeProcess(Process process, string url)
        {
            _process = process;
            Url = url;
        }

        public string Url { get; }

        public static ServeProcess Start(string modelDir, string[] args, params (string Name, string Value)[] environment)
        {
            string dll = Checkout.SampleDll("Serve", "DoctorGlm.Serve");
            string url = $"http://127.0.0.1:{FreePort()}";
            var psi = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
            {
                RedirectStandardOutput = true,
                RedirectStandardError = true,
            };
            foreach (var a in new[] { "exec", dll, "--model", modelDir, "--urls", url }.Concat(args)) psi.ArgumentList.Add(a);
            psi.Environment["DOCTORGLM_TEST_CUDA"] = "0";
            foreach (var (name, value) in environment) psi.Environment[name] = value;
            var server = new ServeProcess(Process.Start(psi)!, url);
            // The output arrives on other threads while a message is built: it is read under the same lock (an
            // unlocked ToString racing an append once threw from a finally and hid the test's outcome).
            server._process.OutputDataReceived += (_, e) => { lock (server._log) server._log.AppendLine(e.Data); };
            server._process.ErrorDataReceived += (_, e) => { lock (server._log) server._log.AppendLine(e.Data); };
            server._process.BeginOutputReadLine();
            server._process.BeginErrorReadLine();
            return server;
        }

        public string Log() { lock (_log) return _log.ToString(); }

        public async Task WaitForHealthAsync(HttpClient http, CancellationToken ct)
        {
            var started = Stopwatch.StartNew();
            while (true)
            {
                Assert.False(_process.HasExited, $"the server exited: {Log()}");
                try { if ((await http.GetStringAsync("/health", ct)) == "ok") return; }
                catch (HttpRequestException) { }
                Assert.True(started.Elapsed < TimeSpan.FromSeconds(60), $"the server did not answer /health in 60 s: {Log()}");
                await Task.Delay(100, ct);
            }
        }

        /// <summary>SIGTERM, then the server must exit within 30 s.</summary>
        public void StopAndAssert()
        {
            if (!_process.HasExited) Process.Start("kill", ["-TERM", _process.Id.ToString()])!.WaitForExit();
            Assert.True(_process.WaitForExit(TimeSpan.FromSeconds(30)), $"the server did not stop on SIGTERM: {Log()}");
        }

        public void Dispose()
        {
            if (!_process.HasExited) _process.Kill(entireProcessTree: true);
            _process.Dispose();
        }
    }
}
