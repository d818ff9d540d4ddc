using DoctorGlm.Engine.Generation;
using DoctorGlm.Engine.Models.ChatGlm;

namespace DoctorGlm.Engine.Tests.Models;

/// <summary>
/// Continuous batching (<see cref="GlmBatchScheduler"/>): requests that arrive while others decode join the running
/// batch (<see cref="GlmKvCache.Append"/>), each with its own options, and each answer must be the one
/// <see cref="GlmGenerator.Generate"/> gives the prompt alone (itself checked against the PyTorch oracle in
/// <see cref="GenerationTests"/>); rows that finish, are cancelled or are abandoned leave the batch.
/// </summary>
public sealed class GlmBatchSchedulerTests(ITestOutputHelper output)
{
    private static int[] Prompt(string name)
    {
        using var f = ModelFixture.Open("generation");
        return f.Load($"{name}.prompt").ToIntArray();
    }

    private static async Task<List<int>> Collect(IAsyncEnumerable<int> tokens, List<int>? into = null)
    {
        var list = into ?? [];
        await foreach (int t in tokens) list.Add(t);
        return list;
    }

    /// <summary>With an fp32 cache, and with a bf16 cache (the GPU's default for 16-bit weights: the appended and
    /// trimmed buffers keep its dtype).</summary>
    [Theory]
    [InlineData(DType.F32)]
    [InlineData(DType.BF16)]
    public async Task Requests_joining_a_running_batch_get_the_answers_they_get_alone(DType cache)
    {
        using var model = ModelFixture.LoadModel();
        model.KvCacheDType = cache;
        var gen = new GlmGenerator(model);
        var ct = TestContext.Current.CancellationToken;
        // A decodes long enough for B and C to join it; D waits for a free row (three at most); C samples.
        (string Name, GenerationOptions Options)[] requests =
        [
            ("p0", new() { DoSample = false, RepetitionPenalty = 10f, MaxNewTokens = 300 }),
            ("p1", new() { DoSample = false, RepetitionPenalty = 10f, MaxNewTokens = 12 }),
            ("turn2", new() { Temperature = 3f, TopP = 1f, TopK = 0, RepetitionPenalty = 2f, Seed = 11, MaxNewTokens = 40 }),
            ("p2", new() { DoSample = false, RepetitionPenalty = 3f, MaxNewTokens = 25 }),
        ];
        var expected = requests.Select(r => gen.Generate(Prompt(r.Name), r.Options, ct)).ToArray();

        await using var scheduler = new GlmBatchScheduler(gen, maxBatch: 3);
        // The loop holds its first step with A live until B, C and D are queued: they must join A's running batch.
        using var queued = new ManualResetEventSlim(false);
        scheduler.BeforeStep = live => { if (live > 0) queued.Wait(ct); };
        var first = new List<int>();
        var a = scheduler.StreamTokens(Prompt("p0"), requests[0].Options, ct).GetAsyncEnumerator(ct);
        Assert.True(await a.MoveNextAsync());
        first.Add(a.Current);
        var others = requests.Skip(1).Select(r => Collect(scheduler.StreamTokens(Prompt(r.Name), r.Options, ct))).ToArray(); // queued on return
        queued.Set();
        while (await a.MoveNextAsync()) first.Add(a.Current);
        await a.DisposeAsync();
        var answers = new[] { first }.Concat(await Task.WhenAll(others)).ToArray();
        for (int i = 0; i < requests.Length; i++)
        {
            output.WriteLine($"{requests[i].Name}: {answers[i].Count} tokens");
            Assert.Equal(expected[i], answers[i]);
        }
        Assert.True(scheduler.Joins >= 1, "no request joined a running batch");
    }

