using DoctorGlm.Engine.Quantization;
using DoctorGlm.Engine.IO;

namespace DoctorGlm.Engine.Models.ChatGlm;

public sealed partial class GlmModel
{
    // Weight-only quantized linears (spec §10), keyed like the fp32 parameters they replace.
    private readonly Dictionary<string, QuantizedWeight> _quantized = new(StringComparer.Ordinal);

    /// <summary>0 for fp32 weights; 8 or 4 after <see cref="Quantize"/>.</summary>
    public int QuantizationBits { get; private set; }

    /// <summary>True once the block linears hold INT8/INT4 weights.</summary>
    public bool IsQuantized => QuantizationBits != 0;

    /// <summary>
    /// Replaces the four linear weights of every block (query_key_value, dense, dense_h_to_4h, dense_4h_to_h) by
    /// ChatGLM's per-row INT8 or INT4 quantization (spec §10; embeddings, LayerNorms and biases stay as they are) and
    /// frees the fp32 copies. A merged LoRA adapter is quantized with the weights (DoctorGLM's "6merge" files) and stays
    /// attached, merged, for the record; an unmerged one stays on top of the quantized base (QLoRA's arrangement), where
    /// it keeps training or running unmerged. The quantized linears are frozen: gradients still flow to their inputs.
    /// </summary>
    public void Quantize(int bits)
    {
        ThrowIfDisposed();
        if (bits is not (8 or 4)) throw new ArgumentOutOfRangeException(nameof(bits), bits, "GlmModel.Quantize: bits must be 8 or 4");
        if (IsQuantized) throw new InvalidOperationException($"GlmModel.Quantize: the model is already INT{QuantizationBits}");
        if (bits == 4 && (Config.HiddenSize % 2 != 0 || Config.InnerHiddenSize % 2 != 0))
            throw new InvalidOperationException("GlmModel.Quantize: INT4 packs two columns per byte and needs even hidden and inner sizes");
        // Quantize everything before touching the model, so a failure leaves it as it was.
        var made = new Dictionary<string, QuantizedWeight>(StringComparer.Ordinal);
        try
        {
            for (int i = 0; i < Config.NumLayers; i++)
                foreach (int j in QuantizedSlots)
                {
                    string key = _layerKeys[i][j];
                    made[key] = QuantizedWeight.Quantize(_params[key], bits);
                }
        }
        catch
        {
            foreach (var q in made.Values) q.Dispose();
            throw;
        }
        foreach (var (key, q) in made)
        {
            var old = _params[key];
            _params.Remove(key);
            old.Grad?.Dispose();
            old.Dispose();
            _quantized[key] = q;
        }
        QuantizationBits = bits;
    }

    private static readonly int[] QuantizedSlots = [QkvW, DenseW, H4W, FourHW];

    private static bool IsQuantizedKey(string name) => name.StartsWith("transformer.layers.", StringComparison.Ordinal)
        && (name.EndsWith(".attention.query_key_value.weight", StringComparison.Ordinal) || name.EndsWith(".attention.dense.weight", StringComparison.Ordinal)
            || name.EndsWith(".mlp.dense_h_to_4h.weight", StringComparison.Ordinal) || name.EndsWith(".mlp.dense_4h_to_h.weight", StringComparison.Ordinal));

    /// <summary>Takes the weights a pre-quantized checkpoint supplied (see <see cref="Load(GlmConfig, ITensorSource, GlmLoadOptions, Device?)"/>).</summary>
    private void AdoptQuantized(Dictionary<string, QuantizedWeight> quantized, int bits)
    {
        if (quantized.Count == 0) return;
        foreach (var (k, q) in quantized) _quantized[k] = q;
        QuantizationBits = bits;
    }

    /// <summary>One of a block's four linears (<paramref name="weightSlot"/>; its bias is the next slot, left out when <paramref name="withBias"/> is false), fp32 or quantized.</summary>
    private Tensor LayerLinear(int layer, int weightSlot, Tensor input, bool withBias = true, DType? outputDType = null)
    {
        var keys = _layerKeys[layer];
        var bias = withBias ? _params[keys[weightSlot + 1]] : null;
        return _quantized.TryGetValue(keys[weightSlot], out var q)
            ? Ops.QuantizedLinear(input, q, bias, WeightDType, outputDType)
            : Ops.Linear(input, _params[keys[weightSlot]], bias, outputDType);
    }
}
