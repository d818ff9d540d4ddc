using System.Text;
using DoctorGlm.Engine.Tests.Harness;
using DoctorGlm.Engine.Tokenization;

namespace DoctorGlm.Engine.Tests.Tokenization;

/// <summary>
/// Exact parity with Debian's sentencepiece 0.1.97 command-line tools: every line of Fixtures/tokenizer/corpus.txt,
/// for every model trained by tools/reference/make_tokenizer_fixtures.py, must give spm_encode's ids, and
/// decoding must give spm_decode's text.
/// </summary>
public class SentencePieceParityTests
{
    public static TheoryData<string> Models => new()
    {
        "bpe_nfkc", "bpe_identity", "unigram_nfkc", "unigram_identity", "unigram_nofallback", "bpe_nofallback",
        "chatglm_like_unigram", "chatglm_like_bpe",
    };

    internal static string Dir => Fixture.Dir("tokenizer");

    internal static SentencePieceModel Load(string name) => SentencePieceModel.Load(Path.Combine(Dir, name + ".model"));

    /// <summary>Lines of a UTF-8 text file exactly as spm_encode reads them (split on '\n', no trailing empty line).</summary>
    internal static List<string> Lines(string file)
    {
        var text = Encoding.UTF8.GetString(File.ReadAllBytes(Path.Combine(Dir, file)));
        var lines = text.Split('\n').ToList();
        if (lines.Count > 0 && lines[^1].Length == 0) lines.RemoveAt(lines.Count - 1);
        return lines;
    }

    internal static int[] ParseIds(string line) =>
        line.Length == 0 ? [] : line.Split(' ').Select(s => int.Parse(s, System.Globalization.CultureInfo.InvariantCulture)).ToArray();

    [Theory]
    [MemberData(nameof(Models))]
    public void Encode_MatchesSpmEncode_OnEveryLine(string name)
    {
        var model = Load(name);
        var corpus = Lines("corpus.txt");
        var expected = Lines(name + ".ids.txt");
        Assert.Equal(corpus.Count, expected.Count);
        var failures = new List<string>();
        for (int i = 0; i < corpus.Count; i++)
        {
            var want = ParseIds(expected[i]);
            var got = model.Encode(corpus[i]);
            if (!want.SequenceEqual(got))
                failures.Add($"line {i + 1} \"{corpus[i]}\"\n  expected {string.Join(' ', want)}\n  actual   {string.Join(' ', got)}\n  pieces   {string.Join(' ', model.EncodeAsPieces(corpus[i]))}");
        }
        Assert.True(failures.Count == 0, $"{name}: {failures.Count}/{corpus.Count} lines differ from spm_encode:\n" + string.Join("\n", failures.Take(8)));
    }

    [Theory]
    [MemberData(nameof(Models))]
    public void Decode_MatchesSpmDecode_AndRoundTrips(string name)
    {
        var model = Load(name);
        var corpus = Lines("corpus.txt");
        var ids = Lines(name + ".ids.txt");
        var decoded = Lines(name + ".decoded.txt");
        Assert.Equal(corpus.Count, decoded.Count);
        var failures = new List<string>();
        for (int i = 0; i < corpus.Count; i++)
        {
            string fromFixture = model.Decode(ParseIds(ids[i]));
            string roundTrip = model.Decode(model.Encode(corpus[i]));
            if (fromFixture != decoded[i] || roundTrip != decoded[i])
                failures.Add($"line {i + 1} \"{corpus[i]}\"\n  spm_decode  \"{decoded[i]}\"\n  Decode(ids) \"{fromFixture}\"\n  round trip  \"{roundTrip}\"");
        }
        Assert.True(failures.Count == 0, $"{name}: {failures.Count}/{corpus.Count} lines differ from spm_decode:\n" + string.Join("\n", failures.Take(8)));
    }
}
