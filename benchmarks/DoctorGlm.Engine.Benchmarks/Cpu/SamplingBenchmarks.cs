using BenchmarkDotNet.Attributes;
using DoctorGlm.Engine.Generation;

namespace DoctorGlm.Engine.Benchmarks.Cpu;

/// <summary>
/// The host-side work of one sampled token (spec §7 with <c>chat()</c>'s defaults: repetition penalty, the
/// invalid-score guard, temperature 0.95, top-k 50, top-p 0.7, then softmax and the draw) over ChatGLM-6B's 130,528
/// scores, and the greedy pick. Every row of every decoding step pays it, on the GPU too, so it must stay well
/// under a decoding step (about 10 ms for the 6B model in bf16 on one H100 at batch 1).
/// </summary>
public class CpuSamplingBenchmarks
{
    private const int Vocab = 130528;
    private float[] _logits = null!, _scores = null!;
    private readonly int[] _sequence = [.. Enumerable.Range(0, 300).Select(i => (i * 7919) % Vocab)];
    private readonly GenerationOptions _chat = new() { RepetitionPenalty = 1.1f };

    [GlobalSetup]
    public void Setup()
    {
        var rng = new Random(5);
        _logits = [.. Enumerable.Range(0, Vocab).Select(_ => (float)(rng.NextDouble() * 16 - 8))];
        _scores = new float[Vocab];
    }

    /// <summary>Sampling with the chat defaults: the whole pipeline and the draw.</summary>
    [Benchmark]
    public int SampleChatDefaults()
    {
        _logits.CopyTo(_scores, 0);
        LogitsProcessing.Process(_scores, _sequence, _chat, 5);
        var p = LogitsProcessing.Softmax(_scores);
        return LogitsProcessing.SampleIndex(p, 0.5);
    }

    /// <summary>Greedy decoding: penalty, guard and arg-max.</summary>
    [Benchmark]
    public int Greedy()
    {
        _logits.CopyTo(_scores, 0);
        LogitsProcessing.Process(_scores, _sequence, _chat with { DoSample = false }, 5);
        return LogitsProcessing.ArgMax(_scores);
    }
}
