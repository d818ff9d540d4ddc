using DoctorGlm.Engine.Tests.Harness;

namespace DoctorGlm.Engine.Tests.OpCases;

/// <summary>Matrix products, linear layers, elementwise ops and views.</summary>
public sealed class CoreOpCases : IOpCases
{
    private static int Odd(Random r, int lo, int hi) => r.Next(lo, hi) | 1;

    /// <summary>Naive double product of op(a)·op(b) for one batch; a and b in their stored layouts.</summary>
    internal static void RefGemm(bool ta, bool tb, int m, int n, int k, double[] a, int ao, double[] b, int bo, double[] c, int co)
    {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
            {
                double s = 0;
                for (int p = 0; p < k; p++)
                    s += (ta ? a[ao + p * m + i] : a[ao + i * k + p]) * (tb ? b[bo + j * k + p] : b[bo + p * n + j]);
                c[co + i * n + j] = s;
            }
    }

    public IEnumerable<OpCase> Cases
    {
        get
        {
            foreach (bool ta in new[] { false, true })
                foreach (bool tb in new[] { false, true })
                {
                    yield return new OpCase($"matmul.ta{(ta ? 1 : 0)}tb{(tb ? 1 : 0)}", r => MatMul(r, ta, tb, batch: 1 + r.Next(3), shared: false));
                    yield return new OpCase($"matmul.shared.ta{(ta ? 1 : 0)}tb{(tb ? 1 : 0)}", r => MatMul(r, ta, tb, batch: 2 + r.Next(2), shared: true));
                }
            yield return new OpCase("linear.bias", r => Linear(r, bias: true));
            yield return new OpCase("linear.nobias", r => Linear(r, bias: false));
            // A bf16 activation through an fp32 (trainable) weight: y is bf16 (rounded once, after the bias); the CUDA
            // backend rounds the weight (forward) and dY (for dW) to bf16 in the mixed products: 1e-2 for gradients.
            yield return new OpCase("linear.bias.bf16", r => Linear(r, bias: true, DType.BF16));
            // No bias: the GEMM writes the bf16 output itself.
            yield return new OpCase("linear.nobias.bf16", r => Linear(r, bias: false, DType.BF16));
            yield return new OpCase("elementwise.addscaled", r =>
            {
                int[] s = [Odd(r, 1, 6), Odd(r, 3, 20)];
                float alpha = 7.483315f, beta = -0.5f;
                return new OpInstance
                {
                    Inputs = [OpInput.Randn(r, "a", s), OpInput.Randn(r, "b", s)],
                    Forward = t => Ops.AddScaled(t[0], alpha, t[1], beta),
                    Reference = x => x[0].Zip(x[1], (a, b) => alpha * a + beta * b).ToArray(),
                };
            });
            // 16-bit activations (a block's residual under bf16 activations): same-type operands give that type, a
            // mixed pair gives F32; one operand used twice takes the kernels' a·(α + β) path.
            foreach (var (da, db) in new[] { (DType.BF16, DType.BF16), (DType.F16, DType.F16), (DType.BF16, DType.F32) })
                yield return new OpCase($"elementwise.addscaled.{da}_{db}".ToLowerInvariant(), r =>
                {
                    int[] s = [Odd(r, 1, 6), Odd(r, 3, 20)];
                    float alpha = 7.483315f, beta = -0.5f;
                    return new OpInstance
                    {
                        Inputs = [OpInput.Randn(r, "a", s).Rounded(da), OpInput.Randn(r, "b", s).Rounded(db)],
                        Forward = t => Ops.AddScaled(t[0], alpha, t[1], beta),
                        Reference = x => x[0].Zip(x[1], (a, b) => alpha * a + beta * b).ToArray(),
                        ForwardTolerance = OpInstance.OutputTolerance(da == db ? da : DType.F32),
                        OutputDType = da == db ? da : DType.F32,
                    };
                });
            yield return new OpCase("elementwise.addscaled.same_bf16", r =>
            {
                int[] s = [Odd(r, 1, 6), Odd(r, 3, 20)];
                return new OpInstance
                {
                    Inputs = [OpInput.Randn(r, "a", s).Rounded(DType.BF16)],
                    Forward = t => Ops.AddScaled(t[0], 1.75f, t[0], 0.5f),
                    Reference = x => x[0].Select(a => 2.25 * a).ToArray(),
                    ForwardTolerance = OpInstance.OutputTolerance(DType.BF16),
                    OutputDType = DType.BF16,
                };
            });
            // A biased linear's output joined to the scaled residual (a cached step's residual adds): bias [f] over rows.
            yield return new OpCase("elementwise.addscaled_with_bias", r =>
            {
                int rows = Odd(r, 1, 6), f = Odd(r, 3, 20);
                float alpha = 7.483315f;
                return new OpInstance
                {
                    Inputs = [OpInput.Randn(r, "a", [rows, f]), OpInput.Randn(r, "b", [rows, f]), OpInput.Randn(r, "bias", [f])],
                    Forward = t => Ops.AddScaledWithBias(t[0], alpha, t[1], t[2]),
                    Reference = x => Enumerable.Range(0, rows * f).Select(i => alpha * x[0][i] + (x[1][i] + x[2][i % f])).ToArray(),
                };
            });
            // Under bf16 activations: the residual a and y in bf16, b + bias rounded to bf16 before the add.
            yield return new OpCase("elementwise.addscaled_with_bias.bf16", r =>
            {
                int rows = Odd(r, 1, 6), f = Odd(r, 3, 20);
                float alpha = 7.483315f;
                return new OpInstance
                {
                    Inputs = [OpInput.Randn(r, "a", [rows, f]).Rounded(DType.BF16), OpInput.Randn(r, "b", [rows, f]), OpInput.Randn(r, "bias", [f])],
                    Forward = t => Ops.AddScaledWithBias(t[0], alpha, t[1], t[2]),
                    Reference = x => Enumerable.Range(0, rows * f).Select(i => alpha * x[0][i] + (x[1][i] + x[2][i % f])).ToArray(),
                    ForwardTolerance = OpInstance.OutputTolerance(DType.BF16),
                    OutputDType = DType.BF16,
                };
            });
            yield return new OpCase("elementwise.mul", r =>
            {
                int[] s = [Odd(r, 1, 9), Odd(r, 1, 9), 3];
                return new OpInstance
                {
                    Inputs = [OpInput.Randn(r, "a", s), OpInput.Randn(r, "b", s)],
                    Forward = t => Ops.Mul(t[0], t[1]),
                    Reference = x => x[0].Zip(x[1], (a, b) => a * b).ToArray(),
                };
            });
            yield return new OpCase("views.permute_narrow_reshape", r =>
            {
                int a = Odd(r, 2, 6), b = Odd(r, 3, 7), c = 4;
                int start = 1, len = b - 2;
                return new OpInstance
                {
                    Inputs = [OpInput.Randn(r, "x", [a, b, c])],
                    // [a,b,c] → permute to [c,a,b] → narrow b → contiguous → reshape to [c, a·len] → scale
                    Forward = t => Ops.Scale(t[0].Permute(2, 0, 1).Narrow(2, start, len).Reshape(c, -1), 1.5f),
                    Reference = x =>
                    {
                        var y = new double[c * a * len];
                        int o = 0;
                        for (int k = 0; k < c; k++) for (int i = 0; i < a; i++) for (int j = start; j < start + len; j++) y[o++] = 1.5 * x[0][(i * b + j) * c + k];
                        return y;
                    },
                };
            });
            yield return new OpCase("reduce.sum", r => new OpInstance
            {
                Inputs = [OpInput.Randn(r, "x", [Odd(r, 1, 30), 5])],
                Forward = t => Ops.Mean(t[0]),
                Reference = x => [x[0].Average()],
            });
        }
    }

