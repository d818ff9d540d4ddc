using System.Numerics;

namespace DoctorGlm.Engine.Evaluation;

/// <summary>
/// The few Python/NumPy numeric behaviours the reference metrics depend on, reproduced bit for bit so that reported
/// scores match the Python pipeline's printed values: <c>math.fsum</c>, <c>round(x, ndigits)</c> and <c>np.mean</c>.
/// </summary>
internal static class PyMath
{
    /// <summary>Python's <c>math.fsum</c>: the correctly rounded sum (Shewchuk's exact partials, as CPython does).</summary>
    public static double FSum(ReadOnlySpan<double> values)
    {
        var partials = new List<double>();
        foreach (var v in values)
        {
            double x = v;
            int i = 0;
            // In-place partials update (writes at i <= j, so the read of partials[j] is still the old value).
            for (int j = 0; j < partials.Count; j++)
            {
                double y = partials[j];
                if (Math.Abs(x) < Math.Abs(y)) (x, y) = (y, x);
                double hi = x + y;
                double lo = y - (hi - x);
                if (lo != 0.0) partials[i++] = lo;
                x = hi;
            }
            partials.RemoveRange(i, partials.Count - i);
            partials.Add(x);
        }
        // Sum the partials from the top, with CPython's half-way correction.
        int n = partials.Count;
        if (n == 0) return 0.0;
        double sum = partials[--n];
        double lo2 = 0;
        while (n > 0)
        {
            double x = sum, y = partials[--n];
            sum = x + y;
            double yr = sum - x;
            lo2 = y - yr;
            if (lo2 != 0.0) break;
        }
        if (n > 0 && ((lo2 < 0 && partials[n - 1] < 0) || (lo2 > 0 && partials[n - 1] > 0)))
        {
            double y = lo2 * 2;
            double x = sum + y;
            if (y == x - sum) sum = x;
        }
        return sum;
    }

    /// <summary>
    /// Python's <c>round(x, ndigits)</c> for ndigits ≥ 0: the exact binary value of x rounded half-to-even at the given
    /// decimal place, then the nearest double. (Math.Round scales by 10^d in floating point and can differ.)
    /// </summary>
    public static double Round(double x, int ndigits)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(ndigits);
        if (!double.IsFinite(x) || x == 0) return x;
        long bits = BitConverter.DoubleToInt64Bits(x);
        bool negative = bits < 0;
        int exp = (int)((bits >> 52) & 0x7FF);
        long mant = bits & 0xFFFFFFFFFFFFFL;
        if (exp == 0) exp = 1; else mant |= 1L << 52;
        exp -= 1075; // x = mant · 2^exp
        var scale = BigInteger.Pow(10, ndigits);
        BigInteger q;
        if (exp >= 0) q = (new BigInteger(mant) << exp) * scale;
        else
        {
            var num = new BigInteger(mant) * scale;
            var den = BigInteger.One << -exp;
            q = BigInteger.DivRem(num, den, out var rem);
            int cmp = (rem * 2).CompareTo(den);
            if (cmp > 0 || (cmp == 0 && !q.IsEven)) q += 1;
        }
        // q / 10^d as the nearest double; exact operands make the division correctly rounded when both fit in 53 bits.
        double result = q < (BigInteger.One << 53) && ndigits <= 22
            ? (double)q / Math.Pow(10, ndigits)
            : double.Parse(q.ToString() + "e-" + ndigits, System.Globalization.CultureInfo.InvariantCulture);
        return negative ? -result : result;
    }

    /// <summary>
    /// <c>float(np.mean(values))</c> for a 1-D float64 array: NumPy's add-reduce starts from the identity 0 and adds the
    /// pairwise sum of all elements (sequential below 8, blocks of up to 128 with 8 interleaved accumulators, halves
    /// above), then divides by the count. Checked against NumPy 1.24 by the metrics fixture.
    /// </summary>
    public static double Mean(ReadOnlySpan<double> values)
    {
        if (values.Length == 0) return double.NaN; // NumPy warns and returns nan
        return (0.0 + PairwiseSum(values)) / values.Length;
    }

    private static double PairwiseSum(ReadOnlySpan<double> a)
    {
        int n = a.Length;
        if (n < 8)
        {
            double res = 0.0;
            for (int i = 0; i < n; i++) res += a[i];
            return res;
        }
        if (n <= 128)
        {
            Span<double> r = stackalloc double[8];
            for (int j = 0; j < 8; j++) r[j] = a[j];
            int i;
            for (i = 8; i < n - (n % 8); i += 8)
                for (int j = 0; j < 8; j++) r[j] += a[i + j];
            double res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
            for (; i < n; i++) res += a[i];
            return res;
        }
        int n2 = n / 2;
        n2 -= n2 % 8;
        return PairwiseSum(a[..n2]) + PairwiseSum(a[n2..]);
    }
}
