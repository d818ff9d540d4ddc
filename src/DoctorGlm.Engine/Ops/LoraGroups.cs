namespace DoctorGlm.Engine;

/// <summary>
/// Which output rows of a linear layer carry a LoRA update (spec §9). The output dimension is split into
/// <see cref="Count"/> equal contiguous blocks; enabled block e_i (i-th enabled one) uses lora_A rows
/// [r·i, r·(i+1)) and lora_B rows [blockSize·i, blockSize·(i+1)). <see cref="Full"/> is the HF PEFT form (one
/// block covering every row); <c>Merged([true, false, true])</c> is DoctorGLM's loralib MergedLinear on
/// query_key_value — rows [0, H) and [2H, 3H), which are NOT "q and v" because the QKV rows are interleaved per head.
/// </summary>
public sealed class LoraGroups
{
    private readonly bool[] _enable;
    private readonly int[] _enabledBlocks;

    private LoraGroups(bool[] enable)
    {
        _enable = (bool[])enable.Clone();
        _enabledBlocks = Enumerable.Range(0, enable.Length).Where(i => enable[i]).ToArray();
    }

    /// <summary>PEFT ≥ 0.3 LoRA: one group over all output rows (A [r, in], B [out, r]).</summary>
    public static LoraGroups Full { get; } = new([true]);

    /// <summary>loralib / deep_training MergedLinear with <c>enable_lora</c> = <paramref name="enable"/>.</summary>
    public static LoraGroups Merged(params bool[] enable)
    {
        ArgumentNullException.ThrowIfNull(enable);
        if (enable.Length == 0 || !enable.Contains(true))
            throw new ArgumentException($"LoraGroups.Merged: enable_lora [{string.Join(", ", enable)}] must enable at least one block", nameof(enable));
        return new LoraGroups(enable);
    }

    /// <summary>Number of output blocks G.</summary>
    public int Count => _enable.Length;

    /// <summary>Per block: whether it gets a LoRA update.</summary>
    public IReadOnlyList<bool> Enable => _enable;

    /// <summary>Indices of the enabled blocks, in order (block of group i).</summary>
    public IReadOnlyList<int> EnabledBlocks => _enabledBlocks;

    /// <summary>Number of enabled blocks g.</summary>
    public int EnabledCount => _enabledBlocks.Length;

    /// <summary>"[True, False, True]".</summary>
    public override string ToString() => "[" + string.Join(", ", _enable) + "]";

    /// <summary>
    /// Checks A [r·g, in] and B [blockSize·g, r] against a weight of <paramref name="outF"/> × <paramref name="inF"/>
    /// and returns (r, blockSize).
    /// </summary>
    internal (int Rank, int BlockSize) Resolve(string op, int outF, int inF, Tensor weight, Tensor loraA, Tensor loraB) =>
        Resolve(op, outF, inF, weight.Describe("weight"), loraA, loraB);

    /// <summary>As above, the base weight named by <paramref name="weightText"/> (e.g. a quantized one).</summary>
    internal (int Rank, int BlockSize) Resolve(string op, int outF, int inF, string weightText, Tensor loraA, Tensor loraB)
    {
        int g = EnabledCount;
        if (outF % Count != 0)
            throw new ArgumentException($"{op}: {weightText} has {outF} output rows, which do not split into {Count} equal LoRA blocks (enable_lora {this})");
        int blockSize = outF / Count;
        if (loraA.Rank != 2 || loraA.Shape[1] != inF || loraA.Shape[0] == 0 || loraA.Shape[0] % g != 0)
            throw new ArgumentException($"{op}: {loraA.Describe("loraA")} must be [r·{g}, {inF}] (r rows per enabled block, in = {inF} from {weightText})");
        int r = loraA.Shape[0] / g;
        var wantB = new Shape(blockSize * g, r);
        if (loraB.Shape != wantB)
            throw new ArgumentException($"{op}: {loraB.Describe("loraB")} must have shape {wantB} ([blockSize·g, r] with blockSize {blockSize}, g {g} enabled blocks, r {r} from {loraA.Describe("loraA")})");
        return (r, blockSize);
    }
}
