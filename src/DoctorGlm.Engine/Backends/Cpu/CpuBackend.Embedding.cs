using System.Numerics.Tensors;

namespace DoctorGlm.Engine.Backends.Cpu;

public sealed unsafe partial class CpuBackend
{
    /// <summary>Columns per task in the embedding scatter-add (256 floats = 1 KiB per row slice).</summary>
    private const int EmbeddingColumnBlock = 256;

    /// <inheritdoc />
    public void EmbeddingForward(Tensor ids, Tensor table, Tensor y, bool idsChecked = false)
    {
        int v = table.Shape[0], h = table.Shape[1];
        long n = ids.NumElements;
        int* pi = ids.Ptr<int>();
        byte* pt = table.Ptr<byte>();
        float* py = y.Ptr<float>();
        DType type = table.DType;
        int size = type.SizeOf();
        // Validate every id before touching the output, so a bad batch leaves no half-written result behind (always:
        // on the CPU the check is a pass over the ids, whatever the caller checked).
        for (long i = 0; i < n; i++)
            if ((uint)pi[i] >= (uint)v)
                throw new ArgumentOutOfRangeException(nameof(ids), pi[i], $"Embedding: ids[{i}] = {pi[i]} is outside the table's {v} rows");
        ForRows(n, h, i => CpuFloatConvert.ToSingle(type, pt + (long)pi[i] * h * size, py + i * h, h));
    }

    /// <inheritdoc />
    public void EmbeddingBackward(Tensor ids, Tensor dy, Tensor dtable)
    {
        int h = dtable.Shape[1];
        long n = ids.NumElements;
        int* pi = ids.Ptr<int>();
        float* pd = dy.Ptr<float>(), pt = dtable.Ptr<float>();
        dtable.AsSpan<float>().Clear();
        // Parallel over column blocks, never over ids: each task owns a disjoint slice of every table row, so
        // repeated ids never race and each element sums its contributions in id order (deterministic).
        int blocks = (h + EmbeddingColumnBlock - 1) / EmbeddingColumnBlock;
        void Block(int b)
        {
            int c0 = b * EmbeddingColumnBlock, len = Math.Min(EmbeddingColumnBlock, h - c0);
            for (long i = 0; i < n; i++)
            {
                var dst = new Span<float>(pt + (long)pi[i] * h + c0, len);
                TensorPrimitives.Add(dst, new ReadOnlySpan<float>(pd + i * h + c0, len), dst);
            }
        }
        if (n * h <= ParallelThreshold || blocks == 1) for (int b = 0; b < blocks; b++) Block(b);
        else Parallel.For(0, blocks, Block);
    }
}
