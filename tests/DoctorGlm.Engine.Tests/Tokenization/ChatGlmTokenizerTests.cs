using System.Text.Json;
using DoctorGlm.Engine.Tokenization;
using static DoctorGlm.Engine.Tests.Tokenization.SentencePieceParityTests;

namespace DoctorGlm.Engine.Tests.Tokenization;

/// <summary>
/// ChatGlmTokenizer (spec §6.2–6.3) on small ChatGLM-like models trained with spm_train (the real 2.7 MB
/// ice_text.model is not available offline): ChatGLM's user-defined and control pieces, byte fallback,
/// remove_extra_whitespaces = false. Expected ids are spm_encode's on the preprocessed text.
/// </summary>
public class ChatGlmTokenizerTests
{
    public static TheoryData<string> ChatGlmModels => new() { "chatglm_like_unigram", "chatglm_like_bpe" };

    private static List<string> Cases() =>
        JsonSerializer.Deserialize<List<string>>(File.ReadAllText(Path.Combine(Dir, "chatglm_cases.json")))!;

    private static ChatGlmTokenizer Tok(string name, int offset = 0) => new(Load(name), offset);

    [Theory]
    [MemberData(nameof(ChatGlmModels))]
    public void Encode_MatchesSpmEncodeOfPreprocessedText(string name)
    {
        var tok = Tok(name);
        var cases = Cases();
        var expected = Lines(name + ".chatglm.ids.txt");
        Assert.Equal(cases.Count, expected.Count);
        for (int i = 0; i < cases.Count; i++)
        {
            var want = ParseIds(expected[i]);
            var got = tok.Encode(cases[i]);
            Assert.True(want.SequenceEqual(got), $"{name} case {i} {JsonSerializer.Serialize(cases[i])}: expected {string.Join(' ', want)}, actual {string.Join(' ', got)}");
        }
    }

    [Theory]
    [MemberData(nameof(ChatGlmModels))]
    public void Decode_IsSpmDecodeThenPostprocess_AndDropsPadControlAndImageIds(string name)
    {
        var cases = Cases();
        var decoded = Lines(name + ".chatglm.decoded.txt");
        foreach (int offset in new[] { 0, 20000 })
        {
            var tok = Tok(name, offset);
            for (int i = 0; i < cases.Count; i++)
            {
                var ids = tok.Encode(cases[i], addSpecialTokens: true);
                // Padding in front (left padding), an image-token id, and the [gMASK] <sop> suffix must all vanish.
                int[] noisy = [tok.PadId, tok.PadId, .. (offset > 0 ? new[] { 7 } : []), .. ids, tok.EopId];
                string want = ChatGlmTokenizer.Postprocess(decoded[i]);
                Assert.Equal(want, tok.Decode(noisy));
            }
        }
    }

    [Theory]
    [MemberData(nameof(ChatGlmModels))]
    public void Decode_RoundTripsTextThatNfkcLeavesAlone(string name)
    {
        var tok = Tok(name);
        foreach (var text in new[] { "你好", "def main():\n    print('hello world')\t# greeting", "a    b", "x" + new string(' ', 81) + "y",
                     "line1\n\nline3\n", "\t\tdouble tab", "emoji 👋🏥 and rare 𠀀", "高血压患者能吃党参吗。我有高血压" })
            Assert.Equal(text, tok.Decode(tok.Encode(text, addSpecialTokens: true)));
    }

