using System.Runtime.CompilerServices;
using System.Threading.Channels;
using DoctorGlm.Engine.Autograd;
using DoctorGlm.Engine.Models.ChatGlm;

namespace DoctorGlm.Engine.Generation;

/// <summary>
/// Serves many conversations from one model by decoding them together (continuous batching): requests arrive from
/// any thread at any time; between two decoding steps the scheduler runs the prompt pass of those waiting (up to
/// <see cref="MaxBatch"/> rows in all), appends their KV cache to the running batch's
/// (<see cref="GlmKvCache.Append"/>, their pads hidden), and every step then reads the weights once for every live
/// row. A row that finishes — stop token, its limits, or its caller cancelling — leaves the batch at once
/// (<see cref="GlmKvCache.KeepRows"/>). Each request keeps its own options (sampling, penalty, limits, seed), and
/// its answer is the one <see cref="GlmGenerator.Generate"/> gives it alone, up to the rounding of the batched
/// products.
/// </summary>
/// <remarks>
/// One loop owns the model: nothing else may run it while the scheduler is alive. Steps run on the thread pool, each
/// inside its own <see cref="TensorScope"/> and no-grad region. Disposing stops the loop; unfinished requests end with
/// <see cref="ObjectDisposedException"/>.
/// </remarks>
public sealed class GlmBatchScheduler : IAsyncDisposable
{
    private readonly GlmGenerator _generator;
    private readonly Channel<Request> _incoming = Channel.CreateUnbounded<Request>(new UnboundedChannelOptions { SingleReader = true });
    private readonly CancellationTokenSource _stop = new();
    private readonly Task _loop;
    private GlmKvCache? _cache; // the running batch's past; only the loop touches it
    private int _active;
    private int _waiting;

    /// <summary>Starts the scheduling loop over <paramref name="chat"/>'s model and tokenizer (not owned): text and token requests.</summary>
    /// <param name="chat">The model and tokenizer to serve.</param>
    /// <param name="maxBatch">Most rows decoded together; more requests wait for a row to finish.</param>
    /// <param name="maxWaiting">Most requests waiting for a row beyond the free ones; a request that would wait
    /// beyond it is refused with <see cref="GlmSchedulerBusyException"/> (a server answers "busy, retry" instead of a
    /// wait that only grows). 0: only as many as there are free rows. Unbounded by default.</param>
    public GlmBatchScheduler(GlmChat chat, int maxBatch = 8, int maxWaiting = int.MaxValue)
        : this((chat ?? throw new ArgumentNullException(nameof(chat))).Generator, maxBatch, maxWaiting) => Chat = chat;

    /// <summary>Starts the scheduling loop over <paramref name="generator"/>'s model (not owned): token requests only.</summary>
    /// <param name="generator">The model to serve.</param>
    /// <param name="maxBatch">Most rows decoded together; more requests wait for a row to finish.</param>
    /// <param name="maxWaiting">Most requests waiting for a row (see the other constructor).</param>
    public GlmBatchScheduler(GlmGenerator generator, int maxBatch = 8, int maxWaiting = int.MaxValue)
    {
        _generator = generator ?? throw new ArgumentNullException(nameof(generator));
        ArgumentOutOfRangeException.ThrowIfLessThan(maxBatch, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxWaiting, 0);
        MaxBatch = maxBatch;
        MaxWaiting = maxWaiting;
        _loop = Task.Run(LoopAsync);
    }

    /// <summary>Most requests waiting for a row, beyond the batch's free rows, before new ones are refused.</summary>
    public int MaxWaiting { get; }

    /// <summary>Requests queued and not yet in the batch (a snapshot).</summary>
    public int Waiting => Volatile.Read(ref _waiting);

    /// <summary>The model and tokenizer served (null when made from a <see cref="GlmGenerator"/>: token requests only).</summary>
    public GlmChat? Chat { get; }

    private GlmChat ChatOrThrow => Chat ?? throw new InvalidOperationException("GlmBatchScheduler: made from a GlmGenerator, it has no tokenizer; use StreamTokens or construct it from a GlmChat");

    /// <summary>Most rows decoded together.</summary>
    public int MaxBatch { get; }

    /// <summary>Rows in the running batch, those joining it at the current step included (a snapshot).</summary>
    public int Active => Volatile.Read(ref _active);

    /// <summary>Times newly arrived prompts joined a batch that was already decoding (tests check the path ran).</summary>
    internal int Joins { get; private set; }

