// Runs kernels/attention_mma.cu (tensor-core GLM attention) under the host emulator and compares forward output,
// lse and every gradient with a double-precision reference of the same contract (CpuBackend.Attention.cs), on
// the bf16-rounded inputs the kernel stages. Exit status 0 when every case is within tolerance.
// Build and run: tools/kernel-emu/run.sh
#include "../../kernels/attention_mma.cu"

#include <cstdio>
#include <random>
#include <string>

namespace {

struct Case {
    const char* name;
    int B, S, H, D, N;
    enum { None, Glm, Causal } mask;
    bool fullyBlockedRow; // one row of batch 0 sees no key at all (only meaningful with N = 0)
};

float round_bf16(float x) { return bf16_to_f32(f32_to_bf16(x)); }

struct Tensors {
    std::vector<float> q, k, v, pk, pv, dout;
    std::vector<u8> mask;
};

// Relative error max|a − r| / max|r| over a tensor; reports and returns pass/fail.
bool compare(const char* what, const std::vector<float>& got, const std::vector<double>& ref, double tol) {
    double maxRef = 0, maxErr = 0;
    bool finite = true;
    for (size_t i = 0; i < ref.size(); i++) {
        if (!std::isfinite(got[i])) finite = false;
        maxRef = std::max(maxRef, std::fabs(ref[i]));
        maxErr = std::max(maxErr, std::fabs(got[i] - ref[i]));
    }
    double rel = maxRef > 0 ? maxErr / maxRef : maxErr;
    bool ok = finite && rel <= tol && maxRef > 0;
    std::printf("    %-5s max|ref| %9.4g  rel err %9.3g  (tol %g)%s\n", what, maxRef, rel, tol, ok ? "" : "  FAIL");
    return ok;
}

bool run(const Case& c, std::mt19937& rng) {
    int B = c.B, S = c.S, H = c.H, D = c.D, N = c.N, T = N + S;
    std::printf("%s: B=%d S=%d H=%d d=%d prefix=%d\n", c.name, B, S, H, D, N);
    std::normal_distribution<float> nd(0.0f, 1.0f);
    Tensors x;
    auto fill = [&](std::vector<float>& t, size_t n) { t.resize(n); for (auto& e : t) e = nd(rng); };
    fill(x.q, (size_t)B * S * H * D);
    fill(x.k, (size_t)B * S * H * D);
    fill(x.v, (size_t)B * S * H * D);
    fill(x.dout, (size_t)B * S * H * D);
    fill(x.pk, (size_t)B * std::max(N, 1) * H * D);
    fill(x.pv, (size_t)B * std::max(N, 1) * H * D);
    if (c.mask != Case::None) {
        x.mask.assign((size_t)B * S * S, 0);
        for (int b = 0; b < B; b++) {
            int context = c.mask == Case::Glm ? S / 3 + 7 * b : 0; // GLM: bidirectional over the prompt, causal after
            for (int i = 0; i < S; i++)
                for (int j = 0; j < S; j++) x.mask[((size_t)b * S + i) * S + j] = (j > i && j >= context) ? 1 : 0;
        }
        if (c.fullyBlockedRow) {
            // Row 5 of batch 0 sees nothing: uniform P = 1/S over every key, zero dS. Its dO is made large so that
            // its share of dV (which reaches keys in otherwise all-blocked tiles) stands out of the tolerance.
            for (int j = 0; j < S; j++) x.mask[(size_t)5 * S + j] = 1;
            for (int hh = 0; hh < H; hh++)
                for (int e = 0; e < D; e++) x.dout[((size_t)5 * H + hh) * D + e] *= 50.0f;
        }
    }
    float scale = 1.0f / std::sqrt((float)D), masked = -10000.0f;

    // Reference on the values the kernel sees (inputs rounded to bf16), in double.
    auto rq = x.q, rk = x.k, rv = x.v, rpk = x.pk, rpv = x.pv, rdo = x.dout;
    for (auto* t : {&rq, &rk, &rv, &rpk, &rpv, &rdo}) for (auto& e : *t) e = round_bf16(e);
    std::vector<double> out(x.q.size()), lse((size_t)B * H * S), dq(x.q.size()), dk(x.q.size()), dv(x.q.size()),
        dpk(x.pk.size()), dpv(x.pk.size());
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < S; i++) {
                auto key = [&](const std::vector<float>& seq, const std::vector<float>& pre, int kk) {
                    return kk < N ? &pre[(((size_t)b * N + kk) * H + h) * D] : &seq[(((size_t)b * S + kk - N) * H + h) * D];
                };
                const float* qi = &rq[(((size_t)b * S + i) * H + h) * D];
                const float* gi = &rdo[(((size_t)b * S + i) * H + h) * D];
                std::vector<double> s(T), p(T), dp(T);
                std::vector<bool> blocked(T);
                double mx = -INFINITY;
                bool any = false;
                for (int kk = 0; kk < T; kk++) {
                    blocked[kk] = kk >= N && !x.mask.empty() && x.mask[((size_t)b * S + i) * S + kk - N];
                    any |= !blocked[kk];
                    double acc = 0;
                    const float* kr = key(rk, rpk, kk);
                    for (int e = 0; e < D; e++) acc += (double)qi[e] * kr[e];
                    s[kk] = blocked[kk] ? masked : scale * acc;
                    mx = std::max(mx, s[kk]);
                }
                double sum = 0;
                for (int kk = 0; kk < T; kk++) sum += p[kk] = std::exp(s[kk] - mx);
                for (int kk = 0; kk < T; kk++) p[kk] /= sum;
                lse[((size_t)b * H + h) * S + i] = mx + std::log(sum);
                double* o = &out[(((size_t)b * S + i) * H + h) * D];
                for (int kk = 0; kk < T; kk++) {
                    const float* vr = key(rv, rpv, kk);
                    for (int e = 0; e < D; e++) o[e] += p[kk] * vr[e];
                }
                double delta = 0;
                for (int kk = 0; kk < T; kk++) {
                    const float* vr = key(rv, rpv, kk);
                    double a = 0;
                    for (int e = 0; e < D; e++) a += (double)gi[e] * vr[e];
                    dp[kk] = a;
                    delta += p[kk] * a;
                }
                for (int kk = 0; kk < T; kk++) {
                    double ds = blocked[kk] || !any ? 0.0 : p[kk] * (dp[kk] - delta) * scale;
                    const float* kr = key(rk, rpk, kk);
                    double* dqi = &dq[(((size_t)b * S + i) * H + h) * D];
                    bool pre = kk < N;
                    size_t ko = pre ? (((size_t)b * N + kk) * H + h) * D : (((size_t)b * S + kk - N) * H + h) * D;
                    double* dkr = pre ? &dpk[ko] : &dk[ko];
                    double* dvr = pre ? &dpv[ko] : &dv[ko];
                    for (int e = 0; e < D; e++) {
                        dqi[e] += ds * kr[e];
                        dkr[e] += ds * qi[e];
                        dvr[e] += p[kk] * gi[e];
                    }
                }
            }

