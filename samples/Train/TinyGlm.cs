using DoctorGlm.Engine;

namespace DoctorGlm.Samples.Train;

/// <summary>Sizes of the sample's tiny GLM.</summary>
public sealed record TinyGlmConfig(int Vocab, int Hidden, int Heads, int Layers, int Inner)
{
    /// <summary>Per-head width.</summary>
    public int HeadDim => Hidden / Heads;
}

/// <summary>
/// A tiny model with ChatGLM's block structure (spec §3.3): a = LN₁(x); h = α·a + Attn(a); m = LN₂(h);
/// y = α·m + MLP(m), α = √(2L), fused per-head-interleaved QKV, 2D rotary, prefix-LM attention, tied head.
/// </summary>
public sealed class TinyGlm : IDisposable
{
    private readonly TinyGlmConfig _c;
    private readonly List<(string Name, Tensor Param)> _params = [];
    private readonly Tensor _embedding;
    private readonly Tensor _lnFinalW, _lnFinalB;

    public TinyGlm(TinyGlmConfig c, RandomGenerator rng)
    {
        _c = c;
        using var _ = TensorScope.Unscoped();
        Tensor P(string name, Tensor t) { t.RequiresGrad = true; t.Name = name; _params.Add((name, t)); return t; }
        float std = 0.02f;
        _embedding = P("word_embeddings.weight", rng.Normal(new Shape(c.Vocab, c.Hidden), std));
        for (int l = 0; l < c.Layers; l++)
        {
            string p = $"layers.{l}.";
            P(p + "input_layernorm.weight", Tensor.Full(new Shape(c.Hidden), 1f));
            P(p + "input_layernorm.bias", Tensor.Zeros(new Shape(c.Hidden)));
            P(p + "attention.query_key_value.weight", rng.Normal(new Shape(3 * c.Hidden, c.Hidden), std));
            P(p + "attention.query_key_value.bias", Tensor.Zeros(new Shape(3 * c.Hidden)));
            P(p + "attention.dense.weight", rng.Normal(new Shape(c.Hidden, c.Hidden), std));
            P(p + "attention.dense.bias", Tensor.Zeros(new Shape(c.Hidden)));
            P(p + "post_attention_layernorm.weight", Tensor.Full(new Shape(c.Hidden), 1f));
            P(p + "post_attention_layernorm.bias", Tensor.Zeros(new Shape(c.Hidden)));
            P(p + "mlp.dense_h_to_4h.weight", rng.Normal(new Shape(c.Inner, c.Hidden), std));
            P(p + "mlp.dense_h_to_4h.bias", Tensor.Zeros(new Shape(c.Inner)));
            P(p + "mlp.dense_4h_to_h.weight", rng.Normal(new Shape(c.Hidden, c.Inner), std));
            P(p + "mlp.dense_4h_to_h.bias", Tensor.Zeros(new Shape(c.Hidden)));
        }
        _lnFinalW = P("final_layernorm.weight", Tensor.Full(new Shape(c.Hidden), 1f));
        _lnFinalB = P("final_layernorm.bias", Tensor.Zeros(new Shape(c.Hidden)));
    }

    public IReadOnlyList<(string Name, Tensor Param)> Parameters => _params;

    public long ParameterCount => _params.Sum(p => p.Param.NumElements);

    private Tensor W(string name) => _params.First(p => p.Name == name).Param;

    /// <summary>Logits [B, S, V] for a batch.</summary>
    public Tensor Forward(BatchInputs b)
    {
        int B = b.Batch, S = b.SeqLen, nh = _c.Heads, d = _c.HeadDim;
        float alpha = MathF.Sqrt(2 * _c.Layers);
        var x = Ops.Embedding(b.Ids, _embedding);                          // [B, S, H]
        for (int l = 0; l < _c.Layers; l++)
        {
            string p = $"layers.{l}.";
            var a = Ops.LayerNorm(x, W(p + "input_layernorm.weight"), W(p + "input_layernorm.bias"));
            var qkv = Ops.Linear(a, W(p + "attention.query_key_value.weight"), W(p + "attention.query_key_value.bias"))
                .Reshape(B, S, nh, 3 * d);                                   // per head: q | k | v (spec §3.3)
            var q = Ops.Rotary2D(qkv.Narrow(3, 0, d).Contiguous(), b.PositionIds);
            var k = Ops.Rotary2D(qkv.Narrow(3, d, d).Contiguous(), b.PositionIds);
            var v = qkv.Narrow(3, 2 * d, d).Contiguous();
            var ctx = Ops.GlmAttention(q, k, v, b.Mask, layerCoeff: l + 1).Reshape(B, S, _c.Hidden);
            var o = Ops.Linear(ctx, W(p + "attention.dense.weight"), W(p + "attention.dense.bias"));
            var h = Ops.AddScaled(a, alpha, o, 1f);
            var m = Ops.LayerNorm(h, W(p + "post_attention_layernorm.weight"), W(p + "post_attention_layernorm.bias"));
            var u = Ops.Gelu(Ops.Linear(m, W(p + "mlp.dense_h_to_4h.weight"), W(p + "mlp.dense_h_to_4h.bias")));
            x = Ops.AddScaled(m, alpha, Ops.Linear(u, W(p + "mlp.dense_4h_to_h.weight"), W(p + "mlp.dense_4h_to_h.bias")), 1f);
        }
        var final = Ops.LayerNorm(x, _lnFinalW, _lnFinalB);
        return Ops.Linear(final, _embedding);                                 // tied head
    }

    /// <summary>Mean cross-entropy of the shifted labels (position t predicts token t+1).</summary>
    public Tensor Loss(BatchInputs b)
    {
        var logits = Forward(b);
        int V = _c.Vocab;
        var shifted = logits.Narrow(1, 0, b.SeqLen - 1).Contiguous().Reshape(-1, V);
        return Ops.CrossEntropy(shifted, b.Labels);
    }

    /// <summary>Greedy continuation of one question (re-runs the full sequence per token: the model is tiny).</summary>
    public string Greedy(Batcher batcher, string question, int maxNew)
    {
        using var _ = DoctorGlm.Engine.Autograd.GradMode.NoGrad();
        var answer = new List<int>();
        for (int i = 0; i < maxNew; i++)
        {
            using var scope = TensorScope.Begin();
            var inputs = batcher.MakePrompt(question, answer);
            var logits = Forward(inputs).ToFloatArray();
            int last = (inputs.SeqLen - 1) * _c.Vocab;
            int best = 0;
            for (int v = 1; v < _c.Vocab; v++) if (logits[last + v] > logits[last + best]) best = v;
            if (best == CharVocab.Eop) break;
            answer.Add(best);
        }
        return batcher.Vocab.Decode(answer);
    }

    public void Dispose() { foreach (var (_, p) in _params) { p.Grad?.Dispose(); p.Dispose(); } }
}
