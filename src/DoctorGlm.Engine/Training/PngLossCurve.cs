using System.Buffers.Binary;
using System.Globalization;
using System.IO.Compression;

namespace DoctorGlm.Engine.Training;

/// <summary>
/// A minimal PNG writer (8-bit RGB, no interlace, filter 0 on every row, one zlib IDAT) and a loss-curve plot drawn
/// into an RGB buffer: axes with ticks and numeric labels (a built-in 3×5 pixel font), the per-step loss in a light
/// colour, its moving average in a dark one, and optional evaluation points. No drawing library is needed.
/// </summary>
public static class PngLossCurve
{
    private static readonly byte[] Signature = [0x89, (byte)'P', (byte)'N', (byte)'G', 0x0D, 0x0A, 0x1A, 0x0A];
    private static readonly uint[] CrcTable = MakeCrcTable();

    private static uint[] MakeCrcTable()
    {
        var t = new uint[256];
        for (uint n = 0; n < 256; n++)
        {
            uint c = n;
            for (int k = 0; k < 8; k++) c = (c & 1) != 0 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            t[n] = c;
        }
        return t;
    }

    /// <summary>CRC-32 (ISO-HDLC, the PNG/zlib polynomial) of <paramref name="data"/>.</summary>
    public static uint Crc32(ReadOnlySpan<byte> data)
    {
        uint c = 0xFFFFFFFFu;
        foreach (byte b in data) c = CrcTable[(c ^ b) & 0xFF] ^ (c >> 8);
        return c ^ 0xFFFFFFFFu;
    }

    /// <summary>Encodes an RGB image (<paramref name="rgb"/>: rows top to bottom, 3 bytes per pixel) as PNG bytes.</summary>
    public static byte[] EncodePng(int width, int height, ReadOnlySpan<byte> rgb)
    {
        if (width <= 0 || height <= 0) throw new ArgumentOutOfRangeException(nameof(width), $"PNG size {width}×{height} must be positive");
        if (rgb.Length != checked(width * height * 3)) throw new ArgumentException($"PNG: {rgb.Length} bytes for {width}×{height} RGB (needs {width * height * 3})", nameof(rgb));
        using var ms = new MemoryStream();
        ms.Write(Signature);
        Span<byte> ihdr = stackalloc byte[13];
        BinaryPrimitives.WriteInt32BigEndian(ihdr, width);
        BinaryPrimitives.WriteInt32BigEndian(ihdr[4..], height);
        ihdr[8] = 8;  // bit depth
        ihdr[9] = 2;  // colour type: truecolour RGB
        ihdr[10] = 0; // deflate
        ihdr[11] = 0; // filter method 0
        ihdr[12] = 0; // no interlace
        WriteChunk(ms, "IHDR", ihdr);
        using (var idat = new MemoryStream())
        {
            using (var z = new ZLibStream(idat, CompressionLevel.Optimal, leaveOpen: true))
            {
                int stride = width * 3;
                for (int y = 0; y < height; y++)
                {
                    z.WriteByte(0); // filter type None
                    z.Write(rgb.Slice(y * stride, stride));
                }
            }
            WriteChunk(ms, "IDAT", idat.ToArray());
        }
        WriteChunk(ms, "IEND", []);
        return ms.ToArray();
    }

    private static void WriteChunk(Stream s, string type, ReadOnlySpan<byte> data)
    {
        Span<byte> len = stackalloc byte[4];
        BinaryPrimitives.WriteInt32BigEndian(len, data.Length);
        s.Write(len);
        var typeAndData = new byte[4 + data.Length];
        for (int i = 0; i < 4; i++) typeAndData[i] = (byte)type[i];
        data.CopyTo(typeAndData.AsSpan(4));
        s.Write(typeAndData);
        BinaryPrimitives.WriteUInt32BigEndian(len, Crc32(typeAndData));
        s.Write(len);
    }

