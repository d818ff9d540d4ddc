using JiebaNet.Segmenter;

namespace DoctorGlm.Engine.Evaluation;

/// <summary>
/// The default <see cref="IWordSegmenter"/>: jieba.NET 0.42.2 (a port of Python jieba) in its default mode, precise
/// cut with the HMM for unknown words — what <c>jieba.cut(text)</c> does in ChatGLM's <c>compute_metrics</c>.
/// </summary>
/// <remarks>
/// jieba.NET loads its dictionary once per process from the directory in the static
/// <c>JiebaNet.Segmenter.ConfigManager.ConfigFileBaseDir</c>, when its segmenter type first initialises. The package does
/// not copy its dictionaries to the output, so this project copies dict.txt, prob_trans.json and prob_emit.json to
/// <c>&lt;output&gt;/jieba/</c> and points jieba.NET there before first use.
/// </remarks>
public sealed class JiebaWordSegmenter : IWordSegmenter
{
    private static readonly Lock InitLock = new();
    private static string? _loadedFrom;
    private readonly JiebaSegmenter _segmenter;
    private readonly Lock _cutLock = new();

    /// <summary>Where the build puts the dictionaries: <c>&lt;app base&gt;/jieba</c>.</summary>
    public static string DefaultDictionaryDirectory => Path.Combine(AppContext.BaseDirectory, "jieba");

    /// <summary>Creates a segmenter using the dictionaries in <paramref name="dictionaryDirectory"/> (default: <see cref="DefaultDictionaryDirectory"/>).</summary>
    /// <exception cref="FileNotFoundException">The directory lacks a jieba file.</exception>
    /// <exception cref="InvalidOperationException">jieba.NET was already initialised from another directory (its dictionary is process-wide).</exception>
    public JiebaWordSegmenter(string? dictionaryDirectory = null)
    {
        var dir = Path.GetFullPath(dictionaryDirectory ?? DefaultDictionaryDirectory);
        lock (InitLock)
        {
            if (_loadedFrom is null)
            {
                foreach (var f in new[] { "dict.txt", "prob_trans.json", "prob_emit.json" })
                    if (!File.Exists(Path.Combine(dir, f)))
                        throw new FileNotFoundException($"jieba dictionary file '{f}' not found in '{dir}' (the engine's build copies it from the jieba.NET package to <output>/jieba/)", Path.Combine(dir, f));
                ConfigManager.ConfigFileBaseDir = dir;
                _segmenter = new JiebaSegmenter();
                _loadedFrom = dir;
            }
            else if (!string.Equals(_loadedFrom, dir, StringComparison.Ordinal))
                throw new InvalidOperationException($"jieba.NET is already initialised from '{_loadedFrom}'; its dictionary is process-wide and cannot be reloaded from '{dir}'");
            else _segmenter = new JiebaSegmenter();
        }
    }

    /// <inheritdoc/>
    public IReadOnlyList<string> Cut(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (text.Length == 0) return [];
        // jieba.NET keeps mutable per-instance state (user words, route caches); serialise calls to be safe.
        lock (_cutLock) return _segmenter.Cut(text, cutAll: false, hmm: true).ToList();
    }
}
