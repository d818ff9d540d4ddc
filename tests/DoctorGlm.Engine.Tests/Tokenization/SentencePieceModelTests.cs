using System.Text;
using DoctorGlm.Engine.Tokenization;
using static DoctorGlm.Engine.Tests.Tokenization.SentencePieceParityTests;

namespace DoctorGlm.Engine.Tests.Tokenization;

/// <summary>Model-file reading (malformed files name the file and offset), specs, and byte-level input handling.</summary>
public class SentencePieceModelTests
{
    [Fact]
    public void Specs_AreReadFromTheFile()
    {
        var bpe = Load("bpe_nfkc");
        Assert.Equal(SentencePieceModelType.Bpe, bpe.TrainerSpec.ModelType);
        Assert.True(bpe.TrainerSpec.ByteFallback);
        Assert.Equal("nmt_nfkc", bpe.NormalizerSpec.Name);
        Assert.False(bpe.NormalizerSpec.PrecompiledCharsmap.IsEmpty);
        Assert.True(bpe.NormalizerSpec.RemoveExtraWhitespaces);
        Assert.Equal(3000, bpe.Count);
        Assert.Equal(0, bpe.UnkId);
        Assert.Equal(SentencePieceType.Unknown, bpe.TypeOf(0));
        Assert.Equal(SentencePieceType.Control, bpe.TypeOf(1));
        Assert.Equal(SentencePieceType.Byte, bpe.TypeOf(bpe.PieceToId("<0x41>")));

        var uni = Load("unigram_identity");
        Assert.Equal(SentencePieceModelType.Unigram, uni.TrainerSpec.ModelType);
        Assert.Equal("identity", uni.NormalizerSpec.Name);
        Assert.True(uni.NormalizerSpec.PrecompiledCharsmap.IsEmpty);
        Assert.False(Load("unigram_nofallback").TrainerSpec.ByteFallback);

        var glm = Load("chatglm_like_unigram");
        Assert.False(glm.NormalizerSpec.RemoveExtraWhitespaces);
        Assert.True(glm.NormalizerSpec.AddDummyPrefix);
        Assert.Equal(3, glm.TrainerSpec.PadId);
        Assert.Equal(SentencePieceType.UserDefined, glm.TypeOf(glm.PieceToId("<|blank_80|>")));
        Assert.Equal(SentencePieceType.Control, glm.TypeOf(glm.PieceToId("<dBLOCK>")));
        Assert.Equal("\u2581\u2581a\u2581\u2581b\u2581", glm.Normalize(" a  b "));
        Assert.Equal("\u2581a\u2581b", bpe.Normalize("  ａ   b "));
        Assert.False(glm.TryGetId("no such piece", out _));
        Assert.Equal(glm.UnkId, glm.PieceToId("no such piece"));
    }

    [Fact]
    public void MalformedUtf8_IsOneReplacementCharacterPerBadByte_AsSpmEncode()
    {
        // Expected ids: printf 'a\xff\xc3b\n' | spm_encode --model=M --output_format=id (sentencepiece 0.1.97).
        byte[] input = [(byte)'a', 0xFF, 0xC3, (byte)'b'];
        Assert.Equal([263, 2029, 242, 194, 192, 242, 194, 192, 2042], Load("unigram_nfkc").EncodeUtf8(input));
        Assert.Equal([790, 2314, 242, 194, 192, 242, 194, 192, 2315], Load("bpe_identity").EncodeUtf8(input));
    }

    [Fact]
    public void Decode_RejectsIdsOutsideTheVocabulary()
    {
        var m = Load("unigram_nfkc");
        Assert.Throws<ArgumentOutOfRangeException>(() => m.Decode([5, m.Count]));
        Assert.Throws<ArgumentOutOfRangeException>(() => m.Decode([-1]));
        Assert.Equal(m.Decode(m.Encode("高血压")), m.DecodePieces(m.EncodeAsPieces("高血压")));
    }

