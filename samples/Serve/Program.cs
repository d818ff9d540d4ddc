// DoctorGlm.Serve — the fine-tuned doctor behind an OpenAI-compatible HTTP API, for the applications of a hospital's
// network: POST /v1/chat/completions (JSON or server-sent events), GET /v1/models, GET /health. Every request goes
// through one GlmBatchScheduler, so concurrent users are decoded together (continuous batching). The protocol itself
// is the library's OpenAiChatCompletions; this file only loads the model and wires HTTP to it.
using System.CommandLine;
using System.Text;
using DoctorGlm.Engine;
using DoctorGlm.Engine.Backends;
using DoctorGlm.Engine.Generation;
using DoctorGlm.Engine.Models.ChatGlm;
using DoctorGlm.Engine.Serving;
using DoctorGlm.Engine.Tokenization;
using DoctorGlm.Engine.Training;

var modelOpt = new Option<DirectoryInfo>("--model", "-m") { Description = "HF ChatGLM folder (config.json, weights, ice_text.model)", Required = true };
var adapterOpt = new Option<string?>("--adapter") { Description = "LoRA adapter folder (merged while loading) or P-Tuning v2 checkpoint" };
var quantizeOpt = new Option<int?>("--quantize") { Description = "8 or 4: INT8/INT4 block linears, quantized while loading" };
var dtypeOpt = new Option<string>("--dtype") { Description = "auto, fp32, bf16 or fp16 weight matrices (auto: fp32, but bf16 beside INT8/INT4 block linears)", DefaultValueFactory = _ => "auto" };
var deviceOpt = new Option<string>("--device") { Description = "cpu, cuda, cuda:N or auto", DefaultValueFactory = _ => "cpu" };
var batchOpt = new Option<int>("--batch") { Description = "most requests decoded together", DefaultValueFactory = _ => 8 };
var maxWaitingOpt = new Option<int>("--max-waiting") { Description = "most requests waiting for a place in the batch; more are refused with 503 and Retry-After", DefaultValueFactory = _ => 64 };
var urlsOpt = new Option<string>("--urls") { Description = "where to listen", DefaultValueFactory = _ => "http://127.0.0.1:8000" };
var nameOpt = new Option<string>("--name") { Description = "model id reported to clients", DefaultValueFactory = _ => "doctorglm" };
var apiKeyOpt = new Option<string?>("--api-key")
{
    Description = "require 'Authorization: Bearer KEY' on /v1/ (default: the DOCTORGLM_API_KEY variable, which keeps the key out of the process list; neither: no key)",
};
var root = new RootCommand("DoctorGlm.Serve — an OpenAI-compatible chat API over a ChatGLM model, with continuous batching.")
{
    modelOpt, adapterOpt, quantizeOpt, dtypeOpt, deviceOpt, batchOpt, maxWaitingOpt, urlsOpt, nameOpt, apiKeyOpt,
};
root.SetAction(async (parse, ct) =>
{
    string dir = parse.GetValue(modelOpt)!.FullName;
    string? apiKey = parse.GetValue(apiKeyOpt) ?? (Environment.GetEnvironmentVariable("DOCTORGLM_API_KEY") is { Length: > 0 } k ? k : null);
    string? adapter = parse.GetValue(adapterOpt);
    int? bits = parse.GetValue(quantizeOpt);
    GlmModel model;
    ChatGlmTokenizer tok;
    Device device;
    try
    {
        if (bits is not null and not (8 or 4)) throw new ArgumentException($"--quantize {bits}: use 8 or 4");
        if (parse.GetValue(batchOpt) < 1) throw new ArgumentException("--batch must be at least 1");
        if (parse.GetValue(maxWaitingOpt) < 0) throw new ArgumentException("--max-waiting must be at least 0");
        if (apiKey is not null && (apiKey.Length == 0 || apiKey.Any(char.IsWhiteSpace))) throw new ArgumentException("--api-key (or DOCTORGLM_API_KEY) is empty or holds white space");
        device = DeviceSelector.Resolve(parse.GetValue(deviceOpt)!, out string? note);
        if (note is not null) Console.Error.WriteLine(note);
        // A LoRA adapter (a folder with adapter_config.json) is merged while the weights stream in; a P-Tuning prefix attaches after.
        bool lora = adapter is not null && File.Exists(Path.Combine(adapter, "adapter_config.json"));
        model = GlmModel.FromPretrained(dir, new GlmLoadOptions
        {
            WeightDType = TrainerOptions.ParseWeightDType(parse.GetValue(dtypeOpt)!, bits ?? 0, dir),
            QuantizeBits = bits ?? 0,
            MergeLoraAdapter = lora ? adapter : null,
        }, device);
        if (adapter is not null && !lora) model.LoadPrefixEncoder(adapter);
        tok = ChatGlmTokenizer.FromPretrained(dir, model.Config.NumImageTokens);
    }
    catch (Exception e) when (e is IOException or InvalidDataException or InvalidOperationException or ArgumentException or NotSupportedException)
    {
        Console.Error.WriteLine($"error: {e.Message}");
        return 1;
    }

    using (model)
    {
        await using var scheduler = new GlmBatchScheduler(new GlmChat(model, tok), parse.GetValue(batchOpt), parse.GetValue(maxWaitingOpt));
        var api = new OpenAiChatCompletions(scheduler, parse.GetValue(nameOpt)!, apiKey);
        var builder = WebApplication.CreateSlimBuilder();
        builder.WebHost.UseUrls(parse.GetValue(urlsOpt)!);
        var app = builder.Build();
        app.MapGet("/health", () => Results.Text("ok")); // open: a load balancer's probe carries no key
        // Every /v1/ request shows its key first; a refusal is OpenAI's 401 body.
        app.Use(async (http, next) =>
        {
            if (http.Request.Path.StartsWithSegments("/v1"))
                try { api.Authorize(http.Request.Headers.Authorization.Count == 0 ? null : http.Request.Headers.Authorization.ToString()); }
                catch (ChatCompletionException e)
                {
                    http.Response.Headers.WWWAuthenticate = "Bearer";
                    await WriteError(http, e);
                    return;
                }
            await next(http);
        });
        app.MapGet("/v1/models", () => Results.Text(api.Models(), "application/json"));
        app.MapPost("/v1/chat/completions", async (HttpContext http) =>
        {
            var aborted = http.RequestAborted; // a client that hangs up frees its row in the batch
            string body = await new StreamReader(http.Request.Body, Encoding.UTF8).ReadToEndAsync(aborted);
            ChatCompletionRequest request;
            try { request = api.Parse(body); }
            catch (ChatCompletionException e)
            {
                await WriteError(http, e);
                return;
            }
            if (!request.Stream)
            {
                string json;
                try { json = await api.CompleteAsync(request, aborted); }
                catch (ChatCompletionException e)
                {
                    await WriteError(http, e);
                    return;
                }
                http.Response.ContentType = "application/json";
                await http.Response.WriteAsync(json, aborted);
                return;
            }
            // The first chunk decides between an error answer (e.g. 503, the model busy) and the event stream.
            await using var chunks = api.StreamAsync(request, aborted).GetAsyncEnumerator(aborted);
            bool more;
            try { more = await chunks.MoveNextAsync(); }
            catch (ChatCompletionException e)
            {
                await WriteError(http, e);
                return;
            }
            http.Response.ContentType = "text/event-stream";
            http.Response.Headers.CacheControl = "no-cache";
            for (; more; more = await chunks.MoveNextAsync())
            {
                await http.Response.WriteAsync($"data: {chunks.Current}\n\n", aborted);
                await http.Response.Body.FlushAsync(aborted);
            }
        });
        Console.WriteLine($"ChatGLM ({model.Config.NumLayers} layers, hidden {model.Config.HiddenSize}) on {device}, up to {scheduler.MaxBatch} requests decoded together.");
        Console.WriteLine($"OpenAI-compatible API at {parse.GetValue(urlsOpt)}/v1 (model \"{api.ModelName}\"{(api.RequiresApiKey ? ", API key required" : "")}); Ctrl+C stops.");
        await app.RunAsync(ct);
    }
    return 0;
});
return await root.Parse(args).InvokeAsync();

static Task WriteError(HttpContext http, ChatCompletionException e)
{
    http.Response.StatusCode = e.Status;
    if (e.Status == 503) http.Response.Headers.RetryAfter = "1";
    http.Response.ContentType = "application/json";
    return http.Response.WriteAsync(e.ToJson(), http.RequestAborted);
}
