using System.Text;

namespace DoctorGlm.Engine.Data;

/// <summary>
/// Decodes dataset files that are either UTF-8 (with or without BOM) or GB18030, the two encodings the Chinese medical
/// dialogue corpora circulate in. Rule: bytes that are valid UTF-8 are UTF-8; anything else is GB18030. The order matters:
/// GB18030 can decode almost any byte string, whereas Chinese text in GB18030 is practically never valid UTF-8.
/// </summary>
internal static class TextFileDecoder
{
    private static readonly UTF8Encoding StrictUtf8 = new(encoderShouldEmitUTF8Identifier: false, throwOnInvalidBytes: true);
    private static readonly Lazy<Encoding> Gb18030 = new(() =>
    {
        // .NET (Core) ships only the Unicode encodings; the code-page provider adds GB18030 (code page 54936).
        // Registering is idempotent and process-wide.
        Encoding.RegisterProvider(CodePagesEncodingProvider.Instance);
        return Encoding.GetEncoding(54936, EncoderFallback.ExceptionFallback, DecoderFallback.ReplacementFallback);
    });

    /// <summary>Decodes <paramref name="bytes"/>; returns the text (BOM removed) and the encoding's name.</summary>
    public static (string Text, string EncodingName) Decode(ReadOnlySpan<byte> bytes)
    {
        if (bytes.StartsWith((ReadOnlySpan<byte>)[0xEF, 0xBB, 0xBF])) bytes = bytes[3..];
        if (System.Text.Unicode.Utf8.IsValid(bytes)) return (StrictUtf8.GetString(bytes), "utf-8");
        string text = Gb18030.Value.GetString(bytes);
        // GB18030 also has a BOM form (84 31 95 33 → U+FEFF); drop it like the UTF-8 one.
        if (text.Length > 0 && text[0] == '\uFEFF') text = text[1..];
        return (text, "gb18030");
    }

    /// <summary>Reads and decodes a whole file.</summary>
    public static (string Text, string EncodingName) ReadFile(string path) => Decode(File.ReadAllBytes(path));
}
