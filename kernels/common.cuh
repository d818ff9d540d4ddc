// Shared helpers for every kernel file. NVRTC compiles these sources at run time without NVIDIA's headers
// (cuda_fp16.h / cuda_bf16.h are not shipped with us), so the 16-bit conversions are defined here with inline
// PTX or plain bit manipulation, chosen to round exactly like the CPU reference (Core/HalfConvert.cs).
#pragma once

// DGLM_HOST_EMULATION: the file is being compiled by g++ for the host emulator (tools/kernel-emu), which supplies
// threadIdx, __syncthreads, warp shuffles and the tensor-core instructions through cuda_host.h. Only the inline
// PTX below differs between the two builds; every kernel's own code is the same text.

typedef unsigned char u8;
typedef signed char i8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

#define DGLM_INF __int_as_float(0x7f800000)

// dtype codes: the numeric values of the C# DType enum.
enum DTypeCode { DT_F32 = 0, DT_F16 = 1, DT_BF16 = 2, DT_I32 = 3, DT_U8 = 4, DT_I8 = 5 };

// fp32 -> bf16, round to nearest even; NaN stays a (quiet) NaN with the same top bits, exactly as
// HalfConvert.FloatToBf16 does (PTX cvt.rn.bf16.f32 would return the canonical NaN instead, breaking bit parity).
__device__ __forceinline__ u16 f32_to_bf16(float f) {
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x0040u);
    u32 lsb = (u >> 16) & 1u;
    u += 0x7fffu + lsb;
    return (u16)(u >> 16);
}

// bf16 -> fp32 is exact: the bf16 bits are the top half of the float.
__device__ __forceinline__ float bf16_to_f32(u16 b) { return __uint_as_float(((u32)b) << 16); }

// fp32 -> fp16 with the hardware's IEEE round-to-nearest-even conversion (same as System.Half).
__device__ __forceinline__ u16 f32_to_f16(float f) {
    u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)(((u >> 16) & 0x8000u) | 0x7e00u | ((u >> 13) & 0x03ffu));
#ifdef DGLM_HOST_EMULATION
    return dglm_emu_f32_to_f16(f);
#else
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
#endif
}

// fp16 -> fp32 (exact).
__device__ __forceinline__ float f16_to_f32(u16 h) {
    if ((h & 0x7fffu) > 0x7c00u) return __uint_as_float(((u32)(h & 0x8000u) << 16) | 0x7fc00000u | ((u32)(h & 0x03ffu) << 13));
#ifdef DGLM_HOST_EMULATION
    return dglm_emu_f16_to_f32(h);
#else
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#endif
}

// Reads element i of a float-format buffer of the given dtype as fp32.
__device__ __forceinline__ float load_as_f32(const void* p, i64 i, int dtype) {
    switch (dtype) {
        case DT_F16: return f16_to_f32(((const u16*)p)[i]);
        case DT_BF16: return bf16_to_f32(((const u16*)p)[i]);
        default: return ((const float*)p)[i];
    }
}

// Writes an fp32 value to element i of a float-format buffer, rounding to nearest even.
__device__ __forceinline__ void store_from_f32(void* p, i64 i, int dtype, float v) {
    switch (dtype) {
        case DT_F16: ((u16*)p)[i] = f32_to_f16(v); break;
        case DT_BF16: ((u16*)p)[i] = f32_to_bf16(v); break;
        default: ((float*)p)[i] = v; break;
    }
}

// Dynamic shared memory of a kernel, viewed as T (16-byte aligned).
#ifdef DGLM_HOST_EMULATION
#define DGLM_DYNAMIC_SHARED(T, name) T* name = (T*)dglm_emu_dynamic_shared()
#else
#define DGLM_DYNAMIC_SHARED(T, name) extern __shared__ __align__(16) T name[]
#endif

