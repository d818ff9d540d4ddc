using System.Text;
using System.Text.Json;

namespace DoctorGlm.Engine.Data;

/// <summary>
/// JSON containers (a top-level array, or JSON lines) and the conversion of one JSON object into a
/// <see cref="DialogueExample"/> for the Alpaca and P-tuning layouts. Problems with one record become a message for a
/// <see cref="DataIssue"/>; only an unreadable JSON array (a syntax error loses the position of every later record)
/// fails the whole file.
/// </summary>
internal static class JsonDialogueRecords
{
    /// <summary>A parsed record (or the parse error of its line) and the 1-based line it starts on.</summary>
    public readonly record struct JsonRecord(int Line, JsonElement Value, string? Error);

    /// <summary>True when the first non-whitespace character is '[' (a JSON array rather than JSON lines).</summary>
    public static bool IsJsonArray(string text)
    {
        foreach (char c in text)
        {
            if (char.IsWhiteSpace(c)) continue;
            return c == '[';
        }
        return false;
    }

    /// <summary>One record per non-blank line; a line that is not valid JSON yields a record with an error.</summary>
    public static List<JsonRecord> ReadLines(string text)
    {
        var records = new List<JsonRecord>();
        int line = 0;
        foreach (var raw in text.Split('\n'))
        {
            line++;
            var s = raw.TrimEnd('\r');
            if (string.IsNullOrWhiteSpace(s)) continue;
            try
            {
                using var doc = JsonDocument.Parse(s);
                records.Add(new JsonRecord(line, doc.RootElement.Clone(), null));
            }
            catch (JsonException e)
            {
                records.Add(new JsonRecord(line, default, "invalid JSON: " + FirstSentence(e.Message)));
            }
        }
        return records;
    }

    /// <summary>The elements of a top-level JSON array with the line each starts on.</summary>
    /// <exception cref="InvalidDataException">The text is not a well-formed JSON array.</exception>
    public static List<JsonRecord> ReadArray(string text, string file)
    {
        var bytes = Encoding.UTF8.GetBytes(text);
        var records = new List<JsonRecord>();
        var reader = new Utf8JsonReader(bytes, new JsonReaderOptions { CommentHandling = JsonCommentHandling.Skip });
        int line = 1;
        long counted = 0; // newlines are counted incrementally up to each element's start offset
        try
        {
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartArray)
                throw new InvalidDataException($"{file}:1: expected a JSON array");
            while (reader.Read() && reader.TokenType != JsonTokenType.EndArray)
            {
                long start = reader.TokenStartIndex;
                line += bytes.AsSpan((int)counted, (int)(start - counted)).Count((byte)'\n');
                counted = start;
                using var doc = JsonDocument.ParseValue(ref reader);
                records.Add(new JsonRecord(line, doc.RootElement.Clone(), null));
            }
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{file}:{(e.LineNumber ?? 0) + 1}: invalid JSON array: {FirstSentence(e.Message)}", e);
        }
        return records;
    }

    /// <summary>Alpaca: prompt = instruction, then "\n" and input when input is non-empty; response = output.</summary>
    public static DialogueExample? ToAlpaca(JsonElement e, string source, string? historyColumn, out string? error)
    {
        if (!RequireObject(e, out error)) return null;
        var instruction = OptionalString(e, "instruction", ref error, required: true);
        var input = OptionalString(e, "input", ref error, required: false);
        var output = OptionalString(e, "output", ref error, required: true);
        var history = ReadHistory(e, historyColumn, ref error);
        if (error is not null) return null;
        // The common Alpaca→chat convention (e.g. LLaMA-Factory's alpaca converter): instruction and input joined by a
        // newline, input omitted when empty. DoctorGLM itself ships no Alpaca loader (spec §5.2 uses its own corpus format).
        string prompt = string.IsNullOrEmpty(input) ? instruction! : string.IsNullOrEmpty(instruction) ? input : instruction + "\n" + input;
        if (string.IsNullOrWhiteSpace(prompt)) { error = "empty prompt (instruction and input are both empty)"; return null; }
        if (string.IsNullOrWhiteSpace(output)) { error = "empty 'output'"; return null; }
        return new DialogueExample(prompt, output!, history!, source);
    }

    /// <summary>P-tuning: prompt, response and (optional) history from the configured columns.</summary>
    public static DialogueExample? ToPTuning(JsonElement e, string source, string promptColumn, string responseColumn, string? historyColumn, out string? error)
    {
        if (!RequireObject(e, out error)) return null;
        var prompt = OptionalString(e, promptColumn, ref error, required: true);
        var response = OptionalString(e, responseColumn, ref error, required: true);
        var history = ReadHistory(e, historyColumn, ref error);
        if (error is not null) return null;
        // The official script skips records whose prompt or response is falsy; whitespace-only is treated the same here.
        if (string.IsNullOrWhiteSpace(prompt)) { error = $"empty '{promptColumn}'"; return null; }
        if (string.IsNullOrWhiteSpace(response)) { error = $"empty '{responseColumn}'"; return null; }
        return new DialogueExample(prompt!, response!, history!, source);
    }

    private static bool RequireObject(JsonElement e, out string? error)
    {
        error = e.ValueKind == JsonValueKind.Object ? null : $"record must be a JSON object, got {Kind(e.ValueKind)}";
        return error is null;
    }

    private static string? OptionalString(JsonElement e, string name, ref string? error, bool required)
    {
        if (error is not null) return null;
        if (!e.TryGetProperty(name, out var v) || v.ValueKind == JsonValueKind.Null)
        {
            if (required) error = $"missing required field '{name}'";
            return required ? null : "";
        }
        if (v.ValueKind != JsonValueKind.String) { error = $"field '{name}' must be a string, got {Kind(v.ValueKind)}"; return null; }
        return v.GetString();
    }

    private static IReadOnlyList<(string, string)>? ReadHistory(JsonElement e, string? column, ref string? error)
    {
        if (error is not null) return null;
        if (column is null || !e.TryGetProperty(column, out var h) || h.ValueKind == JsonValueKind.Null) return [];
        if (h.ValueKind != JsonValueKind.Array) { error = $"field '{column}' must be an array of [question, answer] pairs, got {Kind(h.ValueKind)}"; return null; }
        var turns = new List<(string, string)>();
        int i = 0;
        foreach (var turn in h.EnumerateArray())
        {
            if (turn.ValueKind != JsonValueKind.Array || turn.GetArrayLength() != 2
                || turn[0].ValueKind != JsonValueKind.String || turn[1].ValueKind != JsonValueKind.String)
            {
                error = $"'{column}'[{i}] must be a [question, answer] pair of strings";
                return null;
            }
            turns.Add((turn[0].GetString()!, turn[1].GetString()!));
            i++;
        }
        return turns;
    }

    private static string Kind(JsonValueKind k) => k switch
    {
        JsonValueKind.Object => "an object",
        JsonValueKind.Array => "an array",
        JsonValueKind.String => "a string",
        JsonValueKind.Number => "a number",
        JsonValueKind.True or JsonValueKind.False => "a boolean",
        JsonValueKind.Null => "null",
        _ => k.ToString(),
    };

    // System.Text.Json messages append "Path: $ | LineNumber: 0 | BytePositionInLine: 5."; within JSON lines the
    // line number is always 0 and would mislead next to our file:line, so keep only the first sentence.
    private static string FirstSentence(string message)
    {
        int cut = message.IndexOf(" Path:", StringComparison.Ordinal);
        return cut > 0 ? message[..cut] : message;
    }
}
