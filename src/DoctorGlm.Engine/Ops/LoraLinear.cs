using DoctorGlm.Engine.Autograd;

namespace DoctorGlm.Engine;

public static partial class Ops
{
    /// <summary>
    /// LoRA linear layer (spec §9): y = x·Wᵀ + b + scaling·(drop(x)·Aᵀ)·Bᵀ, the LoRA term added only to the output
    /// blocks <paramref name="groups"/> enables (group i: A rows [r·i, r·(i+1)), B rows [blockSize·i, blockSize·(i+1))).
    /// W and b are frozen: they must not require a gradient and never get one; gradients go to x, A and B, each
    /// computed only when needed.
    /// </summary>
    /// <param name="x">Input [..., in]: F32, or a BF16/F16 activation (y then has x's dtype: the sum of the frozen
    /// product, bias and LoRA term is formed in fp32 and rounded once; drop(x) is kept in x's dtype for dA).</param>
    /// <param name="weight">Frozen W [out, in]: F32, or BF16/F16 to keep the base in 16 bits (multiplied with fp32 accumulation).</param>
    /// <param name="bias">Frozen b [out] F32, or null.</param>
    /// <param name="loraA">A [r·g, in] F32 (g = enabled blocks; g = 1 for PEFT).</param>
    /// <param name="loraB">B [blockSize·g, r] F32 (blockSize = out / G; [out, r] for PEFT).</param>
    /// <param name="scaling">lora_alpha / r.</param>
    /// <param name="groups">Block layout; null = <see cref="LoraGroups.Full"/> (PEFT).</param>
    /// <param name="dropout">Dropout probability on the LoRA branch's input (training only; pass 0 in evaluation).</param>
    /// <param name="rng">Source of the dropout mask; required when <paramref name="dropout"/> &gt; 0.</param>
    public static Tensor LoraLinear(Tensor x, Tensor weight, Tensor? bias, Tensor loraA, Tensor loraB, float scaling,
        LoraGroups? groups = null, float dropout = 0f, RandomGenerator? rng = null)
    {
        const string op = "LoraLinear";
        SameDevice(op, ("x", x), ("weight", weight), ("bias", bias), ("loraA", loraA), ("loraB", loraB));
        ExpectRank(op, "weight", weight, 2, "[out, in]");
        if (GradMode.IsEnabled && weight.RequiresGrad)
            throw new ArgumentException($"{op}: {weight.Describe("weight")} requires a gradient, but LoRA keeps the base layer frozen and never computes dW or db; set RequiresGrad = false on it");
        var wc = FloatContiguous(weight, op, "weight");
        return LoraLinearCore(op, x, weight.Shape[0], weight.Shape[1], weight.Describe("weight"), () => wc, _ => { }, quantized: null,
            bias, loraA, loraB, scaling, groups, dropout, rng);
    }

    /// <summary>
    /// <see cref="LoraLinear(Tensor, Tensor, Tensor?, Tensor, Tensor, float, LoraGroups?, float, RandomGenerator?)"/> on a
    /// frozen INT8/INT4 base (a LoRA adapter trained or run on a quantized model, as QLoRA does): the base product is
    /// <see cref="QuantizedLinear"/>'s — the fused kernel for a few rows without gradients, else the weight de-quantized
    /// into a temporary for the product and again for dx in backward — and the low-rank path is the same as over a float
    /// base, so A and B get the gradients they would get over the de-quantized weight (in <paramref name="dequantizedDType"/>,
    /// see <see cref="QuantizedLinear"/>).
    /// </summary>
    public static Tensor LoraLinear(Tensor x, Quantization.QuantizedWeight weight, Tensor? bias, Tensor loraA, Tensor loraB, float scaling,
        LoraGroups? groups = null, float dropout = 0f, RandomGenerator? rng = null, DType dequantizedDType = DType.F32)
    {
        const string op = "LoraLinear";
        ArgumentNullException.ThrowIfNull(weight);
        if (dequantizedDType is not (DType.F32 or DType.BF16 or DType.F16))
            throw new ArgumentException($"{op}: dequantizedDType {dequantizedDType} must be F32, BF16 or F16", nameof(dequantizedDType));
        SameDevice(op, ("x", x), ("weight", weight.Data), ("bias", bias), ("loraA", loraA), ("loraB", loraB));
        return LoraLinearCore(op, x, weight.Rows, weight.Columns, $"the INT{weight.Bits} weight [{weight.Rows}, {weight.Columns}]",
            () => weight.Dequantize(dequantizedDType), w => w.Dispose(), weight, bias, loraA, loraB, scaling, groups, dropout, rng);
    }

