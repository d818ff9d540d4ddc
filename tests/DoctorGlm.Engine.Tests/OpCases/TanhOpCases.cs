using DoctorGlm.Engine.Tests.Harness;

namespace DoctorGlm.Engine.Tests.OpCases;

/// <summary>tanh (P-Tuning v2 prefix projection).</summary>
public sealed class TanhOpCases : IOpCases
{
    public IEnumerable<OpCase> Cases
    {
        get
        {
            yield return new OpCase("tanh.small", r => Instance(r, std: 1.0));
            // Saturated inputs: the (1 − y)(1 + y) backward must stay accurate where y ≈ ±1.
            yield return new OpCase("tanh.wide", r => Instance(r, std: 4.0));
        }
    }

    private static OpInstance Instance(Random r, double std)
    {
        int[] s = [r.Next(1, 7), r.Next(3, 40) | 1];
        return new OpInstance
        {
            Inputs = [OpInput.Randn(r, "x", s, std: std)],
            Forward = t => Ops.Tanh(t[0]),
            Reference = x => x[0].Select(Math.Tanh).ToArray(),
        };
    }
}
