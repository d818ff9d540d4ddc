using System.Runtime.InteropServices;

namespace DoctorGlm.Engine.Backends.Cpu;

/// <summary>
/// Runs of an activation tensor of any float dtype (F32, BF16, F16) seen as fp32, for the kernels that accept 16-bit
/// activations: a run of an F32 tensor is its own memory; a 16-bit run is widened exactly into a per-thread buffer,
/// and results meant for a 16-bit tensor are computed in fp32 and rounded once (to nearest even) when written back.
/// So a kernel computes the same fp32 arithmetic whatever the storage type, and only its inputs and its final
/// outputs are rounded — the contract the CUDA kernels implement with <c>load_as_f32</c>/<c>store_from_f32</c>.
/// </summary>
internal static unsafe class CpuRows
{
    /// <summary>Buffers per thread: a kernel may widen two inputs and stage one output at once.</summary>
    public const int Slots = 3;

    /// <summary>This thread's buffer <paramref name="slot"/>, at least <paramref name="n"/> floats (contents undefined).</summary>
    public static float* Buffer(int slot, int n) => Scratch.Get(slot, n);

    /// <summary>
    /// Pointer to <paramref name="n"/> fp32 values equal to elements [offset, offset + n) of contiguous
    /// <paramref name="t"/>: t's own memory when F32, else buffer <paramref name="slot"/> holding the widened values.
    /// </summary>
    public static float* Read(Tensor t, long offset, int n, int slot)
    {
        if (t.DType == DType.F32) return t.Ptr<float>() + offset;
        float* buffer = Scratch.Get(slot, n);
        CpuFloatConvert.ToSingle(t.DType, t.Ptr<byte>() + offset * t.DType.SizeOf(), buffer, n);
        return buffer;
    }

    /// <summary>
    /// Where a kernel writes <paramref name="n"/> fp32 results destined for elements [offset, offset + n) of
    /// <paramref name="t"/>: t's own memory when F32, else buffer <paramref name="slot"/> (then call <see cref="Write"/>).
    /// </summary>
    public static float* Target(Tensor t, long offset, int n, int slot) =>
        t.DType == DType.F32 ? t.Ptr<float>() + offset : Scratch.Get(slot, n);

    /// <summary>Rounds fp32 results staged by <see cref="Target"/> into a 16-bit <paramref name="t"/> (nothing to do for F32).</summary>
    public static void Write(float* results, Tensor t, long offset, int n)
    {
        if (t.DType == DType.F32) return;
        CpuFloatConvert.FromSingle(results, t.DType, t.Ptr<byte>() + offset * t.DType.SizeOf(), n);
    }

    /// <summary>Element <paramref name="i"/> of a float buffer of dtype <paramref name="t"/>, as fp32 (exact).</summary>
    public static float Load(byte* p, DType t, long i) => t switch
    {
        DType.F32 => ((float*)p)[i],
        DType.BF16 => HalfConvert.Bf16ToFloat(((ushort*)p)[i]),
        _ => HalfConvert.F16ToFloat(((ushort*)p)[i]),
    };

    /// <summary>Stores fp32 <paramref name="v"/> as element <paramref name="i"/> of a float buffer of dtype <paramref name="t"/> (round to nearest even).</summary>
    public static void Store(byte* p, DType t, long i, float v)
    {
        switch (t)
        {
            case DType.F32: ((float*)p)[i] = v; break;
            case DType.BF16: ((ushort*)p)[i] = HalfConvert.FloatToBf16(v); break;
            default: ((ushort*)p)[i] = HalfConvert.FloatToF16(v); break;
        }
    }

    /// <summary>
    /// Per-thread buffers, grown on demand and kept for the thread's life (freed by the finalizer when the thread and
    /// its ThreadStatic reference go away), like the GEMM's packing scratch.
    /// </summary>
    private sealed class Scratch
    {
        [ThreadStatic] private static Scratch? t_current;

        private readonly float*[] _buffers = new float*[Slots];
        private readonly int[] _capacity = new int[Slots];

        public static float* Get(int slot, int n)
        {
            if ((uint)slot >= Slots) throw new ArgumentOutOfRangeException(nameof(slot), slot, $"CpuRows has {Slots} buffers per thread");
            var s = t_current ??= new Scratch();
            if (s._capacity[slot] < n)
            {
                s._capacity[slot] = 0;
                NativeMemory.AlignedFree(s._buffers[slot]);
                s._buffers[slot] = null;
                s._buffers[slot] = (float*)NativeMemory.AlignedAlloc((nuint)n * sizeof(float), 64);
                s._capacity[slot] = n;
            }
            return s._buffers[slot];
        }

        ~Scratch()
        {
            for (int i = 0; i < Slots; i++) NativeMemory.AlignedFree(_buffers[i]);
        }
    }
}
