namespace DoctorGlm.Engine.Backends.Cpu;

public sealed unsafe partial class CpuBackend
{
    /// <inheritdoc />
    public void DropoutForward(Tensor x, Tensor y, float p, ulong stream)
    {
        float scale = 1f / (1f - p);
        // One hash per element, indexed by the global flat position: chunking and thread count cannot change the mask.
        // 16-bit x or y (the LoRA branch's input under 16-bit activations) go through CpuRows in runs.
        const int Run = 4096;
        ForChunks(y.NumElements, (start, len) =>
        {
            for (long o = start; o < start + len; o += Run)
            {
                int n = (int)Math.Min(Run, start + len - o);
                float* px = CpuRows.Read(x, o, n, 0), py = CpuRows.Target(y, o, n, 1);
                for (int j = 0; j < n; j++)
                    py[j] = RandomGenerator.Uniform(stream, (ulong)(o + j)) >= p ? px[j] * scale : 0f;
                CpuRows.Write(py, y, o, n);
            }
        });
    }
}
