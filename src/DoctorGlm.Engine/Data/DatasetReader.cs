using System.Text;
using System.Text.Json;

namespace DoctorGlm.Engine.Data;

/// <summary>
/// Reads fine-tuning dialogue data (Alpaca JSON/JSONL, ChatGLM P-tuning JSONL, the Chinese Medical Dialogue CSV) into
/// <see cref="DialogueExample"/>s. Malformed records are skipped and reported as <see cref="DataIssue"/>s with file:line;
/// when too many are bad (<see cref="DatasetReadOptions.MaxBadFraction"/>) the read fails instead, because a mostly-bad
/// file usually means a wrong format or column name rather than dirty data.
/// </summary>
public static class DatasetReader
{
    private static readonly string[] CmdColumns = ["department", "title", "ask", "answer"];

    /// <summary>Reads <paramref name="path"/> in the given format (default: detected).</summary>
    /// <exception cref="InvalidDataException">The file is unreadable as the format, has no usable record, or too many bad ones.</exception>
    public static DatasetReadResult Read(string path, DatasetFormat format) => Read(path, new DatasetReadOptions { Format = format });

    /// <summary>Reads <paramref name="path"/> with <paramref name="options"/> (null: defaults, format detected).</summary>
    /// <exception cref="InvalidDataException">The file is unreadable as the format, has no usable record, or too many bad ones.</exception>
    public static DatasetReadResult Read(string path, DatasetReadOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        options ??= new DatasetReadOptions();
        if (!(options.MaxBadFraction >= 0 && options.MaxBadFraction <= 1))
            throw new ArgumentOutOfRangeException(nameof(options), options.MaxBadFraction, "MaxBadFraction must be in [0, 1]");
        var (text, encoding) = TextFileDecoder.ReadFile(path);
        var format = options.Format == DatasetFormat.Auto ? DetectFormat(path, text, options) : options.Format;

        var examples = new List<DialogueExample>();
        var issues = new List<DataIssue>();
        if (format == DatasetFormat.CmdCsv) ReadCmdCsv(path, text, examples, issues);
        else
        {
            var records = JsonDialogueRecords.IsJsonArray(text) ? JsonDialogueRecords.ReadArray(text, path) : JsonDialogueRecords.ReadLines(text);
            foreach (var r in records)
            {
                string source = $"{path}:{r.Line}";
                string? error = r.Error;
                DialogueExample? ex = null;
                if (error is null)
                {
                    ex = format == DatasetFormat.Alpaca
                        ? JsonDialogueRecords.ToAlpaca(r.Value, source, options.HistoryColumn, out error)
                        : JsonDialogueRecords.ToPTuning(r.Value, source, options.PromptColumn, options.ResponseColumn, options.HistoryColumn, out error);
                }
                if (ex is not null) examples.Add(ex);
                else issues.Add(new DataIssue(path, r.Line, error!));
            }
        }

        var result = new DatasetReadResult(path, format, examples, issues, encoding);
        CheckQuality(result, options);
        return result;
    }

    /// <summary>Parses a command-line format name: <c>auto</c>, <c>alpaca</c>, <c>ptuning</c> or <c>cmd-csv</c> (case-insensitive).</summary>
    public static DatasetFormat ParseFormat(string name) => name.Trim().ToLowerInvariant() switch
    {
        "auto" => DatasetFormat.Auto,
        "alpaca" => DatasetFormat.Alpaca,
        "ptuning" or "p-tuning" => DatasetFormat.PTuning,
        "cmd-csv" or "cmd" or "csv" => DatasetFormat.CmdCsv,
        _ => throw new ArgumentException($"unknown dataset format '{name}' (expected auto, alpaca, ptuning or cmd-csv)", nameof(name)),
    };

