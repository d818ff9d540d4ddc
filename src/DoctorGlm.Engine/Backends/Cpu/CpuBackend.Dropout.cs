namespace DoctorGlm.Engine.Backends.Cpu;

public sealed unsafe partial class CpuBackend
{
    /// <inheritdoc />
    public void DropoutForward(Tensor x, Tensor y, float p, ulong stream)
    {
        float* px = x.Ptr<float>(), py = y.Ptr<float>();
        float scale = 1f / (1f - p);
        // One hash per element, indexed by the global flat position: chunking and thread count cannot change the mask.
        ForChunks(y.NumElements, (start, len) =>
        {
            for (long i = start, end = start + len; i < end; i++)
                py[i] = RandomGenerator.Uniform(stream, (ulong)i) >= p ? px[i] * scale : 0f;
        });
    }
}