    [Theory]
    [InlineData("unigram_nfkc", 0.5)]
    [InlineData("unigram_identity", 0.5)]
    [InlineData("bpe_nfkc", 0.9)]
    [InlineData("chatglm_like_bpe", 0.999)]
    public void TruncatedFile_Throws_NamingTheFileAndOffset(string name, double keep)
    {
        byte[] bytes = File.ReadAllBytes(Path.Combine(Dir, name + ".model"));
        string path = Path.Combine(Path.GetTempPath(), $"doctorglm-truncated-{name}-{Environment.ProcessId}.model");
        try
        {
            foreach (int len in new[] { (int)(bytes.Length * keep), bytes.Length - 1 })
            {
                File.WriteAllBytes(path, bytes.AsSpan(0, len).ToArray());
                var ex = Assert.Throws<InvalidDataException>(() => SentencePieceModel.Load(path));
                Assert.Contains(path, ex.Message);
                Assert.Contains("byte", ex.Message);
            }
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void InvalidModels_Throw_NamingTheSource()
    {
        // Field 1 (pieces) with varint wire type.
        var ex = Assert.Throws<InvalidDataException>(() => SentencePieceModel.Parse([0x08, 0x01], "wire.model"));
        Assert.Contains("wire.model", ex.Message);
        Assert.Contains("field 1 has wire type 0", ex.Message);

        ex = Assert.Throws<InvalidDataException>(() => SentencePieceModel.Parse([], "empty.model"));
        Assert.Contains("empty.model", ex.Message);
        Assert.Contains("no unknown piece", ex.Message);

        ex = Assert.Throws<InvalidDataException>(() => SentencePieceModel.Parse(
            Model(Piece("<unk>", 0, 2), Piece("a", -1, 1), Piece("a", -2, 1)), "dup.model"));
        Assert.Contains("dup.model", ex.Message);
        Assert.Contains("already defined", ex.Message);

        ex = Assert.Throws<InvalidDataException>(() => SentencePieceModel.Parse(
            Model(Piece("<unk>", 0, 2), Piece("<0x41>", 0, 6)), "bytes.model"));
        Assert.Contains("byte_fallback", ex.Message);

        ex = Assert.Throws<InvalidDataException>(() => SentencePieceModel.Parse(
            Model(Piece("<unk>", 0, 2), Piece("a", 0, 9)), "type.model"));
        Assert.Contains("piece type 9", ex.Message);
        Assert.Contains("pieces[1]", ex.Message);
    }

    [Fact]
    public void SyntheticUnigram_PicksTheBestScoringPath_AndUserDefinedPiecesWin()
    {
        // ▁ab: "▁ab" (-1) beats "▁a"+"b" (-1.5 + -1.5); "<x>" is user-defined and beats its characters.
        var m = SentencePieceModel.Parse(Model(
            Piece("<unk>", 0, 2), Piece("▁ab", -1, 1), Piece("▁a", -1.5f, 1), Piece("b", -1.5f, 1), Piece("▁", -2, 1),
            Piece("a", -3, 1), Piece("<", -0.5f, 1), Piece("x", -0.5f, 1), Piece(">", -0.5f, 1), Piece("<x>", 0, 4)), "synthetic.model");
        Assert.Equal(["▁ab"], m.EncodeAsPieces("ab"));
        Assert.Equal(["▁", "<x>", "a"], m.EncodeAsPieces("<x>a"));
        Assert.Equal([4, 9, 5], m.Encode("<x>a"));
        Assert.Equal(["▁ab", "▁", "zz", "b"], m.EncodeAsPieces("ab zzb")); // a run of unknowns is one piece
        Assert.Equal([1, 4, 0, 3], m.Encode("ab zzb"));
        // "▁" decodes to a space and the unknown to its surface " ⁇ " (trainer_spec.unk_surface default).
        Assert.Equal("ab  \u2047 b", m.Decode(m.Encode("ab zzb")));
    }

    // ---- a tiny protobuf writer for synthetic models ----

    private static byte[] Piece(string piece, float score, int type)
    {
        var b = new List<byte>();
        Bytes(b, 1, Encoding.UTF8.GetBytes(piece));
        b.Add((2 << 3) | 5);
        b.AddRange(BitConverter.GetBytes(score));
        b.Add(3 << 3);
        Varint(b, (ulong)type);
        return b.ToArray();
    }

    private static byte[] Model(params byte[][] pieces)
    {
        var b = new List<byte>();
        foreach (var p in pieces) Bytes(b, 1, p);
        return b.ToArray();
    }

    private static void Bytes(List<byte> b, int field, byte[] payload)
    {
        Varint(b, (ulong)((field << 3) | 2));
        Varint(b, (ulong)payload.Length);
        b.AddRange(payload);
    }

    private static void Varint(List<byte> b, ulong v)
    {
        while (v >= 0x80) { b.Add((byte)(v | 0x80)); v >>= 7; }
        b.Add((byte)v);
    }
}