    /// <summary>
    /// The LoRA layer over a frozen weight that <paramref name="frozen"/> gives for each product (and <paramref name="done"/>
    /// releases): a stored matrix, or one de-quantized on demand. With <paramref name="quantized"/>, a forward of at most
    /// <see cref="QuantizedMatVecMaxRows"/> rows without gradients reads the packed weight directly.
    /// </summary>
    private static Tensor LoraLinearCore(string op, Tensor x, int outF, int inF, string weightText, Func<Tensor> frozen, Action<Tensor> done,
        Quantization.QuantizedWeight? quantized, Tensor? bias, Tensor loraA, Tensor loraB, float scaling, LoraGroups? groups, float dropout, RandomGenerator? rng)
    {
        groups ??= LoraGroups.Full;
        if (x.Rank < 1 || x.Shape[-1] != inF)
            throw new ArgumentException($"{op}: {x.Describe("x")} must end in {inF} to match {weightText} [out, in]");
        if (bias is not null) ExpectShape(op, "bias", bias, new Shape(outF), "one per output feature");
        var (r, blockSize) = groups.Resolve(op, outF, inF, weightText, loraA, loraB);
        if (!float.IsFinite(scaling)) throw new ArgumentOutOfRangeException(nameof(scaling), $"{op}: scaling = {scaling} must be finite");
        if (!(dropout >= 0f && dropout < 1f)) throw new ArgumentOutOfRangeException(nameof(dropout), $"{op}: dropout = {dropout} must be in [0, 1)");
        if (dropout > 0f && rng is null) throw new ArgumentException($"{op}: dropout = {dropout} needs a RandomGenerator (rng) for its mask");
        if (GradMode.IsEnabled && bias?.RequiresGrad == true)
            throw new ArgumentException($"{op}: {bias.Describe("bias")} requires a gradient, but LoRA keeps the base layer frozen and never computes dW or db; set RequiresGrad = false on it");

        var xc = FloatContiguous(x, op, "x");
        var bc = bias is null ? null : F32Contiguous(bias, op, "bias");
        var ac = F32Contiguous(loraA, op, "loraA");
        var lbc = F32Contiguous(loraB, op, "loraB");
        int rows = checked((int)(x.NumElements / inF));
        int g = groups.EnabledCount, rg = r * g;
        var blocks = groups.EnabledBlocks;
        var be = x.Backend;

        var outDims = x.Shape.ToArray();
        outDims[^1] = outF;
        var y = Tensor.Empty(new Shape(outDims), DType.F32, x.Device);
        bool wantsGrad = GradMode.IsEnabled && (x.RequiresGrad || loraA.RequiresGrad || loraB.RequiresGrad);
        if (quantized is not null && !wantsGrad && rows <= QuantizedMatVecMaxRows && x.DType == DType.F32)
        {
            // Decoding: the fused kernel reads the packed weight (no de-quantized temporary).
            using var x2 = xc.ViewAs(new Shape(rows, inF), [inF, 1], xc.Offset);
            using var y2 = y.ViewAs(new Shape(rows, outF), [outF, 1], y.Offset);
            be.QuantizedMatVec(x2, quantized.Data, quantized.Scale, quantized.Bits, y2);
        }
        else
        {
            var wf = frozen();
            be.Gemm(false, true, rows, outF, inF, 1f, xc, 0, inF, 0, wf, 0, inF, 0, 0f, y, 0, outF, 0, 1);
            done(wf);
        }
        if (bc is not null) be.AddRowVector(y, bc, 1f);

        // drop(x) with the dropout kernel (the same counter-based mask as Ops.Dropout); backward reapplies the
        // same stream to the LoRA branch's dx instead of storing a mask.
        bool drop = dropout > 0f;
        ulong stream = drop ? rng!.NextStream() : 0;
        Tensor xd = xc;
        if (drop) { xd = Tensor.Empty(x.Shape, x.DType, x.Device); be.DropoutForward(xc, xd, dropout, stream); }

        // z = drop(x)·Aᵀ [rows, r·g]; each group's slice of z times its block of B is added (× scaling) onto its
        // output block of y — the block-diagonal product of loralib's grouped 1×1 convolution, as strided GEMMs.
        var z = Tensor.Empty(new Shape(rows, rg), DType.F32, x.Device);
        be.Gemm(false, true, rows, rg, inF, 1f, xd, 0, inF, 0, ac, 0, inF, 0, 0f, z, 0, rg, 0, 1);
        for (int i = 0; i < g; i++)
            be.Gemm(false, true, rows, blockSize, r, scaling, z, r * i, rg, 0, lbc, (long)blockSize * i * r, r, 0,
                1f, y, (long)blocks[i] * blockSize, outF, 0, 1);
        y = RoundToActivation(y, x.DType);

        return Graph.Record(op, y, [x, loraA, loraB], (grad, needs) =>
        {
            var gc = grad.IsContiguous ? grad : ContiguousNoGrad(grad);
            Tensor? gx = null, gA = null, gB = null;
            if (needs(2))
            {
                // dB_i = scaling · dY_blockᵀ · z_i
                gB = Tensor.Empty(loraB.Shape, DType.F32, x.Device);
                for (int i = 0; i < g; i++)
                    be.Gemm(true, false, blockSize, r, rows, scaling, gc, (long)blocks[i] * blockSize, outF, 0, z, r * i, rg, 0,
                        0f, gB, (long)blockSize * i * r, r, 0, 1);
            }
            if (needs(0) || needs(1))
            {
                // dz_i = scaling · dY_block · B_i
                using var dz = Tensor.Empty(new Shape(rows, rg), DType.F32, x.Device);
                for (int i = 0; i < g; i++)
                    be.Gemm(false, false, rows, r, blockSize, scaling, gc, (long)blocks[i] * blockSize, outF, 0, lbc, (long)blockSize * i * r, r, 0,
                        0f, dz, r * i, rg, 0, 1);
                if (needs(1))
                {
                    gA = Tensor.Empty(loraA.Shape, DType.F32, x.Device);
                    be.Gemm(true, false, rg, inF, rows, 1f, dz, 0, rg, 0, xd, 0, inF, 0, 0f, gA, 0, inF, 0, 1);
                }
                if (needs(0))
                {
                    gx = Tensor.Empty(x.Shape, DType.F32, x.Device);
                    var wb = frozen();
                    be.Gemm(false, false, rows, inF, outF, 1f, gc, 0, outF, 0, wb, 0, inF, 0, 0f, gx, 0, inF, 0, 1);
                    done(wb);
                    if (!drop)
                        be.Gemm(false, false, rows, inF, rg, 1f, dz, 0, rg, 0, ac, 0, inF, 0, 1f, gx, 0, inF, 0, 1);
                    else
                    {
                        using var lora = Tensor.Empty(x.Shape, DType.F32, x.Device);
                        using var dropped = Tensor.Empty(x.Shape, DType.F32, x.Device);
                        be.Gemm(false, false, rows, inF, rg, 1f, dz, 0, rg, 0, ac, 0, inF, 0, 0f, lora, 0, inF, 0, 1);
                        be.DropoutForward(lora, dropped, dropout, stream);
                        be.AddScaled(gx, 1f, dropped, 1f, gx);
                    }
                }
            }
            return [gx, gA, gB];
        });
    }
}

