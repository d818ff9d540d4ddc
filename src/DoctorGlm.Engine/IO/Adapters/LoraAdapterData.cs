namespace DoctorGlm.Engine.IO.Adapters;

/// <summary>What the base model looks like, for validating adapters against it (any part may be unknown).</summary>
/// <param name="NumLayers">Number of GLM blocks (28 for 6B): layer indices must lie in [0, NumLayers).</param>
/// <param name="HiddenSize">H (4096 for 6B): query_key_value is [3H, H].</param>
/// <param name="VocabSize">Embedding rows (130528 slim, 150528 old): checked against a config.json next to the adapter.</param>
public sealed record AdapterExpectations(int? NumLayers = null, int? HiddenSize = null, int? VocabSize = null);

/// <summary>One layer's LoRA pair for <c>attention.query_key_value</c>.</summary>
/// <param name="A">lora_A [r·g, in] (g = enabled groups).</param>
/// <param name="B">lora_B [blockSize·g, r] (always 2-D here; PEFT 0.2.0's Conv1d [.., r, 1] is reshaped on load).</param>
public sealed record LoraLayer(Tensor A, Tensor B);

/// <summary>
/// A LoRA adapter on <c>attention.query_key_value</c>, loaded from a PEFT or DoctorGLM (deep_training) file, as plain
/// data: the model attaches it (y += s·(x·Aᵀ)·Bᵀ into the rows <see cref="Groups"/> selects, or merges it).
/// Owns its tensors: <see cref="Dispose"/> frees them.
/// </summary>
public sealed class LoraAdapterData : IDisposable
{
    /// <summary>Builds and validates an adapter; every layer must have A [r·g, in] and B [blockSize·g, r] with the same in and blockSize.</summary>
    public LoraAdapterData(int rank, float alpha, LoraGroups groups, IReadOnlyDictionary<int, LoraLayer> layers, float dropout = 0f, string source = "")
    {
        ArgumentNullException.ThrowIfNull(groups);
        ArgumentNullException.ThrowIfNull(layers);
        if (rank <= 0) throw new ArgumentException($"{source}: LoRA rank {rank} must be positive", nameof(rank));
        if (layers.Count == 0) throw new ArgumentException($"{source}: a LoRA adapter needs at least one layer", nameof(layers));
        int g = groups.EnabledCount;
        int? inF = null, rowsB = null;
        foreach (var (i, l) in layers.OrderBy(kv => kv.Key))
        {
            if (i < 0) throw new ArgumentException($"{source}: layer index {i} is negative", nameof(layers));
            if (l.A.Rank != 2 || l.A.Shape[0] != rank * g)
                throw new ArgumentException($"{source}: layer {i} lora_A is {l.A.Shape}; expected [{rank * g}, in] (r {rank} × {g} enabled groups)", nameof(layers));
            if (l.B.Rank != 2 || l.B.Shape[1] != rank || l.B.Shape[0] % g != 0)
                throw new ArgumentException($"{source}: layer {i} lora_B is {l.B.Shape}; expected [blockSize·{g}, {rank}]", nameof(layers));
            inF ??= l.A.Shape[1];
            rowsB ??= l.B.Shape[0];
            if (l.A.Shape[1] != inF || l.B.Shape[0] != rowsB)
                throw new ArgumentException($"{source}: layer {i} has lora_A {l.A.Shape} / lora_B {l.B.Shape}, unlike the other layers' [.., {inF}] / [{rowsB}, ..]", nameof(layers));
        }
        Rank = rank;
        Alpha = alpha;
        Groups = groups;
        Layers = layers;
        Dropout = dropout;
        Source = source;
        InFeatures = inF!.Value;
        OutFeatures = rowsB!.Value / g * groups.Count;
    }

    /// <summary>r (per enabled group).</summary>
    public int Rank { get; }

    /// <summary>lora_alpha.</summary>
    public float Alpha { get; }

    /// <summary>s = alpha / r (2.0 for DoctorGLM).</summary>
    public float Scaling => Alpha / Rank;

    /// <summary>lora_dropout (training only).</summary>
    public float Dropout { get; }

    /// <summary>Which output rows carry LoRA: <see cref="LoraGroups.Full"/> for PEFT ≥ 0.3, <c>Merged(T, F, T)</c> for DoctorGLM.</summary>
    public LoraGroups Groups { get; }

    /// <summary>True for the loralib MergedLinear form (enable_lora with more than one block).</summary>
    public bool Grouped => Groups.Count > 1;

    /// <summary>enable_lora per output block.</summary>
    public IReadOnlyList<bool> EnableLora => Groups.Enable;

    /// <summary>The adapted layer's input width (H).</summary>
    public int InFeatures { get; }

    /// <summary>The adapted layer's output width (3H), implied by lora_B and the groups.</summary>
    public int OutFeatures { get; }

    /// <summary>Layer index → its pair.</summary>
    public IReadOnlyDictionary<int, LoraLayer> Layers { get; }

    /// <summary>Where it was loaded from (for messages).</summary>
    public string Source { get; }

    /// <summary>Frees every tensor.</summary>
    public void Dispose()
    {
        foreach (var l in Layers.Values) { l.A.Dispose(); l.B.Dispose(); }
    }
}