    // Kernels, with poisoned outputs.
    const float nan = std::nanf("");
    std::vector<float> gOut(x.q.size(), nan), gLse(lse.size(), nan), gDq(x.q.size(), nan), gDk(x.q.size(), nan),
        gDv(x.q.size(), nan), gDpk(x.pk.size(), nan), gDpv(x.pk.size(), nan);
    const u8* m = x.mask.empty() ? nullptr : x.mask.data();
    const float* pk = N ? x.pk.data() : nullptr;
    const float* pv = N ? x.pv.data() : nullptr;
    int LD = D + 8;
    dglm_dim3 block{ATT_THREADS, 1, 1};
    dglm_dim3 gridQ{(unsigned)((S + ATT_BQ - 1) / ATT_BQ), (unsigned)H, (unsigned)B};
    dglm_dim3 gridK{(unsigned)((T + ATT_BK - 1) / ATT_BK), (unsigned)H, (unsigned)B};
    size_t fwdShared = (size_t)(ATT_BQ + 2 * ATT_BK) * LD * 2 + ATT_BQ * ATT_BK;
    size_t dqShared = (size_t)(2 * ATT_BQ + 2 * ATT_BK) * LD * 2 + ATT_BQ * ATT_BK;
    size_t dkvShared = (size_t)(2 * ATT_BK + 2 * ATT_BQ_DKV) * LD * 2 + 3 * ATT_BQ_DKV * 4 + ATT_BQ_DKV * ATT_BK;
    bool launched = dglm_emu::launch(gridQ, block, fwdShared, [&] {
        if (D == 64) attention_mma_forward_d64(x.q.data(), x.k.data(), x.v.data(), pk, pv, m, S, N, H, scale, masked, gOut.data(), gLse.data());
        else attention_mma_forward_d128(x.q.data(), x.k.data(), x.v.data(), pk, pv, m, S, N, H, scale, masked, gOut.data(), gLse.data());
    });
    // attention_backward_prep (attention.cu): delta = dO·O per row, and the rows that see no key.
    std::vector<float> delta(lse.size());
    std::vector<int> fully(lse.size());
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < S; i++) {
                size_t row = ((size_t)b * H + h) * S + i, o = (((size_t)b * S + i) * H + h) * D;
                float a = 0;
                for (int e = 0; e < D; e++) a += x.dout[o + e] * gOut[o + e];
                delta[row] = a;
                int blk = 0;
                if (N == 0 && m) {
                    blk = 1;
                    for (int j = 0; j < S && blk; j++) blk = m[((size_t)b * S + i) * S + j] != 0;
                }
                fully[row] = blk;
            }
    launched &= dglm_emu::launch(gridQ, block, dqShared, [&] {
        if (D == 64) attention_mma_backward_dq_d64(x.q.data(), x.k.data(), x.v.data(), pk, pv, m, gLse.data(), delta.data(), x.dout.data(), S, N, H, scale, gDq.data());
        else attention_mma_backward_dq_d128(x.q.data(), x.k.data(), x.v.data(), pk, pv, m, gLse.data(), delta.data(), x.dout.data(), S, N, H, scale, gDq.data());
    });
    launched &= dglm_emu::launch(gridK, block, dkvShared, [&] {
        if (D == 64)
            attention_mma_backward_dkv_d64(x.q.data(), x.k.data(), x.v.data(), pk, pv, m, gLse.data(), delta.data(), fully.data(), x.dout.data(),
                                           S, N, H, scale, masked, gDk.data(), gDv.data(), N ? gDpk.data() : nullptr, N ? gDpv.data() : nullptr);
        else
            attention_mma_backward_dkv_d128(x.q.data(), x.k.data(), x.v.data(), pk, pv, m, gLse.data(), delta.data(), fully.data(), x.dout.data(),
                                            S, N, H, scale, masked, gDk.data(), gDv.data(), N ? gDpk.data() : nullptr, N ? gDpv.data() : nullptr);
    });

    // Tolerances: P and dS are rounded to bf16 before their products (8 bits of mantissa, ~2e-3 relative per
    // element, averaging down over the sums); the lse is fp32 arithmetic on the same scores.
    if (!launched) {
        std::printf("    launch failed: %s\n", dglm_emu::error.c_str());
        return false;
    }
    bool ok = compare("out", gOut, out, 1e-2);
    double lseErr = 0;
    bool lseFinite = true;
    for (size_t i = 0; i < lse.size(); i++) {
        lseFinite &= std::isfinite(gLse[i]);
        lseErr = std::max(lseErr, std::fabs(gLse[i] - lse[i]) / std::max(1.0, std::fabs(lse[i])));
    }
    bool lseOk = lseFinite && lseErr <= 1e-4;
    std::printf("    lse   rel err %9.3g  (tol 1e-4)%s\n", lseErr, lseOk ? "" : "  FAIL");
    ok &= lseOk;
    ok &= compare("dq", gDq, dq, 2e-2);
    ok &= compare("dk", gDk, dk, 2e-2);
    ok &= compare("dv", gDv, dv, 2e-2);
    if (N) {
        ok &= compare("dpk", gDpk, dpk, 2e-2);
        ok &= compare("dpv", gDpv, dpv, 2e-2);
    }
    return ok;
}

} // namespace

int main(int argc, char** argv) {
    std::vector<Case> cases = {
        {"glm-mask d64", 2, 77, 2, 64, 0, Case::Glm, true},
        {"glm-mask prefix d128", 1, 70, 2, 128, 9, Case::Glm, false},
        {"no mask d128", 1, 33, 1, 128, 0, Case::None, false},
        {"causal skip d64", 1, 150, 1, 64, 0, Case::Causal, false},
        // P-Tuning v2's default: 128 prefix keys, two whole key tiles before the sequence's own.
        {"ptuning prefix128 d128", 2, 45, 1, 128, 128, Case::Glm, false},
    };
    std::mt19937 rng(1234);
    int failed = 0;
    for (auto& c : cases)
        if (argc < 2 || std::string(c.name).find(argv[1]) != std::string::npos) failed += run(c, rng) ? 0 : 1;
    std::printf("%s\n", failed ? "FAILED" : "all cases within tolerance");
    return failed ? 1 : 0;
}
