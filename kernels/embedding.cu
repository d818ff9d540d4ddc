// Embedding gather and its deterministic scatter-add backward (CpuBackend.Embedding.cs).
#include "common.cuh"

// Finds the first flat position whose id is outside [0, V) (atomicMin on a slot the host set to n), so the host
// can throw before the gather writes anything, naming that position as the CPU does.
extern "C" __global__ void embedding_validate(const int* ids, i64 n, int vocab, unsigned long long* first_bad) {
    GRID_STRIDE(i, n) {
        if ((unsigned)ids[i] >= (unsigned)vocab) atomicMin(first_bad, (unsigned long long)i);
    }
}

// y[i, :] = table[ids[i], :]; one element per thread over the n·h outputs. The table may be stored in fp32, bf16
// or fp16 (a frozen 16-bit embedding); y is fp32.
extern "C" __global__ void embedding_forward(const int* ids, const void* table, int table_dtype, float* y, i64 n, i64 h) {
    GRID_STRIDE(e, n * h) {
        i64 i = e / h, c = e % h;
        y[e] = load_as_f32(table, (i64)ids[i] * h + c, table_dtype);
    }
}

// dtable = Σ_i e_{ids[i]} ⊗ dy[i, :]. One thread per column walks the ids in index order: no atomics, no races
// (every thread owns one column of every row), and repeated ids add in the same order as the CPU's loop, so the
// result is deterministic and bit-identical to it. dtable is zeroed by the host first.
extern "C" __global__ void embedding_backward(const int* ids, const float* dy, float* dtable, i64 n, i64 h) {
    GRID_STRIDE(c, h) {
        for (i64 i = 0; i < n; i++) {
            i64 dst = (i64)ids[i] * h + c;
            dtable[dst] = dtable[dst] + dy[i * h + c];
        }
    }
}