    [Theory]
    [MemberData(nameof(ChatGlmModels))]
    public void SpecialIds_AreTheModelPieces_PlusTheOffset(string name)
    {
        var model = Load(name);
        foreach (int offset in new[] { 0, 20000 })
        {
            var tok = new ChatGlmTokenizer(model, offset);
            Assert.Equal(model.PieceToId("[MASK]") + offset, tok.MaskId);
            Assert.Equal(model.PieceToId("[gMASK]") + offset, tok.GMaskId);
            Assert.Equal(model.PieceToId("[sMASK]") + offset, tok.SMaskId);
            Assert.Equal(model.PieceToId("<sop>") + offset, tok.SopId);
            Assert.Equal(model.PieceToId("<eop>") + offset, tok.EopId);
            Assert.Equal(model.PieceToId("<pad>") + offset, tok.PadId);
            Assert.Equal(model.PieceToId("</s>") + offset, tok.EosId);
            Assert.Equal(model.PieceToId("<n>") + offset, tok.NewlineId);
            Assert.Equal(model.UnkId + offset, tok.UnkId);
            Assert.Equal(model.Count + offset, tok.VocabSize);
            Assert.Equal(SentencePieceType.Control, model.TypeOf(tok.GMaskId - offset));
            Assert.Equal(SentencePieceType.UserDefined, model.TypeOf(tok.NewlineId - offset));
            if (offset > 0)
            {
                Assert.Equal("<image_7>", tok.IdToToken(7));
                Assert.Equal(7, tok.TokenToId("<image_7>"));
            }
            Assert.Equal("<sop>", tok.IdToToken(tok.SopId));
            Assert.Equal(tok.SopId, tok.TokenToId("<sop>"));
        }
    }

    [Theory]
    [MemberData(nameof(ChatGlmModels))]
    public void Offset_AddsToEveryId(string name)
    {
        var slim = Tok(name);
        var old = Tok(name, 20000);
        foreach (var text in Cases())
        {
            var a = slim.Encode(text, addSpecialTokens: true);
            var b = old.Encode(text, addSpecialTokens: true);
            Assert.Equal(a.Select(x => x + 20000), b);
        }
    }

    [Fact]
    public void Preprocess_NewlinesTabsAndBlankRuns()
    {
        Assert.Equal("a<|blank_4|>b", ChatGlmTokenizer.Preprocess("a    b"));
        Assert.Equal("x<|blank_80|> y", ChatGlmTokenizer.Preprocess("x" + new string(' ', 81) + "y"));
        Assert.Equal("<|blank_80|><|blank_3|>", ChatGlmTokenizer.Preprocess(new string(' ', 83)));
        Assert.Equal("<|blank_80|><|blank_80|><|blank_2|>", ChatGlmTokenizer.Preprocess(new string(' ', 162)));
        Assert.Equal("a b<n><|tab|><|blank_2|>c", ChatGlmTokenizer.Preprocess("a b\n\t  c"));
        Assert.Equal("<|tab|> x", ChatGlmTokenizer.Preprocess("\t x"));
        Assert.Equal("a\nb", ChatGlmTokenizer.Preprocess("a\nb", linebreak: false));
        Assert.Equal("a\n\t  b", ChatGlmTokenizer.Postprocess(ChatGlmTokenizer.Preprocess("a\n\t  b")));
        for (int n = 2; n <= 80; n++)
            Assert.Equal(new string(' ', n), ChatGlmTokenizer.Postprocess(ChatGlmTokenizer.BlankToken(n)));
    }

    [Theory]
    [MemberData(nameof(ChatGlmModels))]
    public void Blanks_And_Tabs_AreSingleUserDefinedIds(string name)
    {
        var tok = Tok(name);
        var m = tok.Model;
        int blank4 = m.PieceToId("<|blank_4|>"), blank80 = m.PieceToId("<|blank_80|>"), tab = m.PieceToId("<|tab|>");
        Assert.Contains(blank4, tok.Encode("a    b"));
        Assert.DoesNotContain(m.PieceToId("<|blank_2|>"), tok.Encode("a    b"));
        var ids81 = tok.Encode("x" + new string(' ', 81) + "y");
        int at = Array.IndexOf(ids81, blank80);
        Assert.True(at >= 0, string.Join(' ', ids81));
        // The 81st space is a plain space: "▁" on its own or the start of "▁y".
        Assert.StartsWith("\u2581", m.IdToPiece(ids81[at + 1]));
        Assert.Equal(2, tok.Encode("\t\tx").Count(id => id == tab));
        Assert.Equal(3, tok.Encode("a\nb\n\nc").Count(id => id == tok.NewlineId));
    }