    [Fact]
    public async Task A_cancelled_or_abandoned_request_leaves_the_batch_and_the_others_finish()
    {
        using var model = ModelFixture.LoadModel();
        var gen = new GlmGenerator(model);
        var ct = TestContext.Current.CancellationToken;
        var longRun = new GenerationOptions { DoSample = false, RepetitionPenalty = 10f, MaxNewTokens = 1000 };
        var shortRun = new GenerationOptions { DoSample = false, RepetitionPenalty = 10f, MaxNewTokens = 30 };
        var expected = gen.Generate(Prompt("p1"), shortRun, ct);
        await using var scheduler = new GlmBatchScheduler(gen, maxBatch: 4);
        // The loop holds its first step with a live row until the test has cancelled that row: it is cancelled mid-answer.
        using var cancelledNow = new ManualResetEventSlim(false);
        scheduler.BeforeStep = live => { if (live > 0) cancelledNow.Wait(ct); };

        using var cancel = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var cancelled = new List<int>();
        var cancelledTask = Collect(scheduler.StreamTokens(Prompt("p0"), longRun, cancel.Token), cancelled);
        while (Volatile.Read(ref cancelled) is { Count: 0 }) await Task.Delay(1, ct); // its prompt pass gave one token
        cancel.Cancel();
        cancelledNow.Set();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(() => cancelledTask);
        Assert.Single(cancelled);

        var abandoned = new List<int>();
        await foreach (int t in scheduler.StreamTokens(Prompt("p2"), longRun, ct))
        {
            abandoned.Add(t);
            if (abandoned.Count == 5) break; // leaving the enumeration frees the row
        }
        Assert.Equal(expected, await Collect(scheduler.StreamTokens(Prompt("p1"), shortRun, ct)));
        for (int i = 0; i < 400 && scheduler.Active > 0; i++) await Task.Delay(5, ct);
        Assert.Equal(0, scheduler.Active);
    }

    /// <summary>
    /// Forty requests from parallel callers with random options, arrival times and cancellations, through a batch of
    /// five: every request that is not cancelled gets exactly its single-generation answer, every cancelled one ends
    /// with <see cref="OperationCanceledException"/>, and the batch ends empty.
    /// </summary>
    [Fact]
    public async Task Many_callers_with_random_options_arrivals_and_cancellations_each_get_their_own_answer()
    {
        using var model = ModelFixture.LoadModel();
        var gen = new GlmGenerator(model);
        var ct = TestContext.Current.CancellationToken;
        string[] names = ["p0", "p1", "p2", "turn2"];
        var rng = new Random(3);
        var jobs = Enumerable.Range(0, 40).Select(i => (
            Prompt: Prompt(names[rng.Next(names.Length)]),
            Options: new GenerationOptions
            {
                DoSample = rng.Next(2) == 0, Seed = (ulong)i, Temperature = 2f, TopP = 1f, TopK = 0,
                RepetitionPenalty = 1f + rng.Next(10), MaxNewTokens = 1 + rng.Next(40),
            },
            DelayMs: rng.Next(30),
            CancelAfter: rng.Next(4) == 0 ? 1 + rng.Next(5) : -1)).ToArray();
        var expected = jobs.Select(j => gen.Generate(j.Prompt, j.Options, ct)).ToArray();
        await using var scheduler = new GlmBatchScheduler(gen, maxBatch: 5);
        var results = await Task.WhenAll(jobs.Select(async j =>
        {
            await Task.Delay(j.DelayMs, ct);
            using var cancel = CancellationTokenSource.CreateLinkedTokenSource(ct);
            var got = new List<int>();
            try
            {
                await foreach (int t in scheduler.StreamTokens(j.Prompt, j.Options, cancel.Token))
                {
                    got.Add(t);
                    if (got.Count == j.CancelAfter) cancel.Cancel();
                }
                return (Tokens: got, Cancelled: false);
            }
            catch (OperationCanceledException) when (j.CancelAfter > 0) { return (Tokens: got, Cancelled: true); }
        }));
        for (int i = 0; i < jobs.Length; i++)
        {
            if (results[i].Cancelled) Assert.Equal(expected[i][..results[i].Tokens.Count], results[i].Tokens);
            else Assert.Equal(expected[i], results[i].Tokens);
        }
        for (int i = 0; i < 400 && scheduler.Active > 0; i++) await Task.Delay(5, ct);
        Assert.Equal(0, scheduler.Active);
        output.WriteLine($"{results.Count(r => r.Cancelled)} cancelled, {scheduler.Joins} joins");
    }

    [Fact]
    public async Task A_failing_step_ends_its_requests_with_the_error_and_the_next_ones_are_served()
    {
        using var model = ModelFixture.LoadModel();
        var gen = new GlmGenerator(model);
        var ct = TestContext.Current.CancellationToken;
        var o = new GenerationOptions { DoSample = false, RepetitionPenalty = 10f, MaxNewTokens = 12 };
        await using var scheduler = new GlmBatchScheduler(gen, maxBatch: 2);
        int steps = 0;
        scheduler.BeforeStep = live => { if (++steps == 4) throw new InsufficientExecutionStackException("injected"); };
        var failed = new List<int>();
        var e = await Assert.ThrowsAsync<InsufficientExecutionStackException>(() => Collect(scheduler.StreamTokens(Prompt("p0"), o, ct), failed));
        Assert.Equal("injected", e.Message);
        Assert.Equal(3, failed.Count); // the prompt pass and two steps got through
        // Each enumeration of a request is a request of its own.
        var again = scheduler.StreamTokens(Prompt("p1"), o, ct);
        Assert.Equal(gen.Generate(Prompt("p1"), o, ct), await Collect(again));
        Assert.Equal(gen.Generate(Prompt("p1"), o, ct), await Collect(again));
    }