    /// <summary>
    /// Queues one chat turn (spec §7 prompt from <paramref name="history"/>) and streams the answer as text deltas that
    /// never split a character; they concatenate to what <see cref="GlmChat.Chat"/> returns for it alone. Bad options or
    /// an over-long prompt throw here, before anything is queued. Cancelling, or leaving the enumeration early, takes
    /// the row out of the batch.
    /// </summary>
    public async IAsyncEnumerable<string> StreamChat(string query, IReadOnlyList<ChatTurn>? history = null, GenerationOptions? options = null,
        [EnumeratorCancellation] CancellationToken cancellationToken = default)
    {
        var chat = ChatOrThrow;
        var streamer = new ResponseStreamer(chat.Tokenizer);
        await foreach (int id in StreamTokens(chat.EncodePrompt(query, history), options, cancellationToken).ConfigureAwait(false))
        {
            string delta = streamer.Push(id);
            if (delta.Length > 0) yield return delta;
        }
        string rest = streamer.Finish();
        if (rest.Length > 0) yield return rest;
    }

    /// <summary>One chat turn's post-processed answer (<see cref="StreamChat"/> collected).</summary>
    public async Task<string> ChatAsync(string query, IReadOnlyList<ChatTurn>? history = null, GenerationOptions? options = null,
        CancellationToken cancellationToken = default)
    {
        var chat = ChatOrThrow;
        var ids = new List<int>();
        await foreach (int id in StreamTokens(chat.EncodePrompt(query, history), options, cancellationToken).ConfigureAwait(false)) ids.Add(id);
        return ResponseText.Process(chat.Tokenizer.Decode([.. ids]));
    }

    /// <summary>
    /// Queues a prompt (token ids ending in [gMASK] &lt;sop&gt;) and streams its new token ids, the stop token
    /// excluded, as <see cref="GlmGenerator.Stream"/> would yield them. Validation errors throw at the call, and so
    /// does <see cref="GlmSchedulerBusyException"/> when <see cref="MaxWaiting"/> requests already wait beyond the
    /// batch's free rows (a bound that requests arriving at the same instant may overshoot by a few).
    /// </summary>
    public IAsyncEnumerable<int> StreamTokens(IReadOnlyList<int> prompt, GenerationOptions? options = null, CancellationToken cancellationToken = default)
    {
        ArgumentNullException.ThrowIfNull(prompt);
        ObjectDisposedException.ThrowIf(_stop.IsCancellationRequested, this);
        // Free places take requests at the next step: only those beyond them wait.
        if (Waiting - (MaxBatch - Active) >= MaxWaiting) throw new GlmSchedulerBusyException(Waiting, MaxBatch);
        var o = options ?? new GenerationOptions();
        o.Validate();
        _generator.CheckModel();
        _generator.CheckPrompt(prompt, o, "the prompt", nameof(prompt)); // eagerly, so that errors surface here
        var ids = prompt.ToArray();
        return Run(ids, o, cancellationToken);
    }

    private async IAsyncEnumerable<int> Run(int[] prompt, GenerationOptions options, [EnumeratorCancellation] CancellationToken cancellationToken)
    {
        // Each enumeration is a request of its own, with fresh state.
        var request = new Request(_generator.CheckPrompt(prompt, options, "the prompt", nameof(prompt)));
        // The loop reads the request's token; cancelling it (the caller's token, or leaving the loop early) frees the row.
        using var link = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        request.Cancel = link.Token;
        Interlocked.Increment(ref _waiting); // before the loop can read it (and count it out)
        if (!_incoming.Writer.TryWrite(request))
        {
            Interlocked.Decrement(ref _waiting);
            throw new ObjectDisposedException(nameof(GlmBatchScheduler));
        }
        try
        {
            await foreach (int id in request.Tokens.Reader.ReadAllAsync(cancellationToken).ConfigureAwait(false))
                yield return id;
        }
        finally { link.Cancel(); }
    }

    /// <summary>One queued prompt: its generation state (options included) and the channel its tokens go out on.</summary>
    private sealed class Request(GlmGenerator.RowState row)
    {
        public GlmGenerator.RowState Row { get; } = row;
        public Channel<int> Tokens { get; } = Channel.CreateUnbounded<int>(new UnboundedChannelOptions { SingleWriter = true, SingleReader = true });
        public CancellationToken Cancel { get; set; }
    }

    /// <summary>Called at the start of every step with the number of live rows (tests inject failures here).</summary>
    internal Action<int>? BeforeStep { get; set; }