    [Theory]
    [MemberData(nameof(ChatGlmModels))]
    public void SpecialTokens_Suffix_Pair_AndLegacyLayout(string name)
    {
        var tok = Tok(name);
        var a = tok.Encode("高血压患者能吃党参吗？");
        var b = tok.Encode("可以口服党参。");
        Assert.Equal([.. a, tok.GMaskId, tok.SopId], tok.Encode("高血压患者能吃党参吗？", addSpecialTokens: true));
        Assert.Equal([.. a, tok.GMaskId, tok.SopId, .. b, tok.EopId], tok.EncodePair("高血压患者能吃党参吗？", "可以口服党参。"));
        Assert.Equal([tok.GMaskId, tok.SopId], tok.Encode("", addSpecialTokens: true));
        // Old layout: plain text also ends [gMASK] <sop>; with a [MASK] inside, </s> then <sop>.
        Assert.Equal([.. a, tok.GMaskId, tok.SopId], tok.BuildInputsLegacy(a));
        Assert.Equal([.. a, tok.MaskId, .. b, tok.EosId, tok.SopId], tok.BuildInputsLegacy([.. a, tok.MaskId, .. b]));
    }

    [Theory]
    [MemberData(nameof(ChatGlmModels))]
    public void LiteralSpecialTokens_AreSplitOut_WithNeighbouringWhitespaceStripped(string name)
    {
        var tok = Tok(name);
        var hello = tok.Encode("你好");
        var world = tok.Encode("世界");
        int[] want = [.. hello, tok.GMaskId, .. world];
        Assert.Equal(want, tok.Encode("你好[gMASK]世界"));
        Assert.Equal(want, tok.Encode("你好  [gMASK]\n世界"));
        Assert.Equal([tok.SopId, tok.EopId, tok.MaskId], tok.Encode("<sop> <eop>[MASK]"));
        Assert.Equal([.. hello, tok.PadId], tok.Encode("你好<pad>"));
        // Not registered: [sMASK] stays text, so it is encoded by SentencePiece (and is not its control id).
        Assert.DoesNotContain(tok.SMaskId, tok.Encode("a[sMASK]b"));
    }

    [Theory]
    [MemberData(nameof(ChatGlmModels))]
    public void NoDummyPrefix_IsNewlineTrick(string name)
    {
        var tok = Tok(name);
        var m = tok.Model;
        foreach (var text in new[] { "高血压", "你好", "hello world", "  x" })
        {
            var withN = tok.EncodeChunk("\n" + text);
            Assert.Equal(m.PieceToId("\u2581"), withN[0]);
            Assert.Equal(tok.NewlineId, withN[1]);
            Assert.Equal(withN[2..], tok.Encode(text, addDummyPrefix: false));
        }
        Assert.Equal([m.PieceToId("高血压")], tok.Encode("高血压", addDummyPrefix: false));
        Assert.NotEqual(tok.Encode("高血压"), tok.Encode("高血压", addDummyPrefix: false));
    }

    [Fact]
    public void Decode_CleanUpTokenizationSpaces_IsOptIn()
    {
        var tok = Tok("chatglm_like_unigram");
        var ids = tok.Encode("Hi , there .");
        Assert.Equal("Hi , there .", tok.Decode(ids));
        Assert.Equal("Hi, there.", tok.Decode(ids, cleanUpTokenizationSpaces: true));
        Assert.Throws<ArgumentOutOfRangeException>(() => tok.Decode([tok.VocabSize]));
    }

    [Fact]
    public void NonChatGlmModel_IsRejected_NamingTheFile()
    {
        var ex = Assert.Throws<InvalidDataException>(() => new ChatGlmTokenizer(Load("unigram_nfkc")));
        Assert.Contains("unigram_nfkc.model", ex.Message);
        Assert.Contains("[MASK]", ex.Message);
    }
}