    private static OpInstance MatMul(Random r, bool ta, bool tb, int batch, bool shared)
    {
        int m = Odd(r, 1, 20), n = Odd(r, 1, 20), k = Odd(r, 1, 24);
        int[] aShape = ta ? [batch, k, m] : [batch, m, k];
        int[] bShape = shared ? (tb ? [n, k] : [k, n]) : (tb ? [batch, n, k] : [batch, k, n]);
        return new OpInstance
        {
            Inputs = [OpInput.Randn(r, "a", aShape), OpInput.Randn(r, "b", bShape)],
            Forward = t => Ops.MatMul(t[0], t[1], ta, tb),
            Reference = x =>
            {
                var c = new double[batch * m * n];
                for (int i = 0; i < batch; i++) RefGemm(ta, tb, m, n, k, x[0], i * m * k, x[1], shared ? 0 : i * k * n, c, i * m * n);
                return c;
            },
        };
    }

    private static OpInstance Linear(Random r, bool bias, DType activation = DType.F32)
    {
        int rows = Odd(r, 1, 7), seq = 2, inF = Odd(r, 3, 33), outF = Odd(r, 1, 29);
        var inputs = new List<OpInput> { OpInput.Randn(r, "x", [rows, seq, inF]).Rounded(activation), OpInput.Randn(r, "weight", [outF, inF], std: 0.3) };
        if (bias) inputs.Add(OpInput.Randn(r, "bias", [outF]));
        return new OpInstance
        {
            Inputs = inputs.ToArray(),
            Forward = t => Ops.Linear(t[0], t[1], bias ? t[2] : null),
            Reference = x =>
            {
                var y = new double[rows * seq * outF];
                RefGemm(false, true, rows * seq, outF, inF, x[0], 0, x[1], 0, y, 0);
                if (bias) for (int i = 0; i < rows * seq; i++) for (int o = 0; o < outF; o++) y[i * outF + o] += x[2][o];
                return y;
            },
            ForwardTolerance = activation == DType.F32 ? 2e-5 : 1e-2,
            GradTolerance = activation == DType.F32 ? 1e-4 : 1e-2,
            OutputDType = activation,
        };
    }
}
