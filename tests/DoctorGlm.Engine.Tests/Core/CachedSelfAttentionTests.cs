using DoctorGlm.Engine.Autograd;
using DoctorGlm.Engine.Tests.Harness;

namespace DoctorGlm.Engine.Tests.Core;

/// <summary>
/// <see cref="Ops.GlmCachedSelfAttention"/> against the unfused step it replaces: slice q, k and v out of the QKV
/// projection, rotate q and k, round them to the cache's dtype, attend over the past with <see cref="Ops.GlmAttention"/>
/// and write k and v into the cache. On the CPU both compute the same fp32 values, so the output and the cache's
/// slots must be bit-identical, for an F32 cache and for 16-bit ones; the slots are strided views of a cache buffer
/// (a batch, spare rows, room after them), and nothing outside them may be written.
/// </summary>
public sealed class CachedSelfAttentionTests
{
    [Theory]
    [InlineData(DType.F32, 3, false)]
    [InlineData(DType.F32, 3, true)]
    [InlineData(DType.BF16, 3, true)]
    [InlineData(DType.F16, 3, false)]
    [InlineData(DType.BF16, 1, true)]
    public void Writes_the_new_keys_and_values_into_the_slots_and_attends_as_the_unfused_step(DType dtype, int b, bool withBias)
    {
        const int s = 3, nh = 2, d = 16, past = 7, room = 4, spare = 1;
        var rng = new Random(11 + b);
        float[] R(int count) => [.. Enumerable.Range(0, count).Select(_ => (float)OpInput.Gauss(rng))];
        using var scope = TensorScope.Begin();
        using var noGrad = GradMode.NoGrad();
        var qkv = Tensor.FromArray(R(b * s * nh * 3 * d), new Shape(b, s, nh, 3 * d));
        var bias = withBias ? Tensor.FromArray(R(nh * 3 * d), new Shape(nh * 3 * d)) : null;
        var pos = Tensor.FromArray([.. Enumerable.Range(0, b * 2 * s).Select(i => past + i % s + (i / s % 2 == 1 ? rng.Next(0, 3) : 0))], new Shape(b, 2, s));
        var maskBytes = new byte[b * s * s];
        for (int r = 0; r < b; r++)
            for (int i = 0; i < s; i++)
                for (int j = i + 1; j < s; j++) maskBytes[(r * s + i) * s + j] = 1; // causal among the new tokens
        var mask = Tensor.FromArray(maskBytes, new Shape(b, s, s));
        var pastMaskBytes = new byte[b * past];
        if (b > 1) { pastMaskBytes[1 * past + 0] = 1; pastMaskBytes[2 * past + 0] = 1; pastMaskBytes[2 * past + 1] = 1; } // left pads
        var pastMask = Tensor.FromArray(pastMaskBytes, new Shape(b, past));

        // Two cache buffers [b + spare, past + s + room, nh, d] with the same past, NaN everywhere else.
        var pastK = R(b * past * nh * d);
        var pastV = R(b * past * nh * d);
        (Tensor Buffer, Tensor Past, Tensor Slot) Cache(float[] pastValues)
        {
            var buffer = Tensor.Full(new Shape(b + spare, past + s + room, nh, d), float.NaN, dtype);
            var rows = buffer.Narrow(0, 0, b);
            var view = rows.Narrow(1, 0, past);
            view.Backend.Copy(Tensor.FromArray(pastValues, new Shape(b, past, nh, d)), view);
            return (buffer, view, rows.Narrow(1, past, s));
        }
        var (kBuf, kPast, kSlot) = Cache(pastK);
        var (vBuf, vPast, vSlot) = Cache(pastV);
        var actual = Ops.GlmCachedSelfAttention(qkv, pos, mask, 2f, kPast, vPast, pastMask, kSlot, vSlot, bias);
        Assert.Equal(dtype, actual.DType);

        // The unfused step: the bias added as Linear adds it, then the slices.
        if (bias is not null) qkv.Backend.AddRowVector(qkv, bias, 1f);
        var q = Ops.Cast(Ops.Rotary2D(qkv.Narrow(3, 0, d), pos), dtype);
        var k = Ops.Cast(Ops.Rotary2D(qkv.Narrow(3, d, d), pos), dtype);
        var v = Ops.Cast(Ops.Contiguous(qkv.Narrow(3, 2 * d, d)), dtype);
        var (eBuf, ePast, _) = Cache(pastK);
        var (fBuf, fPast, _) = Cache(pastV);
        var expected = Ops.GlmAttention(q, k, v, mask, 2f, ePast, fPast, pastMask);
        AssertBits(expected.ToFloatArray(), actual.ToFloatArray(), "output");
        AssertBits(k.ToFloatArray(), Ops.Contiguous(kSlot).ToFloatArray(), "key slots");
        AssertBits(v.ToFloatArray(), Ops.Contiguous(vSlot).ToFloatArray(), "value slots");

        // Outside the slots: the past as it was, NaN in the room after the slots and in the spare row.
        foreach (var (buffer, pastValues, name) in new[] { (kBuf, pastK, "keys"), (vBuf, pastV, "values") })
        {
            var all = buffer.ToFloatArray();
            int cap = past + s + room, row = nh * d;
            for (int r = 0; r < b + spare; r++)
                for (int p = 0; p < cap; p++)
                    for (int e = 0; e < row; e++)
                    {
                        float x = all[((long)r * cap + p) * row + e];
                        if (r < b && p < past)
                            Assert.True(x == OpInput.RoundTo(dtype, pastValues[(r * past + p) * row + e]), $"{name}: row {r} past position {p} changed");
                        else if (r >= b || p >= past + s)
                            Assert.True(float.IsNaN(x), $"{name}: row {r} position {p} (outside the slots) was written: {x}");
                    }
        }
    }

    [Fact]
    public void Refuses_a_projection_that_needs_a_gradient_and_names_bad_slots()
    {
        using var scope = TensorScope.Begin();
        var qkv = Tensor.Full(new Shape(1, 2, 1, 12), 0.5f);
        var pos = Tensor.FromArray(new int[] { 0, 1, 0, 0 }, new Shape(1, 2, 2));
        var slot = Tensor.Zeros(new Shape(1, 2, 1, 4));
        qkv.RequiresGrad = true;
        var e = Assert.Throws<NotSupportedException>(() => Ops.GlmCachedSelfAttention(qkv, pos, null, 1f, null, null, null, slot, slot));
        Assert.Contains("GlmCachedSelfAttention", e.Message);
        using var noGrad = GradMode.NoGrad();
        var shortSlot = Tensor.Zeros(new Shape(1, 1, 1, 4));
        var bad = Assert.Throws<ArgumentException>(() => Ops.GlmCachedSelfAttention(qkv, pos, null, 1f, null, null, null, slot, shortSlot));
        Assert.Contains("newValues", bad.Message);
        var mixed = Tensor.Zeros(new Shape(1, 2, 1, 4), DType.BF16);
        bad = Assert.Throws<ArgumentException>(() => Ops.GlmCachedSelfAttention(qkv, pos, null, 1f, null, null, null, slot, mixed));
        Assert.Contains("one float dtype", bad.Message);
    }

    private static void AssertBits(float[] expected, float[] actual, string what)
    {
        Assert.Equal(expected.Length, actual.Length);
        for (int i = 0; i < expected.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(actual[i]), $"{what}[{i}]: {actual[i]:R}, unfused {expected[i]:R}");
    }
}