    private async Task LoopAsync()
    {
        var live = new List<Request>(); // in the cache's row order
        try
        {
            while (!_stop.IsCancellationRequested)
            {
                if (live.Count == 0)
                {
                    _cache?.Dispose();
                    _cache = null;
                    Volatile.Write(ref _active, 0);
                    if (!await _incoming.Reader.WaitToReadAsync(_stop.Token).ConfigureAwait(false)) break;
                }
                var admitted = new List<Request>();
                while (live.Count + admitted.Count < MaxBatch && _incoming.Reader.TryRead(out var r))
                {
                    Interlocked.Decrement(ref _waiting);
                    if (r.Cancel.IsCancellationRequested) r.Tokens.Writer.TryComplete(new OperationCanceledException(r.Cancel));
                    else admitted.Add(r);
                }
                Volatile.Write(ref _active, live.Count + admitted.Count); // the places taken, for the waiting bound
                try { Step(live, admitted); }
                catch (Exception e)
                {
                    // A failed step (out of memory, a device error) ends the requests it held with that error; the
                    // scheduler goes on with a fresh batch for the next ones.
                    foreach (var r in live.Concat(admitted)) r.Tokens.Writer.TryComplete(e);
                    live.Clear();
                    _cache?.Dispose();
                    _cache = null;
                }
                Volatile.Write(ref _active, live.Count);
            }
        }
        catch (OperationCanceledException) when (_stop.IsCancellationRequested) { }
        finally
        {
            _cache?.Dispose();
            _cache = null;
            var gone = new ObjectDisposedException(nameof(GlmBatchScheduler));
            foreach (var r in live) r.Tokens.Writer.TryComplete(gone);
            while (_incoming.Reader.TryRead(out var r))
            {
                Interlocked.Decrement(ref _waiting);
                r.Tokens.Writer.TryComplete(gone);
            }
        }
    }

    /// <summary>
    /// One iteration: a decoding step for the live rows (each fed its newest token), then the prompt pass of the
    /// admitted ones in a cache of their own, appended to the batch's. Finished and cancelled rows leave.
    /// </summary>
    private void Step(List<Request> live, List<Request> admitted)
    {
        BeforeStep?.Invoke(live.Count);
        using (GradMode.NoGrad())
        using (TensorScope.Begin())
        {
            if (live.Count > 0)
            {
                var rows = live.Select(r => r.Row).ToArray();
                var picks = _generator.StepPicks(rows, _cache!);
                for (int i = 0; i < live.Count; i++) Emit(live[i], picks[i]);
            }
            if (admitted.Count > 0)
            {
                var fresh = _generator.Model.CreateCache(admitted.Count);
                try
                {
                    var rows = admitted.Select(r => r.Row).ToArray();
                    var picks = _generator.StepPicks(rows, fresh);
                    for (int i = 0; i < admitted.Count; i++) Emit(admitted[i], picks[i]);
                    if (_cache is null)
                    {
                        _cache = fresh;
                        fresh = null;
                        _cache.ReservedRows = MaxBatch; // later arrivals go into free rows instead of copying the batch
                    }
                    else { _cache.Append(fresh); Joins++; }
                }
                finally { fresh?.Dispose(); }
                live.AddRange(admitted);
            }
        }
        var keep = Enumerable.Range(0, live.Count).Where(i => !live[i].Row.Done).ToArray();
        if (keep.Length == live.Count) return;
        var kept = keep.Select(i => live[i]).ToList();
        live.Clear();
        live.AddRange(kept);
        if (keep.Length == 0) { _cache?.Dispose(); _cache = null; }
        else _cache!.KeepRows(keep);
    }

    /// <summary>Hands a row's picked token out, or ends the row (its stop rules, or its caller cancelled).</summary>
    private static void Emit(Request r, int token)
    {
        var row = r.Row;
        if (r.Cancel.IsCancellationRequested)
        {
            row.Done = true;
            r.Tokens.Writer.TryComplete(new OperationCanceledException(r.Cancel));
            return;
        }
        if (row.Accept(token)) r.Tokens.Writer.TryWrite(token);
        if (row.Done) r.Tokens.Writer.TryComplete();
    }

    /// <summary>Stops the loop after its current step; unfinished requests end with <see cref="ObjectDisposedException"/>.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_stop.IsCancellationRequested) return;
        _incoming.Writer.TryComplete();
        _stop.Cancel();
        try { await _loop.ConfigureAwait(false); }
        finally { _stop.Dispose(); }
    }
}

/// <summary>
/// A <see cref="GlmBatchScheduler"/> refused a request because <see cref="GlmBatchScheduler.MaxWaiting"/> requests
/// already wait for a row: the caller may retry shortly (an HTTP server answers 503 with Retry-After).
/// </summary>
public sealed class GlmSchedulerBusyException(int waiting, int maxBatch)
    : InvalidOperationException($"the model is busy: {waiting} requests are waiting for one of its {maxBatch} places; try again shortly")
{
    /// <summary>Requests that were waiting.</summary>
    public int Waiting { get; } = waiting;
}