    /// <summary>
    /// Draws the training loss per step (and, optionally, evaluation losses at given steps) into a
    /// <paramref name="width"/>×<paramref name="height"/> RGB image and returns its PNG bytes.
    /// </summary>
    /// <param name="losses">Training loss of steps 1..n (non-finite values are skipped).</param>
    /// <param name="evalPoints">(step, loss) pairs drawn as red squares joined by a red line, or null.</param>
    /// <param name="width">Image width in pixels (≥ 120).</param>
    /// <param name="height">Image height in pixels (≥ 80).</param>
    public static byte[] Render(IReadOnlyList<double> losses, IReadOnlyList<(int Step, double Loss)>? evalPoints = null, int width = 800, int height = 480)
    {
        ArgumentNullException.ThrowIfNull(losses);
        if (width < 120 || height < 80) throw new ArgumentOutOfRangeException(nameof(width), $"loss curve size {width}×{height} must be at least 120×80");
        var img = new Canvas(width, height);
        img.Fill(255, 255, 255);
        const int left = 56, right = 16, top = 16, bottom = 28;
        int pw = width - left - right, ph = height - top - bottom;

        var finite = losses.Where(double.IsFinite).ToList();
        if (evalPoints is not null) finite.AddRange(evalPoints.Select(p => p.Loss).Where(double.IsFinite));
        double lo = finite.Count > 0 ? finite.Min() : 0, hi = finite.Count > 0 ? finite.Max() : 1;
        if (hi - lo < 1e-9) { hi += 0.5; lo -= 0.5; }
        double pad = (hi - lo) * 0.05;
        lo -= pad; hi += pad;
        int n = Math.Max(1, losses.Count);
        int X(double step) => left + (int)Math.Round((step - 1) / Math.Max(1, n - 1) * (pw - 1));
        int Y(double v) => top + (int)Math.Round((hi - v) / (hi - lo) * (ph - 1));

        // Grid, axes, ticks and labels.
        for (int i = 0; i <= 4; i++)
        {
            double v = lo + (hi - lo) * i / 4;
            int y = Y(v);
            for (int x = left; x < left + pw; x += 4) img.Set(x, y, 225, 225, 225);
            img.Line(left - 4, y, left, y, 0, 0, 0);
            img.Text(v.ToString(v >= 100 ? "F0" : "F2", CultureInfo.InvariantCulture), left - 6, y - 2, rightAlign: true);
        }
        for (int i = 0; i <= 4; i++)
        {
            int step = 1 + (int)Math.Round((n - 1) * i / 4.0);
            int x = X(step);
            img.Line(x, top + ph, x, top + ph + 4, 0, 0, 0);
            img.Text(step.ToString(CultureInfo.InvariantCulture), x - 2 * step.ToString(CultureInfo.InvariantCulture).Length, top + ph + 8, rightAlign: false);
        }
        img.Line(left, top, left, top + ph, 0, 0, 0);
        img.Line(left, top + ph, left + pw, top + ph, 0, 0, 0);

        // Raw loss, then a moving average over ~2% of the run on top.
        Polyline(img, losses, X, Y, 170, 200, 235);
        int window = Math.Max(1, n / 50);
        var smooth = new double[losses.Count];
        double sum = 0; int count = 0;
        var q = new Queue<double>();
        for (int i = 0; i < losses.Count; i++)
        {
            if (double.IsFinite(losses[i])) { q.Enqueue(losses[i]); sum += losses[i]; count++; }
            while (count > window) { sum -= q.Dequeue(); count--; }
            smooth[i] = count > 0 ? sum / count : double.NaN;
        }
        Polyline(img, smooth, X, Y, 20, 60, 160);
        if (evalPoints is not null)
        {
            // Consecutive evaluations (--eval-steps) joined into the held-out curve, under their markers.
            var ordered = evalPoints.Where(p => double.IsFinite(p.Loss)).OrderBy(p => p.Step).ToList();
            for (int i = 1; i < ordered.Count; i++)
                img.Line(X(Math.Max(1, ordered[i - 1].Step)), Y(ordered[i - 1].Loss), X(Math.Max(1, ordered[i].Step)), Y(ordered[i].Loss), 220, 30, 30);
            foreach (var (step, loss) in evalPoints)
                if (double.IsFinite(loss))
                    for (int dy = -3; dy <= 3; dy++)
                        for (int dx = -3; dx <= 3; dx++)
                            img.Set(X(Math.Max(1, step)) + dx, Y(loss) + dy, 220, 30, 30);
        }
        return EncodePng(width, height, img.Pixels);
    }

