namespace DoctorGlm.Engine.Models.ChatGlm;

/// <summary>LoRA hyper-parameters for <c>query_key_value</c> (spec §9).</summary>
/// <param name="Rank">r (rows of A per enabled block).</param>
/// <param name="Alpha">lora_alpha; the update is scaled by alpha / r.</param>
/// <param name="Dropout">Dropout on the LoRA branch's input while training (0 = none).</param>
/// <param name="EnableLora">null for the PEFT ≥ 0.3 form (every output row); e.g. [true, false, true] for
/// DoctorGLM's grouped loralib MergedLinear (output rows [0, H) and [2H, 3H) — not "q and v", §9.1).</param>
public sealed record LoraSettings(int Rank, float Alpha, float Dropout = 0f, bool[]? EnableLora = null)
{
    /// <summary>alpha / r.</summary>
    public float Scaling => Alpha / Rank;

    /// <summary>The output-row layout the settings describe.</summary>
    public LoraGroups Groups => EnableLora is null ? LoraGroups.Full : LoraGroups.Merged(EnableLora);

    /// <summary>DoctorGLM's released adapter: r 8, alpha 16, dropout 0.05, enable_lora [T, F, T] (spec §9.1).</summary>
    public static LoraSettings DoctorGlm { get; } = new(8, 16f, 0.05f, [true, false, true]);
}

/// <summary>
/// A LoRA adapter on every layer's <c>attention.query_key_value</c>: per layer a trainable A [r·g, H] and
/// B [blockSize·g, r] (g enabled blocks of blockSize = 3H / G output rows each), used by the block through
/// <c>Ops.LoraLinear</c> while unmerged. Owns its tensors.
/// </summary>
public sealed class GlmLora : IDisposable
{
    private readonly (Tensor A, Tensor B)[] _layers;

    /// <summary>Wraps existing per-layer tensors (e.g. read from an adapter file); shapes are checked when attached.</summary>
    public GlmLora(LoraSettings settings, IReadOnlyList<(Tensor A, Tensor B)> layers)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(layers);
        if (settings.Rank <= 0) throw new ArgumentOutOfRangeException(nameof(settings), $"LoRA rank {settings.Rank} must be positive");
        if (!(settings.Dropout >= 0f && settings.Dropout < 1f)) throw new ArgumentOutOfRangeException(nameof(settings), $"LoRA dropout {settings.Dropout} must be in [0, 1)");
        Settings = settings;
        Groups = settings.Groups;
        _layers = layers.ToArray();
        for (int i = 0; i < _layers.Length; i++)
        {
            _layers[i].A.Name = KeyA(i);
            _layers[i].B.Name = KeyB(i);
        }
    }

    /// <summary>
    /// A fresh adapter for <paramref name="config"/>: A kaiming-uniform(a = √5) as PyTorch initialises
    /// <c>nn.Linear</c> (bound 1/√H), B zeros, so the adapted model starts equal to the base. Both trainable.
    /// </summary>
    public static GlmLora Create(GlmConfig config, LoraSettings settings, RandomGenerator rng, Device? device = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(rng);
        var groups = settings.Groups;
        int outF = 3 * config.HiddenSize;
        if (outF % groups.Count != 0)
            throw new ArgumentException($"GlmLora.Create: query_key_value's {outF} output rows do not split into {groups.Count} blocks (enable_lora {groups})");
        int g = groups.EnabledCount, block = outF / groups.Count;
        // kaiming_uniform_(a=√5): gain √(2/(1+5)), bound = gain·√(3/fan_in) = 1/√fan_in.
        float bound = 1f / MathF.Sqrt(config.HiddenSize);
        var layers = new (Tensor, Tensor)[config.NumLayers];
        using (TensorScope.Unscoped())
            for (int i = 0; i < layers.Length; i++)
            {
                var a = rng.Uniform(new Shape(settings.Rank * g, config.HiddenSize), -bound, bound, device);
                var b = Tensor.Zeros(new Shape(block * g, settings.Rank), DType.F32, device);
                a.RequiresGrad = b.RequiresGrad = true;
                layers[i] = (a, b);
            }
        return new GlmLora(settings, layers);
    }

    /// <summary>The hyper-parameters.</summary>
    public LoraSettings Settings { get; }

    /// <summary>The output-row layout.</summary>
    public LoraGroups Groups { get; }

    /// <summary>alpha / r.</summary>
    public float Scaling => Settings.Scaling;

    /// <summary>Per layer (A, B).</summary>
    public IReadOnlyList<(Tensor A, Tensor B)> Layers => _layers;

    /// <summary>True while the update is folded into the base weights (the block then runs a plain linear layer).</summary>
    public bool Merged { get; internal set; }

    /// <summary>PEFT's saved key of layer <paramref name="layer"/>'s A.</summary>
    public static string KeyA(int layer) => $"base_model.model.transformer.layers.{layer}.attention.query_key_value.lora_A.weight";

    /// <summary>PEFT's saved key of layer <paramref name="layer"/>'s B.</summary>
    public static string KeyB(int layer) => $"base_model.model.transformer.layers.{layer}.attention.query_key_value.lora_B.weight";

    /// <summary>Every A and B under its PEFT key (A then B, layer by layer). The grouped form uses the same names,
    /// with B stored [blockSize·g, r] (PEFT 0.2 saved it as a Conv1d weight [blockSize·g, r, 1]).</summary>
    public IEnumerable<KeyValuePair<string, Tensor>> NamedParameters()
    {
        for (int i = 0; i < _layers.Length; i++)
        {
            yield return new(KeyA(i), _layers[i].A);
            yield return new(KeyB(i), _layers[i].B);
        }
    }

    /// <summary>Releases the tensors and their gradients.</summary>
    public void Dispose()
    {
        foreach (var (a, b) in _layers)
        {
            a.Grad?.Dispose(); b.Grad?.Dispose();
            a.Dispose(); b.Dispose();
        }
    }
}