/// <summary>Folds a LoRA update into (or out of) its base weight, in place (spec §9.1 "Merge").</summary>
public static class LoraMerge
{
    /// <summary>
    /// W[block e_i] += scaling · B_i · A_i for every enabled group i (no autograd; W must be contiguous; a BF16/F16 W
    /// is updated in fp32 and rounded back).
    /// </summary>
    public static void Merge(Tensor weight, Tensor loraA, Tensor loraB, float scaling, LoraGroups? groups = null) =>
        Apply("LoraMerge.Merge", weight, loraA, loraB, scaling, groups);

    /// <summary>Undoes <see cref="Merge"/>: W[block e_i] −= scaling · B_i · A_i.</summary>
    public static void Unmerge(Tensor weight, Tensor loraA, Tensor loraB, float scaling, LoraGroups? groups = null) =>
        Apply("LoraMerge.Unmerge", weight, loraA, loraB, -scaling, groups);

    private static void Apply(string op, Tensor weight, Tensor loraA, Tensor loraB, float scaling, LoraGroups? groups)
    {
        groups ??= LoraGroups.Full;
        Ops.SameDevice(op, ("weight", weight), ("loraA", loraA), ("loraB", loraB));
        Ops.ExpectRank(op, "weight", weight, 2, "[out, in]");
        if (weight.DType is not (DType.F32 or DType.BF16 or DType.F16)) throw new ArgumentException($"{op}: {weight.Describe("weight")} must be F32, BF16 or F16");
        if (!weight.IsContiguous) throw new ArgumentException($"{op}: {weight.Describe("weight")} must be contiguous (it is updated in place)");
        int outF = weight.Shape[0], inF = weight.Shape[1];
        var (r, blockSize) = groups.Resolve(op, outF, inF, weight, loraA, loraB);
        var ac = Ops.F32Contiguous(loraA, op, "loraA");
        var bc = Ops.F32Contiguous(loraB, op, "loraB");
        var be = weight.Backend;
        // A 16-bit weight is updated through an fp32 copy (GEMM results are fp32) and rounded once on the way back,
        // so Unmerge restores it only to within one rounding of the merged values.
        using var w32 = weight.DType == DType.F32 ? null : Tensor.Empty(weight.Shape, DType.F32, weight.Device);
        if (w32 is not null) be.Copy(weight, w32);
        var target = w32 ?? weight;
        for (int i = 0; i < groups.EnabledCount; i++)
            be.Gemm(false, false, blockSize, inF, r, scaling, bc, (long)blockSize * i * r, r, 0, ac, (long)r * i * inF, inF, 0,
                1f, target, (long)groups.EnabledBlocks[i] * blockSize * inF, inF, 0, 1);
        if (w32 is not null) be.Copy(w32, weight);
        if (!ReferenceEquals(ac, loraA)) ac.Dispose();
        if (!ReferenceEquals(bc, loraB)) bc.Dispose();
    }
}
