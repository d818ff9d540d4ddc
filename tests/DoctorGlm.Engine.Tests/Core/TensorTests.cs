using DoctorGlm.Engine.Backends.Cpu;

namespace DoctorGlm.Engine.Tests.Core;

public class TensorTests
{
    [Fact]
    public void ViewsShareStorageAndSurviveTheirParent()
    {
        using var scope = TensorScope.Begin();
        var t = Tensor.FromArray(Enumerable.Range(0, 24).Select(i => (float)i).ToArray(), new Shape(2, 3, 4));
        var v = t.Narrow(1, 1, 2);
        Assert.Same(t.Storage, v.Storage);
        Assert.False(v.IsContiguous);
        Assert.Equal(new float[] { 4, 5, 6, 7, 8, 9, 10, 11, 16, 17, 18, 19, 20, 21, 22, 23 }, v.ToFloatArray());
        var p = t.Permute(2, 0, 1);
        Assert.Equal(new Shape(4, 2, 3), p.Shape);
        Assert.Equal(new float[] { 0, 4, 8, 12, 16, 20 }, p.Contiguous().Narrow(0, 0, 1).ToFloatArray());
        t.Dispose();
        Assert.Equal(4f, v.ToFloatArray()[0]); // the view keeps the storage alive
    }

    [Fact]
    public void ScopeFreesWhatItAllocatedUnlessKept()
    {
        Tensor kept, dropped;
        using (TensorScope.Begin())
        {
            kept = Tensor.Zeros(new Shape(1000)).Keep();
            dropped = Tensor.Zeros(new Shape(1000));
        }
        Assert.True(dropped.IsDisposed);
        Assert.False(kept.IsDisposed);
        Assert.Throws<ObjectDisposedException>(() => dropped.ToFloatArray());
        Assert.True(dropped.Storage.IsReleased);
        kept.Dispose();
        Assert.True(kept.Storage.IsReleased);
    }

    [Fact]
    public void NestedScopesHandKeptTensorsToTheParent()
    {
        Tensor t;
        using (var outer = TensorScope.Begin())
        {
            using (TensorScope.Begin()) t = Tensor.Zeros(new Shape(3)).Keep();
            Assert.False(t.IsDisposed);
            Assert.Equal(1, outer.Count);
        }
        Assert.True(t.IsDisposed);
    }

    [Theory]
    [InlineData(1.0f, (ushort)0x3F80)]
    [InlineData(-2.5f, (ushort)0xC020)]
    [InlineData(1.00390625f, (ushort)0x3F80)]   // exactly halfway between 0x3F80 and 0x3F81: ties to even (down)
    [InlineData(1.01171875f, (ushort)0x3F82)]   // halfway between 0x3F81 and 0x3F82: ties to even (up)
    [InlineData(1.0039064f, (ushort)0x3F81)]    // just above halfway: rounds up
    [InlineData(float.PositiveInfinity, (ushort)0x7F80)]
    [InlineData(3.4028235e38f, (ushort)0x7F80)] // rounds to infinity like PyTorch
    public void Bf16RoundsToNearestEven(float f, ushort bits) => Assert.Equal(bits, HalfConvert.FloatToBf16(f));

    [Fact]
    public void Bf16KeepsNaN() => Assert.True(float.IsNaN(HalfConvert.Bf16ToFloat(HalfConvert.FloatToBf16(float.NaN))));

    [Fact]
    public void HalfStorageRoundTripsThroughCast()
    {
        using var scope = TensorScope.Begin();
        var values = new[] { 0.1f, 65504f, 1e-8f, -3.14159f, 70000f };
        var h = Tensor.FromArray(values, new Shape(5), DType.F16);
        var back = h.To(DType.F32).ToFloatArray();
        Assert.Equal((float)(Half)0.1f, back[0]);
        Assert.Equal(65504f, back[1]);
        Assert.Equal((float)(Half)1e-8f, back[2]);
        Assert.True(float.IsPositiveInfinity(back[4]));
        var b = Tensor.FromArray(values, new Shape(5), DType.BF16).ToFloatArray();
        Assert.Equal(HalfConvert.Bf16ToFloat(HalfConvert.FloatToBf16(-3.14159f)), b[3]);
    }

    [Fact]
    public void BadInputNamesTheTensorAndShapes()
    {
        using var scope = TensorScope.Begin();
        var x = Tensor.Zeros(new Shape(2, 5));
        x.Name = "hidden";
        var w = Tensor.Zeros(new Shape(3, 4));
        w.Name = "dense.weight";
        var e = Assert.Throws<ArgumentException>(() => Ops.Linear(x, w));
        Assert.Contains("'hidden' [2, 5]", e.Message);
        Assert.Contains("'dense.weight' [3, 4]", e.Message);
        var ids = Tensor.FromArray(new[] { 1, 2 }, new Shape(2));
        var e2 = Assert.Throws<ArgumentException>(() => Ops.MatMul(ids.Reshape(1, 2), w));
        Assert.Contains("must be F32", e2.Message);
        Assert.Throws<ArgumentException>(() => Tensor.FromArray(new float[5], new Shape(2, 3)));
        Assert.Throws<ArgumentOutOfRangeException>(() => x.Narrow(1, 3, 3));
    }

    [Fact]
    public void AllocatorReusesPooledBlocks()
    {
        // (other tests run in parallel, so only the pool's lower bound is asserted)
        for (int i = 0; i < 5; i++) using (TensorScope.Begin()) Tensor.Zeros(new Shape(123457));
        var after = CpuAllocator.Stats;
        Assert.True(after.PooledBytes >= CpuAllocator.SizeClass(123457 * 4));
    }
    [Fact]
    public void Reinterpret_views_packed_arrays_of_mixed_types_and_checks_bounds()
    {
        using var scope = TensorScope.Begin();
        int[] packed = [7, -1, 3, BitConverter.SingleToInt32Bits(1.5f), BitConverter.SingleToInt32Bits(-0.25f)];
        var t = Tensor.FromArray(packed, new Shape(packed.Length));
        using var ints = t.Reinterpret(DType.I32, new Shape(3), 0);
        using var floats = t.Reinterpret(DType.F32, new Shape(1, 2), 3);
        Assert.Equal([7, -1, 3], ints.ToIntArray());
        Assert.Equal([1.5f, -0.25f], floats.ToFloatArray());
        Assert.True(floats.IsContiguous);
        Assert.Throws<ArgumentOutOfRangeException>(() => t.Reinterpret(DType.F32, new Shape(3), 3));
        // Another element size: the offset counts the view's elements (bytes of a U8 view, halves of a BF16 one).
        using var bytes = t.Reinterpret(DType.U8, new Shape(2, 3), 3); // the last byte of 7, the four of −1, the first of 3
        Assert.Equal(new byte[] { 0, 0xff, 0xff, 0xff, 0xff, 3 }, bytes.ToBytes());
        using var upper = t.Reinterpret(DType.BF16, new Shape(1), 7); // the upper half of 1.5f: bf16 1.5
        Assert.Equal([1.5f], upper.ToFloatArray());
        Assert.Throws<ArgumentOutOfRangeException>(() => t.Reinterpret(DType.U8, new Shape(5), 16));
        Assert.Throws<ArgumentOutOfRangeException>(() => t.Reinterpret(DType.U8, new Shape(1), -1));
    }
}