    /// <summary>
    /// Detection: <c>.csv</c> → CMD CSV. JSON (by extension <c>.json</c>/<c>.jsonl</c>, or text starting with '[' or '{'):
    /// the first parsable record decides — an <c>instruction</c> or <c>output</c> field means Alpaca, the configured
    /// prompt/response columns mean P-tuning. Other text whose first line names the CMD columns → CMD CSV.
    /// </summary>
    /// <exception cref="InvalidDataException">Nothing matched.</exception>
    public static DatasetFormat DetectFormat(string path, string text, DatasetReadOptions? options = null)
    {
        options ??= new DatasetReadOptions();
        var ext = System.IO.Path.GetExtension(path).ToLowerInvariant();
        if (ext == ".csv") return DatasetFormat.CmdCsv;
        var trimmed = text.AsSpan().TrimStart();
        bool looksJson = ext is ".json" or ".jsonl" || (trimmed.Length > 0 && (trimmed[0] == '[' || trimmed[0] == '{'));
        if (looksJson)
        {
            JsonElement? first = null;
            if (JsonDialogueRecords.IsJsonArray(text))
            {
                try { first = JsonDialogueRecords.ReadArray(text, path).Select(r => (JsonElement?)r.Value).FirstOrDefault(); }
                catch (InvalidDataException) { /* reported by the real read below */ }
            }
            else first = JsonDialogueRecords.ReadLines(text).Where(r => r.Error is null).Select(r => (JsonElement?)r.Value).FirstOrDefault();
            if (first is { ValueKind: JsonValueKind.Object } o)
            {
                if (o.TryGetProperty("instruction", out _) || o.TryGetProperty("output", out _)) return DatasetFormat.Alpaca;
                if (o.TryGetProperty(options.PromptColumn, out _) || o.TryGetProperty(options.ResponseColumn, out _)) return DatasetFormat.PTuning;
            }
            throw new InvalidDataException($"{path}: cannot tell the JSON dataset format from its first record: expected Alpaca fields " +
                $"(instruction, input, output) or P-tuning columns ({options.PromptColumn}, {options.ResponseColumn}); pass the format or column names explicitly");
        }
        int nl = text.IndexOfAny(['\r', '\n']);
        string firstLine = nl >= 0 ? text[..nl] : text;
        if (CmdColumns.All(c => firstLine.Contains(c, StringComparison.OrdinalIgnoreCase))) return DatasetFormat.CmdCsv;
        throw new InvalidDataException($"{path}: unknown dataset format (not .csv/.json/.jsonl and not recognisable from the content)");
    }

    private static void ReadCmdCsv(string path, string text, List<DialogueExample> examples, List<DataIssue> issues)
    {
        using var records = CsvParser.Parse(text).GetEnumerator();
        if (!records.MoveNext()) return;
        var header = records.Current.Fields.Select(f => f.Trim().TrimStart('\uFEFF').ToLowerInvariant()).ToList();
        var idx = CmdColumns.Select(c => header.IndexOf(c)).ToArray();
        if (idx.Any(i => i < 0))
            throw new InvalidDataException($"{path}:{records.Current.Line}: CMD CSV header must name the columns {string.Join(",", CmdColumns)}; got '{string.Join(",", records.Current.Fields)}'");
        int titleAt = idx[1], askAt = idx[2], answerAt = idx[3];
        while (records.MoveNext())
        {
            var r = records.Current;
            string? error = r.Error;
            if (error is null && r.Fields.Count != header.Count)
                error = $"expected {header.Count} columns, got {r.Fields.Count}";
            if (error is null)
            {
                // Cells are trimmed: leading/trailing blanks (including the full-width U+3000 indentation some answers
                // start with) are layout left over from the web pages the corpus was scraped from.
                string title = r.Fields[titleAt].Trim(), ask = r.Fields[askAt].Trim(), answer = r.Fields[answerAt].Trim();
                // "无" ("none") is the corpus's placeholder for a missing question body; the title is the question then.
                string prompt = ask.Length > 0 && ask != "无" ? ask : title;
                if (prompt.Length == 0) error = "empty prompt (both 'ask' and 'title' are empty)";
                else if (answer.Length == 0) error = "empty 'answer'";
                else examples.Add(new DialogueExample(prompt, answer, [], $"{path}:{r.Line}"));
            }
            if (error is not null) issues.Add(new DataIssue(path, r.Line, error));
        }
    }

    private static void CheckQuality(DatasetReadResult result, DatasetReadOptions options)
    {
        if (result.Examples.Count == 0)
            throw new InvalidDataException($"{result.Path}: no usable records ({result.SkippedRecords} skipped)" + Quote(result.Issues, options.IssuesInMessage));
        double bad = (double)result.SkippedRecords / result.TotalRecords;
        if (bad > options.MaxBadFraction)
            throw new InvalidDataException(
                $"{result.Path}: {result.SkippedRecords} of {result.TotalRecords} records are malformed ({bad:P1} > the {options.MaxBadFraction:P1} allowed)"
                + Quote(result.Issues, options.IssuesInMessage));
    }

    private static string Quote(IReadOnlyList<DataIssue> issues, int count)
    {
        if (issues.Count == 0) return "";
        var sb = new StringBuilder(":");
        foreach (var i in issues.Take(Math.Max(0, count))) sb.Append("\n  ").Append(i);
        if (issues.Count > count) sb.Append($"\n  … and {issues.Count - count} more");
        return sb.ToString();
    }
}
