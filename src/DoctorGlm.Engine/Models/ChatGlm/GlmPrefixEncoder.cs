using DoctorGlm.Engine.Autograd;
using DoctorGlm.Engine.IO;

namespace DoctorGlm.Engine.Models.ChatGlm;

/// <summary>
/// P-Tuning v2 prefix encoder (spec §8): produces the [N, 2·L·H] table whose column
/// ((2i + kv)·nh + head)·d + dim is layer i's prefix key (kv = 0) or value (kv = 1). Without projection the table
/// is the trainable embedding itself; with projection it is Linear(H, 2LH)(tanh(Linear(H, H)(embedding [N, H]))).
/// Owns its tensors; keys are those of HF's <c>transformer.prefix_encoder</c>.
/// </summary>
public sealed class GlmPrefixEncoder : IDisposable
{
    /// <summary>Key prefix of the encoder's tensors in HF checkpoints.</summary>
    public const string KeyPrefix = "transformer.prefix_encoder.";

    private readonly Dictionary<string, Tensor> _params;

    private GlmPrefixEncoder(int length, bool projection, int width, Dictionary<string, Tensor> parameters)
    {
        Length = length;
        Projection = projection;
        Width = width;
        _params = parameters;
        foreach (var (k, t) in _params) t.Name = k;
    }

    /// <summary>Prefix length N (pre_seq_len).</summary>
    public int Length { get; }

    /// <summary>Whether the MLP projection is used (prefix_projection).</summary>
    public bool Projection { get; }

    /// <summary>W = 2·L·H, the width of the produced table.</summary>
    public int Width { get; }

    /// <summary>The expected keys and shapes for <paramref name="config"/>.</summary>
    public static IEnumerable<(string Name, Shape Shape)> ParameterShapes(GlmConfig config, int length, bool projection)
    {
        int h = config.HiddenSize, w = 2 * config.NumLayers * h;
        if (!projection) { yield return (KeyPrefix + "embedding.weight", new Shape(length, w)); yield break; }
        yield return (KeyPrefix + "embedding.weight", new Shape(length, h));
        yield return (KeyPrefix + "trans.0.weight", new Shape(h, h));
        yield return (KeyPrefix + "trans.0.bias", new Shape(h));
        yield return (KeyPrefix + "trans.2.weight", new Shape(w, h));
        yield return (KeyPrefix + "trans.2.bias", new Shape(w));
    }

    /// <summary>
    /// A fresh encoder initialised as PyTorch's defaults in HF's <c>PrefixEncoder</c>: embedding N(0, 1), linear
    /// weights kaiming-uniform(a = √5) and biases U(±1/√fan_in). Every tensor is trainable.
    /// </summary>
    public static GlmPrefixEncoder Create(GlmConfig config, int length, bool projection, RandomGenerator rng, Device? device = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(rng);
        if (length <= 0) throw new ArgumentOutOfRangeException(nameof(length), length, "GlmPrefixEncoder: pre_seq_len must be positive");
        var p = new Dictionary<string, Tensor>();
        using (TensorScope.Unscoped())
            foreach (var (name, shape) in ParameterShapes(config, length, projection))
            {
                Tensor t;
                if (name.EndsWith("embedding.weight", StringComparison.Ordinal)) t = rng.Normal(shape, 1f, device);
                else
                {
                    int fanIn = config.HiddenSize; // both linears take H inputs
                    float bound = 1f / MathF.Sqrt(fanIn);
                    t = rng.Uniform(shape, -bound, bound, device);
                }
                t.RequiresGrad = true;
                p[name] = t;
            }
        return new GlmPrefixEncoder(length, projection, 2 * config.NumLayers * config.HiddenSize, p);
    }

