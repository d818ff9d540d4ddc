using DoctorGlm.Engine.Backends.Cpu;

namespace DoctorGlm.Engine.Tests.Backends;

/// <summary>Column sums (bias gradients) on the CPU: parallel over column blocks, each column summed in double in row order.</summary>
public class CpuReductionTests
{
    [Theory]
    [InlineData(3, 7, false)]       // one block, scalar tail only
    [InlineData(300, 600, false)]   // three column blocks (the last partial), parallel
    [InlineData(257, 1030, true)]   // accumulating into y
    public void SumRowsMatchesADoubleReference(int rows, int n, bool accumulate)
    {
        var rng = new Random(rows * 31 + n);
        var x = Enumerable.Range(0, rows * n).Select(_ => (float)(rng.NextDouble() * 2 - 1) * 1000f).ToArray();
        var y0 = Enumerable.Range(0, n).Select(_ => (float)rng.NextDouble()).ToArray();
        using var scope = TensorScope.Begin();
        var tx = Tensor.FromArray(x, new Shape(rows, n));
        var ty = accumulate ? Tensor.FromArray(y0, new Shape(n)) : Tensor.Full(new Shape(n), float.NaN);
        CpuBackend.Instance.SumRows(tx, ty, accumulate);
        var got = ty.ToFloatArray();
        for (int j = 0; j < n; j++)
        {
            double sum = 0;
            for (int r = 0; r < rows; r++) sum += x[r * n + j];
            // The contract's arithmetic exactly: the column's double sum in row order, plus the old y, rounded once.
            Assert.Equal((float)((accumulate ? y0[j] : 0) + sum), got[j]);
        }
    }
}