    /// <summary>
    /// maxWaiting: with the batch full (one place) and two requests waiting, a third is refused at the call with
    /// <see cref="GlmSchedulerBusyException"/>; the waiting ones are served with their own answers, and once the queue
    /// has drained new requests are taken again.
    /// </summary>
    [Fact]
    public async Task Requests_beyond_the_waiting_bound_are_refused_and_the_rest_are_served()
    {
        using var model = ModelFixture.LoadModel();
        var gen = new GlmGenerator(model);
        var ct = TestContext.Current.CancellationToken;
        var o = new GenerationOptions { DoSample = false, RepetitionPenalty = 3f, MaxNewTokens = 6 };
        string[] names = ["p0", "p1", "p2", "turn2"];
        var expected = names.Select(n => gen.Generate(Prompt(n), o, ct)).ToArray();

        await using var scheduler = new GlmBatchScheduler(gen, maxBatch: 1, maxWaiting: 2);
        using var gate = new ManualResetEventSlim(false);
        scheduler.BeforeStep = live => { if (live > 0) gate.Wait(ct); };
        var a = scheduler.StreamTokens(Prompt("p0"), o, ct).GetAsyncEnumerator(ct);
        var first = new List<int>();
        Task<List<int>>[] waiting;
        try
        {
            Assert.True(await a.MoveNextAsync()); // A holds the one place; the loop now waits at its next step
            first.Add(a.Current);
            waiting = [.. new[] { "p1", "p2" }.Select(n => Collect(scheduler.StreamTokens(Prompt(n), o, ct)))];
            Assert.Equal(2, scheduler.Waiting);
            var busy = Assert.Throws<GlmSchedulerBusyException>(() => scheduler.StreamTokens(Prompt("turn2"), o, ct));
            Assert.Equal(2, busy.Waiting);
            Assert.Contains("busy", busy.Message);
        }
        finally { gate.Set(); } // a failed assertion must not leave the loop waiting (the disposal would hang)
        while (await a.MoveNextAsync()) first.Add(a.Current);
        await a.DisposeAsync();
        Assert.Equal(expected[0], first);
        Assert.Equal(expected[1], await waiting[0]);
        Assert.Equal(expected[2], await waiting[1]);
        Assert.Equal(0, scheduler.Waiting);
        Assert.Equal(expected[3], await Collect(scheduler.StreamTokens(Prompt("turn2"), o, ct)));
        Assert.Throws<ArgumentOutOfRangeException>(() => new GlmBatchScheduler(gen, maxWaiting: -1));
    }

    [Fact]
    public async Task Bad_requests_throw_at_the_call_and_disposal_ends_unfinished_ones()
    {
        using var model = ModelFixture.LoadModel();
        var gen = new GlmGenerator(model);
        var ct = TestContext.Current.CancellationToken;
        var scheduler = new GlmBatchScheduler(gen, maxBatch: 2);
        Assert.Contains("<sop>", Assert.Throws<ArgumentException>(() => scheduler.StreamTokens([11, 27, 191], null, ct)).Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => scheduler.StreamTokens(Prompt("p0"), new GenerationOptions { TopP = 2f }, ct));
        Assert.Throws<ArgumentOutOfRangeException>(() => new GlmBatchScheduler(gen, maxBatch: 0));
        await Assert.ThrowsAsync<InvalidOperationException>(() => scheduler.ChatAsync("你好", null, null, ct)); // no tokenizer

        // The loop holds its first step with a live row until disposal has begun: the row is still running then.
        using var disposing = new ManualResetEventSlim(false);
        scheduler.BeforeStep = live => { if (live > 0) disposing.Wait(ct); };
        var running = new List<int>();
        var task = Collect(scheduler.StreamTokens(Prompt("p0"), new GenerationOptions { DoSample = false, MaxNewTokens = 400 }, ct), running);
        while (Volatile.Read(ref running) is { Count: 0 }) await Task.Delay(1, ct);
        var disposal = scheduler.DisposeAsync();
        disposing.Set();
        await disposal;
        await Assert.ThrowsAsync<ObjectDisposedException>(() => task);
        Assert.InRange(running.Count, 1, 2); // the prompt pass's token, and at most the step that was under way
        Assert.Throws<ObjectDisposedException>(() => scheduler.StreamTokens(Prompt("p0"), null, ct));
    }
}