// Grid-stride loop over [0, n): kernels stay correct for any launch size.
#define GRID_STRIDE(i, n) for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)blockDim.x * gridDim.x)

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ double warp_sum(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Block-wide sum (blockDim.x a multiple of 32, at most 1024). Every thread gets the result. The reduction tree is
// fixed by the launch shape, so a given input always sums in the same order (deterministic).
template <typename T>
__device__ T block_sum(T v) {
    __shared__ T partial[32];
    int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads(); // partial may still be read by a previous call
    if (lane == 0) partial[warp] = v;
    __syncthreads();
    T r = lane < warps ? partial[lane] : (T)0;
    return warp_sum(r);
}

// SplitMix64's finaliser, as RandomGenerator.Mix.
__device__ __forceinline__ u64 splitmix_mix(u64 z) {
    z += 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

// RandomGenerator.Uniform: 24 random bits scaled by 2^-24 (exact in fp32), same value on every backend.
__device__ __forceinline__ float counter_uniform(u64 stream, u64 index) {
    return (float)(splitmix_mix(stream ^ (index * 0xD1B54A32D192ED03ull)) >> 40) * (1.0f / 16777216.0f);
}

// ---------------------------------------------------------------- tensor cores (sm_80+)
// mma.sync.m16n8k16 with bf16 inputs and fp32 accumulators. Fragment ownership (PTX ISA, "Matrix fragments for
// mma.m16n8k16"), lane = 4·g + t:
//   A 16×16 (row-major), 4 registers of two bf16 (lower column in the low half):
//     a[0] = A[g][2t..2t+1], a[1] = A[g+8][2t..2t+1], a[2] = A[g][2t+8..2t+9], a[3] = A[g+8][2t+8..2t+9]
//   B 16×8 (k × n), 2 registers: b[0] = B[2t..2t+1][g], b[1] = B[2t+8..2t+9][g]
//   C/D 16×8 fp32: c[0..1] = C[g][2t..2t+1], c[2..3] = C[g+8][2t..2t+1]
// So an accumulator tile pair (n-tiles 2j and 2j+1) rounded to bf16 is exactly the A fragment of the next product
// (the flash-attention trick that keeps P in registers).

// Two floats rounded to nearest-even bf16 and packed, `lo` in the low half (the mma operand order).
__device__ __forceinline__ u32 pack_bf16x2(float lo, float hi) {
#ifdef DGLM_HOST_EMULATION
    return (u32)f32_to_bf16(lo) | ((u32)f32_to_bf16(hi) << 16);
#else
    u32 r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo)); // the first source goes to the upper half
    return r;
#endif
}

// d += A·B for one 16×16 A fragment and one 16×8 B fragment (layouts above).
__device__ __forceinline__ void mma_bf16_16816(float (&d)[4], const u32 (&a)[4], u32 b0, u32 b1) {
#ifdef DGLM_HOST_EMULATION
    dglm_emu_mma_bf16_16816(d, a, b0, b1);
#else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
}

// ldmatrix.x4.trans: four 8×8 bf16 matrices from shared memory, each transposed on the way. Lane 8·m + r passes
// the address of row r of matrix m (16-byte aligned); lane 4·i + j receives, of matrix m, the pair
// (row 2j, column i), (row 2j + 1, column i) in r[m]. Pointed at a row-major [k][n] tile with lane l addressing
// row (l & 7) + 8·((l >> 3) & 1), column 8·(l >> 4), r[0..1] is the B fragment of columns 0..7 and r[2..3] that of
// columns 8..15: a B operand stored n-minor (V as [key][d], Q as [query][d]) without a transposing copy.
__device__ __forceinline__ void ldsm_x4_trans(u32 (&r)[4], const u16* p) {
#ifdef DGLM_HOST_EMULATION
    dglm_emu_ldsm_x4_trans(r, p);
#else
    u32 addr;
    asm("{ .reg .u64 a; cvta.to.shared.u64 a, %1; cvt.u32.u64 %0, a; }" : "=r"(addr) : "l"(p));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(addr));
#endif
}
