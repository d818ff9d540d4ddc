using DoctorGlm.Engine.Autograd;
using DoctorGlm.Engine.Tests.Harness;

namespace DoctorGlm.Engine.Tests.Core;

/// <summary>
/// <see cref="Ops.GlmAttention"/> reading a KV cache's past where it lies: the first N positions of a longer buffer
/// (F32, or BF16/F16 as a 16-bit cache keeps them), against the same values as a contiguous F32 prefix. The CPU
/// computes in fp32 either way, so the outputs must be bit-identical; a 16-bit past needing a gradient is refused.
/// </summary>
public sealed class AttentionPastViewTests
{
    [Theory]
    [InlineData(DType.F32)]
    [InlineData(DType.BF16)]
    [InlineData(DType.F16)]
    public void A_past_view_of_a_cache_buffer_gives_the_contiguous_prefixs_output(DType dtype)
    {
        const int b = 3, s = 2, nh = 2, d = 16, n = 11, room = 5;
        var rng = new Random(4);
        float[] R(int count) => [.. Enumerable.Range(0, count).Select(_ => OpInput.RoundTo(dtype, (float)OpInput.Gauss(rng)))];
        using var scope = TensorScope.Begin();
        using var noGrad = GradMode.NoGrad();
        var q = Tensor.FromArray(R(b * s * nh * d), new Shape(b, s, nh, d));
        var k = Tensor.FromArray(R(b * s * nh * d), new Shape(b, s, nh, d));
        var v = Tensor.FromArray(R(b * s * nh * d), new Shape(b, s, nh, d));
        var pk = Tensor.FromArray(R(b * n * nh * d), new Shape(b, n, nh, d));
        var pv = Tensor.FromArray(R(b * n * nh * d), new Shape(b, n, nh, d));
        var pmask = new byte[b * n];
        pmask[1 * n + 4] = 1; pmask[2 * n + 0] = 1; pmask[2 * n + 1] = 1;
        var pm = Tensor.FromArray(pmask, new Shape(b, n));
        Tensor View(Tensor contiguous)
        {
            var buffer = Tensor.Full(new Shape(b, n + room, nh, d), float.NaN, dtype); // the positions past N must never be read
            var view = buffer.Narrow(1, 0, n);
            view.Backend.Copy(contiguous, view);
            return view;
        }
        var expected = Ops.GlmAttention(q, k, v, null, 3f, pk, pv, pm).ToFloatArray();
        var actual = Ops.GlmAttention(q, k, v, null, 3f, View(pk), View(pv), pm).ToFloatArray();
        for (int i = 0; i < expected.Length; i++)
            Assert.True(BitConverter.SingleToInt32Bits(expected[i]) == BitConverter.SingleToInt32Bits(actual[i]), $"{dtype} past view: out[{i}] {actual[i]:R}, contiguous {expected[i]:R}");
    }

    [Fact]
    public void A_16_bit_prefix_that_needs_a_gradient_is_refused_by_name()
    {
        using var scope = TensorScope.Begin();
        var q = Tensor.Full(new Shape(1, 2, 1, 4), 0.5f);
        var pk = Tensor.Full(new Shape(1, 3, 1, 4), 0.25f, DType.BF16);
        var pv = Tensor.Full(new Shape(1, 3, 1, 4), 0.25f, DType.BF16);
        q.RequiresGrad = true;
        var e = Assert.Throws<ArgumentException>(() => Ops.GlmAttention(q, q, q, null, 1f, pk, pv));
        Assert.Contains("prefixK", e.Message);
    }
}
