namespace DoctorGlm.Engine.Evaluation;

/// <summary>
/// Splits text into words, like Python's <c>list(jieba.cut(text))</c>: every character of the input appears in exactly
/// one token, in order (whitespace included, as its own tokens). ROUGE is computed on these tokens.
/// </summary>
public interface IWordSegmenter
{
    /// <summary>The tokens of <paramref name="text"/>, in order; empty for empty text.</summary>
    IReadOnlyList<string> Cut(string text);
}
