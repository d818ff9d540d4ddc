namespace DoctorGlm.Engine.Backends.Cpu;

public sealed unsafe partial class CpuBackend
{
    /// <summary>inv_freq for one rotary half of size <paramref name="r"/>: fp32 then rounded to fp16, as the reference's constructor does.</summary>
    internal static double[] RotaryInvFreq(int r)
    {
        var inv = new double[r / 2];
        for (int j = 0; j < inv.Length; j++)
        {
            float f = 1f / MathF.Pow(10000f, (2f * j) / r);
            inv[j] = HalfConvert.RoundToF16(f);
        }
        return inv;
    }

    /// <inheritdoc />
    public void Rotary2D(Tensor x, Tensor positionIds, Tensor y, bool inverse)
    {
        int batch = x.Shape[0], seq = x.Shape[1], heads = x.Shape[2], d = x.Shape[3];
        int r = d / 2, h = r / 2;
        var inv = RotaryInvFreq(r);
        // x and y may be 16-bit activations (strided slices of a 16-bit QKV projection): each head's d values are
        // widened into a buffer in one vectorised pass, rotated in fp32 and rounded once into y.
        bool f32 = x.DType == DType.F32 && y.DType == DType.F32;
        DType xt = x.DType, yt = y.DType;
        byte* bx = x.Ptr<byte>(), by = y.Ptr<byte>();
        long xb = x.Strides[0], xs = x.Strides[1], xh = x.Strides[2];
        long yb = y.Strides[0], ys = y.Strides[1], yhs = y.Strides[2];
        int* pid = positionIds.Ptr<int>();
        float sign = inverse ? -1f : 1f;
        // One (b, s) row covers all heads and both halves: its cos/sin table (2 halves × h angles) is computed
        // once and shared by the nh heads, instead of one cos/sin per element.
        ForRows((long)batch * seq, (long)heads * d, row =>
        {
            int b = (int)(row / seq), s = (int)(row % seq);
            float* cos = stackalloc float[2 * h];
            float* sin = stackalloc float[2 * h];
            RowAngles(pid, b, s, seq, inv, sign, cos, sin);
            if (f32)
            {
                for (int head = 0; head < heads; head++)
                    RotateHead((float*)bx + b * xb + s * xs + head * xh, (float*)by + b * yb + s * ys + head * yhs, r, h, cos, sin);
                return;
            }
            float* xbuf = stackalloc float[d];
            float* ybuf = stackalloc float[d];
            for (int head = 0; head < heads; head++)
            {
                long xo = b * xb + s * xs + head * xh, yo = b * yb + s * ys + head * yhs;
                CpuFloatConvert.ToSingle(xt, bx + xo * xt.SizeOf(), xbuf, d);
                RotateHead(xbuf, ybuf, r, h, cos, sin);
                CpuFloatConvert.FromSingle(ybuf, yt, by + yo * yt.SizeOf(), d);
            }
        });
    }

    /// <inheritdoc />
    public void SplitQkvRotary(Tensor qkv, Tensor? bias, Tensor positionIds, Tensor q, Tensor k, Tensor v)
    {
        RotaryArguments.CheckSplit(qkv, bias, positionIds, q, k, v);
        int batch = q.Shape[0], seq = q.Shape[1], heads = q.Shape[2], d = q.Shape[3];
        int r = d / 2, h = r / 2;
        var inv = RotaryInvFreq(r);
        DType xt = qkv.DType, ot = q.DType;
        byte* bx = qkv.Ptr<byte>(), bq = q.Ptr<byte>(), bk = k.Ptr<byte>(), bv = v.Ptr<byte>();
        float* pb = bias is null ? null : bias.Ptr<float>();
        long xb = qkv.Strides[0], xs = qkv.Strides[1], xh = qkv.Strides[2];
        long qb = q.Strides[0], qs = q.Strides[1], qh = q.Strides[2];
        long kb = k.Strides[0], ks = k.Strides[1], kh = k.Strides[2];
        int* pid = positionIds.Ptr<int>();
        ForRows((long)batch * seq, (long)heads * 3 * d, row =>
        {
            int b = (int)(row / seq), s = (int)(row % seq);
            float* cos = stackalloc float[2 * h];
            float* sin = stackalloc float[2 * h];
            RowAngles(pid, b, s, seq, inv, 1f, cos, sin); // Rotary2D's forward rotation
            float* x = stackalloc float[3 * d];
            float* y = stackalloc float[2 * d];
            for (int head = 0; head < heads; head++)
            {
                // The head's 3d values widened, plus their bias (AddRowVector's fma(b, 1, x) is x + b exactly).
                CpuFloatConvert.ToSingle(xt, bx + (b * xb + s * xs + head * xh) * xt.SizeOf(), x, 3 * d);
                if (pb is not null)
                {
                    var xs3 = new Span<float>(x, 3 * d);
                    System.Numerics.Tensors.TensorPrimitives.Add(xs3, new ReadOnlySpan<float>(pb + (long)head * 3 * d, 3 * d), xs3);
                }
                RotateHead(x, y, r, h, cos, sin);
                RotateHead(x + d, y + d, r, h, cos, sin);
                CpuFloatConvert.FromSingle(y, ot, bq + (b * qb + s * qs + head * qh) * ot.SizeOf(), d);
                long ko = (b * kb + s * ks + head * kh) * ot.SizeOf();
                CpuFloatConvert.FromSingle(y + d, ot, bk + ko, d);
                CpuFloatConvert.FromSingle(x + 2 * d, ot, bv + ko, d);
            }
        });
    }

    /// <summary>
    /// The cos/sin table of token (b, s): both halves (position, block position) × h = inv.Length angles p·θ_j, in
    /// double then rounded to fp32; <paramref name="sign"/> −1 turns the rotation back (backward).
    /// </summary>
    private static void RowAngles(int* pid, int b, int s, int seq, double[] inv, float sign, float* cos, float* sin)
    {
        int h = inv.Length;
        for (int half = 0; half < 2; half++)
        {
            double p = pid[(b * 2 + half) * seq + s];
            for (int j = 0; j < h; j++)
            {
                double angle = p * inv[j];
                cos[half * h + j] = (float)Math.Cos(angle);
                sin[half * h + j] = sign * (float)Math.Sin(angle);
            }
        }
    }

    /// <summary>One head's d = 2r values: each half's pairs (j, j + h) rotated by its own angles (2D rotary, spec §3.1).</summary>
    [System.Runtime.CompilerServices.MethodImpl(System.Runtime.CompilerServices.MethodImplOptions.AggressiveInlining)]
    private static void RotateHead(float* x, float* y, int r, int h, float* cos, float* sin)
    {
        for (int half = 0; half < 2; half++)
        {
            float* xhalf = x + half * r, yhalf = y + half * r, c = cos + half * h, sn = sin + half * h;
            for (int j = 0; j < h; j++)
            {
                float a = xhalf[j], bb = xhalf[j + h];
                yhalf[j] = a * c[j] - bb * sn[j];
                yhalf[j + h] = bb * c[j] + a * sn[j];
            }
        }
    }
}
