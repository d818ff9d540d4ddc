namespace DoctorGlm.Engine.Data;

/// <summary>The dataset layouts <see cref="DatasetReader"/> understands.</summary>
public enum DatasetFormat
{
    /// <summary>Decide from the extension and the first record (see <see cref="DatasetReader.DetectFormat"/>).</summary>
    Auto,

    /// <summary>Alpaca records <c>{"instruction", "input", "output"}</c> (optional <c>"history": [[q, a], …]</c>), as a JSON array or JSON lines.</summary>
    Alpaca,

    /// <summary>ChatGLM P-tuning JSON lines <c>{"prompt", "response", "history": [[q, a], …]}</c>, column names configurable.</summary>
    PTuning,

    /// <summary>The Chinese Medical Dialogue CSV as published: header <c>department,title,ask,answer</c>, UTF-8 or GB18030.</summary>
    CmdCsv,
}

/// <summary>Options of <see cref="DatasetReader.Read(string, DatasetReadOptions?)"/>.</summary>
public sealed class DatasetReadOptions
{
    /// <summary>The layout of the file; <see cref="DatasetFormat.Auto"/> detects it.</summary>
    public DatasetFormat Format { get; init; } = DatasetFormat.Auto;

    /// <summary>P-tuning prompt field (the official script's <c>--prompt_column</c>).</summary>
    public string PromptColumn { get; init; } = "prompt";

    /// <summary>P-tuning response field (<c>--response_column</c>).</summary>
    public string ResponseColumn { get; init; } = "response";

    /// <summary>
    /// P-tuning history field (<c>--history_column</c>); null ignores history. A record without the field, or with
    /// <c>null</c>, has an empty history. Also read from Alpaca records when present there.
    /// </summary>
    public string? HistoryColumn { get; init; } = "history";

    /// <summary>
    /// Largest tolerated fraction of skipped records (0..1). Above it the read throws <see cref="InvalidDataException"/>
    /// because the file is more likely in the wrong format than lightly dirty. Default 0.1.
    /// </summary>
    public double MaxBadFraction { get; init; } = 0.1;

    /// <summary>How many issues the exception message quotes with file:line. Default 5.</summary>
    public int IssuesInMessage { get; init; } = 5;
}

/// <summary>What <see cref="DatasetReader"/> read: the good examples, the skipped records, and counts.</summary>
public sealed class DatasetReadResult
{
    internal DatasetReadResult(string path, DatasetFormat format, IReadOnlyList<DialogueExample> examples, IReadOnlyList<DataIssue> issues, string? encodingName)
    {
        Path = path;
        Format = format;
        Examples = examples;
        Issues = issues;
        EncodingName = encodingName;
    }

    /// <summary>The file that was read.</summary>
    public string Path { get; }

    /// <summary>The format actually used (never <see cref="DatasetFormat.Auto"/>).</summary>
    public DatasetFormat Format { get; }

    /// <summary>The text encoding detected for the file ("utf-8" or "gb18030").</summary>
    public string? EncodingName { get; }

    /// <summary>The well-formed examples, in file order.</summary>
    public IReadOnlyList<DialogueExample> Examples { get; }

    /// <summary>One entry per skipped record, in file order.</summary>
    public IReadOnlyList<DataIssue> Issues { get; }

    /// <summary>Records seen (good plus skipped; blank lines are not records).</summary>
    public int TotalRecords => Examples.Count + Issues.Count;

    /// <summary>Records skipped because they were malformed.</summary>
    public int SkippedRecords => Issues.Count;
}
