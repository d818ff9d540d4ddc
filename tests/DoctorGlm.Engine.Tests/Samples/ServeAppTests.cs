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
        string dll = Checkout.SampleDll("Serve", "DoctorGlm.Serve");
        int port = FreePort();
        string url = $"http://127.0.0.1:{port}";
        var psi = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        foreach (var a in new[] { "exec", dll, "--model", _dir, "--urls", url, "--batch", "3", "--name", "fixture" }) psi.ArgumentList.Add(a);
        psi.Environment["DOCTORGLM_TEST_CUDA"] = "0";
        psi.Environment["DOCTORGLM_API_KEY"] = "sk-test-serve"; // the variable's way (--api-key is the other)
        using var server = Process.Start(psi)!;
        var log = new StringBuilder();
        server.OutputDataReceived += (_, e) => { lock (log) log.AppendLine(e.Data); };
        server.ErrorDataReceived += (_, e) => { lock (log) log.AppendLine(e.Data); };
        // The server's output arrives on other threads while a message is built: read it under the same lock (an
        // unlocked ToString racing an append threw from the finally below and hid the test's outcome).
        string Log() { lock (log) return log.ToString(); }
        server.BeginOutputReadLine();
        server.BeginErrorReadLine();
        try
        {
            using var http = new HttpClient { BaseAddress = new Uri(url), Timeout = TimeSpan.FromMinutes(2) };
            var started = Stopwatch.StartNew();
            while (true)
            {
                Assert.False(server.HasExited, $"the server exited: {Log()}");
                try { if ((await http.GetStringAsync("/health", ct)) == "ok") break; }
                catch (HttpRequestException) { }
                Assert.True(started.Elapsed < TimeSpan.FromSeconds(60), $"the server did not answer /health in 60 s: {Log()}");
                await Task.Delay(100, ct);
            }
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
        finally
        {
            if (!server.HasExited) Process.Start("kill", ["-TERM", server.Id.ToString()])!.WaitForExit();
            Assert.True(server.WaitForExit(TimeSpan.FromSeconds(30)), $"the server did not stop on SIGTERM: {Log()}");
        }
    }
}