    private static void Polyline(Canvas img, IReadOnlyList<double> v, Func<double, int> x, Func<double, int> y, byte r, byte g, byte b)
    {
        int? px = null, py = null;
        for (int i = 0; i < v.Count; i++)
        {
            if (!double.IsFinite(v[i])) { px = py = null; continue; }
            int cx = x(i + 1), cy = y(v[i]);
            if (px is null) img.Set(cx, cy, r, g, b);
            else img.Line(px.Value, py!.Value, cx, cy, r, g, b);
            (px, py) = (cx, cy);
        }
    }

    private sealed class Canvas(int width, int height)
    {
        public byte[] Pixels { get; } = new byte[width * height * 3];

        public void Fill(byte r, byte g, byte b)
        {
            for (int i = 0; i < Pixels.Length; i += 3) { Pixels[i] = r; Pixels[i + 1] = g; Pixels[i + 2] = b; }
        }

        public void Set(int x, int y, byte r, byte g, byte b)
        {
            if ((uint)x >= (uint)width || (uint)y >= (uint)height) return;
            int i = (y * width + x) * 3;
            Pixels[i] = r; Pixels[i + 1] = g; Pixels[i + 2] = b;
        }

        /// <summary>Bresenham.</summary>
        public void Line(int x0, int y0, int x1, int y1, byte r, byte g, byte b)
        {
            int dx = Math.Abs(x1 - x0), sx = x0 < x1 ? 1 : -1, dy = -Math.Abs(y1 - y0), sy = y0 < y1 ? 1 : -1, err = dx + dy;
            while (true)
            {
                Set(x0, y0, r, g, b);
                if (x0 == x1 && y0 == y1) return;
                int e2 = 2 * err;
                if (e2 >= dy) { err += dy; x0 += sx; }
                if (e2 <= dx) { err += dx; y0 += sy; }
            }
        }

        // 3×5 glyphs, one row per 3-bit number (bit 2 = left column).
        private static readonly Dictionary<char, int[]> Glyphs = new()
        {
            ['0'] = [7, 5, 5, 5, 7], ['1'] = [2, 6, 2, 2, 7], ['2'] = [7, 1, 7, 4, 7], ['3'] = [7, 1, 7, 1, 7],
            ['4'] = [5, 5, 7, 1, 1], ['5'] = [7, 4, 7, 1, 7], ['6'] = [7, 4, 7, 5, 7], ['7'] = [7, 1, 1, 1, 1],
            ['8'] = [7, 5, 7, 5, 7], ['9'] = [7, 5, 7, 1, 7], ['.'] = [0, 0, 0, 0, 2], ['-'] = [0, 0, 7, 0, 0],
        };

        public void Text(string s, int x, int y, bool rightAlign)
        {
            int w = s.Length * 4 - 1;
            if (rightAlign) x -= w;
            foreach (char c in s)
            {
                if (Glyphs.TryGetValue(c, out var rows))
                    for (int ry = 0; ry < 5; ry++)
                        for (int rx = 0; rx < 3; rx++)
                            if ((rows[ry] >> (2 - rx) & 1) != 0) Set(x + rx, y + ry, 0, 0, 0);
                x += 4;
            }
        }
    }
}
