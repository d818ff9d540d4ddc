using DoctorGlm.Engine.Tests.Harness;

namespace DoctorGlm.Engine.Tests.OpCases;

/// <summary>2D rotary embedding, GLM attention (masks, prefix, layer coefficient) and LoRA linear layers.</summary>
public sealed class AttentionOpCases : IOpCases
{
    public IEnumerable<OpCase> Cases
    {
        get
        {
            yield return new OpCase("rotary2d.random_ids", r => Rotary(r)) { Seeds = 4 };
        }
    }

    // ---------------------------------------------------------------- rotary

    /// <summary>Reference inv_freq, written from the spec: fp32 1/10000^(2j/r) rounded to fp16.</summary>
    internal static double RefInvFreq(int j, int r) => (double)(Half)(float)(1.0 / Math.Pow(10000.0, 2.0 * j / r));

    internal static double[] RefRotary(double[] x, double[] ids, int batch, int seq, int heads, int d)
    {
        var y = new double[x.Length];
        int r = d / 2, h = r / 2;
        for (int b = 0; b < batch; b++)
            for (int s = 0; s < seq; s++)
                for (int n = 0; n < heads; n++)
                    for (int half = 0; half < 2; half++)
                    {
                        double p = ids[(b * 2 + half) * seq + s];
                        int o = ((b * seq + s) * heads + n) * d + half * r;
                        for (int j = 0; j < h; j++)
                        {
                            double a = p * RefInvFreq(j, r);
                            y[o + j] = x[o + j] * Math.Cos(a) - x[o + j + h] * Math.Sin(a);
                            y[o + j + h] = x[o + j + h] * Math.Cos(a) + x[o + j] * Math.Sin(a);
                        }
                    }
        return y;
    }

    private static OpInstance Rotary(Random r)
    {
        int batch = 1 + r.Next(3), seq = 1 + r.Next(9), heads = 1 + r.Next(3), d = 4 * (1 + r.Next(3));
        var ids = new double[batch * 2 * seq];
        for (int i = 0; i < ids.Length; i++) ids[i] = r.Next(0, 60);
        return new OpInstance
        {
            Inputs =
            [
                OpInput.Randn(r, "x", [batch, seq, heads, d]),
                new OpInput { Name = "position_ids", Shape = [batch, 2, seq], Data = ids, DType = DType.I32 },
            ],
            Forward = t => Ops.Rotary2D(t[0], t[1]),
            Reference = x => RefRotary(x[0], x[1], batch, seq, heads, d),
        };
    }
}
