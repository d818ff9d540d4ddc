using DoctorGlm.Engine.IO;
using DoctorGlm.Engine.Models.ChatGlm;

namespace DoctorGlm.Engine.Benchmarks.EndToEnd;

/// <summary>
/// A checkpoint of random weights for a <see cref="GlmConfig"/>, made on the fly: loading the 6B shape through it takes
/// seconds (parallel hashing, one slice at a time straight into the destination), where
/// <see cref="GlmModel.CreateRandom"/> draws 6.2 billion Box–Muller normals on one thread. Same layout as
/// CreateRandom: LayerNorm weights 1, biases and LayerNorm biases 0, matrices uniform with standard deviation 0.02
/// (the config's initializer_range).
/// </summary>
public sealed class RandomWeights(GlmConfig config, ulong seed) : ITensorSource
{
    private readonly Dictionary<string, TensorInfo> _infos = GlmModel.ParameterShapes(config)
        .ToDictionary(p => p.Name, p => new TensorInfo(p.Name, DType.F32, p.Shape, "random"), StringComparer.Ordinal);

    /// <inheritdoc />
    public string Description => $"random weights (seed {seed})";

    /// <inheritdoc />
    public IReadOnlyCollection<TensorInfo> Tensors => _infos.Values;

    /// <inheritdoc />
    public bool Contains(string name) => _infos.ContainsKey(name);

    /// <inheritdoc />
    public TensorInfo Info(string name) =>
        _infos.TryGetValue(name, out var info) ? info : throw new KeyNotFoundException($"{Description}: no tensor '{name}'");

    /// <inheritdoc />
    public void ReadInto(string name, Tensor destination)
    {
        var info = Info(name);
        if (destination.Shape != info.Shape) throw new InvalidDataException($"{Description}: '{name}' is {info.Shape}, the destination {destination.Shape}");
        if (name.EndsWith("layernorm.weight", StringComparison.Ordinal)) destination.Backend.Fill(destination, 1f);
        else if (info.Shape.Rank == 1) destination.Backend.Fill(destination, 0f);
        // Uniform on [−a, a) has standard deviation a/√3.
        else BenchData.Fill(destination, RandomGenerator.Mix(seed ^ Fnv1a(name)), 0.02f * MathF.Sqrt(3f));
    }

    /// <inheritdoc />
    public void Dispose() { }

    /// <summary>A stable 64-bit hash of a key (string.GetHashCode is randomised per process).</summary>
    private static ulong Fnv1a(string s)
    {
        ulong h = 14695981039346656037UL;
        foreach (char c in s) h = (h ^ c) * 1099511628211UL;
        return h;
    }
}

/// <summary>Model shapes the end-to-end benchmarks run (the PyTorch script tools/bench/torch_lora_step.py has the same table).</summary>
public static class ModelPresets
{
    /// <summary>The preset names.</summary>
    public static IReadOnlyList<string> Names { get; } = ["6b", "medium", "small", "tiny"];

    /// <summary>
    /// "6b": ChatGLM-6B (28 layers, hidden 4096, 32 heads, FFN 16384, vocabulary 130528). "medium": 8 layers, hidden
    /// 2048, 16 heads of 128, FFN 8192, vocabulary 32000 (0.47 B parameters: a CPU decode that fits memory). "small":
    /// 4 layers, hidden 1024, 8 heads of 128, FFN 4096, vocabulary 16384 (67 M: a CPU training step in about a second).
    /// "tiny": 2 layers, hidden 256, 4 heads, vocabulary 1024 (smoke tests).
    /// </summary>
    public static GlmConfig Get(string name) => name switch
    {
        "6b" => GlmConfig.ChatGlm6B,
        "medium" => GlmConfig.Tiny(32000, 2048, 8, 16, 8192) with { MaxSequenceLength = 2048 },
        "small" => GlmConfig.Tiny(16384, 1024, 4, 8, 4096) with { MaxSequenceLength = 2048 },
        "tiny" => GlmConfig.Tiny(1024, 256, 2, 4, 1024) with { MaxSequenceLength = 2048 },
        _ => throw new ArgumentException($"unknown model preset '{name}' (known: {string.Join(", ", Names)})"),
    };

    /// <summary>Parameters of the four block linears of every layer (what a token's forward multiplies by, besides the head).</summary>
    public static long BlockMatrixParameters(GlmConfig c) =>
        (long)c.NumLayers * ((long)3 * c.HiddenSize * c.HiddenSize + (long)c.HiddenSize * c.HiddenSize + 2L * c.InnerHiddenSize * c.HiddenSize);

    /// <summary>Parameters of the tied LM head (the embedding, used as a matrix once per token).</summary>
    public static long HeadParameters(GlmConfig c) => (long)c.VocabSize * c.HiddenSize;
}