    /// <summary>
    /// Reads an encoder from <paramref name="source"/> (keys with or without the <c>transformer.prefix_encoder.</c>
    /// prefix, as DoctorGLM's notebook strips it); the form (projection or not) is detected from the keys, N from
    /// the embedding. Every expected key must be present with its shape; throws naming the source and key.
    /// </summary>
    public static GlmPrefixEncoder Load(GlmConfig config, ITensorSource source, Device? device = null)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(source);
        string Find(string key) => source.Contains(key) ? key : source.Contains(key[KeyPrefix.Length..]) ? key[KeyPrefix.Length..]
            : throw new InvalidDataException($"{source.Description}: missing tensor '{key}' of the prefix encoder");
        string emb = Find(KeyPrefix + "embedding.weight");
        var embInfo = source.Info(emb);
        if (embInfo.Shape.Rank != 2) throw new InvalidDataException($"{source.Description}: tensor '{emb}' has shape {embInfo.Shape}, expected [pre_seq_len, width]");
        bool projection = source.Contains(KeyPrefix + "trans.0.weight") || source.Contains("trans.0.weight");
        int length = embInfo.Shape[0];
        var p = new Dictionary<string, Tensor>();
        try
        {
            using (TensorScope.Unscoped())
                foreach (var (name, shape) in ParameterShapes(config, length, projection))
                {
                    string key = Find(name);
                    var info = source.Info(key);
                    if (info.Shape != shape)
                        throw new InvalidDataException($"{source.Description}: tensor '{key}' has shape {info.Shape}, the prefix encoder needs {shape} (L = {config.NumLayers}, H = {config.HiddenSize})");
                    var t = Tensor.Empty(shape, DType.F32, device);
                    p[name] = t;
                    source.ReadInto(key, t);
                    t.RequiresGrad = true;
                }
        }
        catch
        {
            foreach (var t in p.Values) t.Dispose();
            throw;
        }
        return new GlmPrefixEncoder(length, projection, 2 * config.NumLayers * config.HiddenSize, p);
    }

    /// <summary>
    /// Takes ownership of the tensors of <paramref name="data"/> (read and validated by
    /// <see cref="IO.Adapters.PTuningCheckpoint.Load"/>) without copying them; the caller must not dispose
    /// <paramref name="data"/> afterwards. The width is checked against <paramref name="config"/>.
    /// </summary>
    internal static GlmPrefixEncoder Adopt(GlmConfig config, IO.Adapters.PrefixEncoderData data)
    {
        var p = new Dictionary<string, Tensor> { [KeyPrefix + "embedding.weight"] = data.Embedding };
        if (data.PrefixProjection)
        {
            p[KeyPrefix + "trans.0.weight"] = data.Trans0Weight!;
            p[KeyPrefix + "trans.0.bias"] = data.Trans0Bias!;
            p[KeyPrefix + "trans.2.weight"] = data.Trans2Weight!;
            p[KeyPrefix + "trans.2.bias"] = data.Trans2Bias!;
        }
        foreach (var (name, shape) in ParameterShapes(config, data.PreSeqLen, data.PrefixProjection))
            if (p[name].Shape != shape || p[name].DType != DType.F32)
                throw new InvalidDataException($"{data.Source}: prefix encoder tensor '{name}' is {p[name].DType} {p[name].Shape}; the model needs F32 {shape} (L = {config.NumLayers}, H = {config.HiddenSize})");
        return new GlmPrefixEncoder(data.PreSeqLen, data.PrefixProjection, 2 * config.NumLayers * config.HiddenSize, p);
    }

    /// <summary>The tensors as the plain data <see cref="IO.Adapters.PTuningCheckpoint.Save"/> writes (a view: still owned by this encoder).</summary>
    internal IO.Adapters.PrefixEncoderData AsData(string source)
    {
        Tensor? Get(string part) => _params.TryGetValue(KeyPrefix + part, out var t) ? t : null;
        return new IO.Adapters.PrefixEncoderData(Get("embedding.weight")!, Get("trans.0.weight"), Get("trans.0.bias"), Get("trans.2.weight"), Get("trans.2.bias"), source);
    }

    /// <summary>The tensors under their HF keys.</summary>
    public IEnumerable<KeyValuePair<string, Tensor>> NamedParameters() => _params;

    /// <summary>The prefix table [N, 2·L·H] (recorded for autograd).</summary>
    public Tensor Forward()
    {
        var emb = _params[KeyPrefix + "embedding.weight"];
        if (!Projection) return emb;
        var hidden = Ops.Tanh(Ops.Linear(emb, _params[KeyPrefix + "trans.0.weight"], _params[KeyPrefix + "trans.0.bias"]));
        return Ops.Linear(hidden, _params[KeyPrefix + "trans.2.weight"], _params[KeyPrefix + "trans.2.bias"]);
    }

    /// <summary>
    /// Repeats <paramref name="x"/> along a new leading batch dimension ([..] → [batch, ..]); the gradient sums over
    /// the batch. HF expands the prefix token ids to the batch before the embedding, which is the same thing.
    /// </summary>
    internal static Tensor BroadcastBatch(Tensor x, int batch)
    {
        var xc = x.IsContiguous ? x : Ops.ContiguousNoGrad(x);
        var y = Tensor.Empty(new Shape([batch, .. x.Shape.ToArray()]), DType.F32, x.Device);
        var be = x.Backend;
        long n = x.NumElements;
        var strides = x.Shape.ContiguousStrides();
        for (int b = 0; b < batch; b++)
        {
            using var dst = y.ViewAs(x.Shape, strides, y.Offset + b * n);
            be.Copy(xc, dst);
        }
        return Graph.Record("BroadcastBatch", y, [x], (g, _) =>
        {
            var gc = g.IsContiguous ? g : Ops.ContiguousNoGrad(g);
            var gx = Tensor.Empty(x.Shape, DType.F32, x.Device);
            be.SumRows(gc, gx, accumulate: false);
            return [gx];
        });
    }

    /// <summary>Releases the tensors and their gradients.</summary>
    public void Dispose()
    {
        foreach (var t in _params.Values) { t.Grad?.Dispose(); t.Dispose(); }
    }
}
