namespace DoctorGlm.Engine.Backends.Cuda;

/// <summary>Which kernels <see cref="CudaBackend"/> uses for GLM attention (<see cref="CudaBackend.AttentionKernel"/>).</summary>
public enum CudaAttentionKernel
{
    /// <summary>
    /// The fp32 tiled online-softmax kernels of <c>kernels/attention.cu</c>: every product in fp32, within about
    /// 1e-5 of the CPU backend, any head size. Correctness first; far from the GPU's tensor-core throughput.
    /// </summary>
    Fp32,

    /// <summary>
    /// The tensor-core kernels of <c>kernels/attention_mma.cu</c> (FlashAttention-2 schedule, <c>mma.sync</c> bf16 with
    /// fp32 accumulation): Q, K, V, dO and the probabilities P and dS are rounded to bf16 for the products, softmax
    /// statistics and every output stay fp32, so results are within about 1e-2 (relative to the largest element) of
    /// the CPU backend — the precision a bf16 model computes at anyway. Used for head sizes 64 and 128 on compute
    /// capability 8.0 and newer with 16-byte-aligned rows; other calls fall back to <see cref="Fp32"/>.
    /// </summary>
    TensorCores,

    /// <summary>
    /// The default: <see cref="TensorCores"/> where q, k and v are BF16 — the caller already keeps them at bf16's
    /// precision, so the kernels round only the probabilities P (and dO, dS in backward) beyond it — and
    /// <see cref="Fp32"/> for F32 and F16 activations (the tensor-core kernels would round F16 to bf16's shorter
    /// mantissa). A forward and its backward see the same dtypes, so they always run the same kernel set.
    /// </summary>
    Auto,
}
