namespace DoctorGlm.Engine.Tokenization;

/// <summary>The type of a vocabulary entry (ModelProto.SentencePiece.Type; the wire values are kept).</summary>
public enum SentencePieceType
{
    /// <summary>An ordinary piece, produced by segmentation.</summary>
    Normal = 1,
    /// <summary>The unknown piece (exactly one per model).</summary>
    Unknown = 2,
    /// <summary>A control symbol (e.g. &lt;s&gt;, [gMASK]): never produced from text, decodes to "".</summary>
    Control = 3,
    /// <summary>A user-defined symbol: matched atomically in the input and never normalized.</summary>
    UserDefined = 4,
    /// <summary>An unused piece: never emitted (BPE re-splits it).</summary>
    Unused = 5,
    /// <summary>A byte piece &lt;0xHH&gt; used by byte fallback.</summary>
    Byte = 6,
}

/// <summary>The segmentation algorithm (TrainerSpec.ModelType; the wire values are kept).</summary>
public enum SentencePieceModelType
{
    /// <summary>Unigram language model (Viterbi over piece scores).</summary>
    Unigram = 1,
    /// <summary>Byte-pair-encoding style merges ranked by piece score.</summary>
    Bpe = 2,
    /// <summary>Whitespace-delimited words (not supported by the encoder).</summary>
    Word = 3,
    /// <summary>Characters (not supported by the encoder).</summary>
    Char = 4,
}

/// <summary>One vocabulary entry.</summary>
/// <param name="Piece">The piece text (with U+2581 for spaces).</param>
/// <param name="Score">Its score (log probability for unigram, merge rank for BPE).</param>
/// <param name="Type">Its type.</param>
public readonly record struct SentencePieceEntry(string Piece, float Score, SentencePieceType Type);

/// <summary>The fields of TrainerSpec that encoding and decoding depend on (protobuf defaults when absent).</summary>
public sealed class SentencePieceTrainerSpec
{
    /// <summary>Segmentation algorithm (field 3; default unigram).</summary>
    public SentencePieceModelType ModelType { get; init; } = SentencePieceModelType.Unigram;
    /// <summary>Vocabulary size the model was trained for (field 4).</summary>
    public int VocabSize { get; init; } = 8000;
    /// <summary>Split unknown characters into UTF-8 byte pieces (field 35).</summary>
    public bool ByteFallback { get; init; }
    /// <summary>Put the dummy whitespace at the end instead of the start (field 24).</summary>
    public bool TreatWhitespaceAsSuffix { get; init; }
    /// <summary>Id of the unknown piece as trained (field 40).</summary>
    public int UnkId { get; init; }
    /// <summary>Id of &lt;s&gt; (field 41; -1 when disabled).</summary>
    public int BosId { get; init; } = 1;
    /// <summary>Id of &lt;/s&gt; (field 42; -1 when disabled).</summary>
    public int EosId { get; init; } = 2;
    /// <summary>Id of the padding piece (field 43; -1 when disabled).</summary>
    public int PadId { get; init; } = -1;
    /// <summary>Text of the unknown piece (field 45).</summary>
    public string UnkPiece { get; init; } = "<unk>";
    /// <summary>Text of the begin-of-sentence piece (field 46).</summary>
    public string BosPiece { get; init; } = "<s>";
    /// <summary>Text of the end-of-sentence piece (field 47).</summary>
    public string EosPiece { get; init; } = "</s>";
    /// <summary>Text of the padding piece (field 48).</summary>
    public string PadPiece { get; init; } = "<pad>";
    /// <summary>What decoding prints for the unknown piece (field 44; default " ⁇ ").</summary>
    public string UnkSurface { get; init; } = " \u2047 ";
}

/// <summary>NormalizerSpec: the text normalisation applied before segmentation (protobuf defaults when absent).</summary>
public sealed class SentencePieceNormalizerSpec
{
    /// <summary>Rule name, informational (field 1; e.g. nmt_nfkc, identity).</summary>
    public string Name { get; init; } = "";
    /// <summary>Compiled rules: a Darts double-array trie plus the replacement strings (field 2; empty = identity).</summary>
    public ReadOnlyMemory<byte> PrecompiledCharsmap { get; init; }
    /// <summary>Prepend a whitespace to the text (field 3).</summary>
    public bool AddDummyPrefix { get; init; } = true;
    /// <summary>Drop leading and trailing whitespace and collapse internal runs (field 4).</summary>
    public bool RemoveExtraWhitespaces { get; init; } = true;
    /// <summary>Replace ' ' with U+2581 (field 5).</summary>
    public bool EscapeWhitespaces { get; init; } = true;
}
