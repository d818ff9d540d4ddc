namespace DoctorGlm.Engine.Backends.Cpu;

// Temporary straightforward GEMM, replaced by the blocked implementation on the gemm branch.
internal static unsafe class CpuGemm
{
    public static void Sgemm(bool transA, bool transB, int m, int n, int k, float alpha, float* a, long lda, float* b, long ldb, float beta, float* c, long ldc)
    {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                float s = 0;
                for (int p = 0; p < k; p++)
                    s += (transA ? a[p * lda + i] : a[i * lda + p]) * (transB ? b[j * ldb + p] : b[p * ldb + j]);
                c[i * ldc + j] = beta == 0 ? alpha * s : alpha * s + beta * c[i * ldc + j];
            }
    }

    public static void SgemmBatched(bool transA, bool transB, int m, int n, int k, float alpha, float* a, long lda, long strideA, float* b, long ldb, long strideB, float beta, float* c, long ldc, long strideC, int batch)
    {
        for (int i = 0; i < batch; i++)
            Sgemm(transA, transB, m, n, k, alpha, a + i * strideA, lda, b + i * strideB, ldb, beta, c + i * strideC, ldc);
    }
}
