using System.Text;

namespace DoctorGlm.Engine.Data;

/// <summary>One parsed CSV record and the 1-based line it starts on.</summary>
internal readonly record struct CsvRecord(int Line, IReadOnlyList<string> Fields, string? Error);

/// <summary>
/// RFC 4180 CSV splitting on already-decoded text: comma separators; records end at CRLF, LF or CR outside quotes;
/// a field that starts with a quote runs to the closing quote, with "" meaning a literal quote and commas and line breaks
/// kept verbatim inside. Like Python's csv module (strict=False), a quote in the middle of an unquoted field and text
/// after a closing quote are kept literally instead of failing. Blank lines are skipped. An unterminated quoted field
/// yields a record with <see cref="CsvRecord.Error"/> set and ends the file.
/// </summary>
internal static class CsvParser
{
    public static IEnumerable<CsvRecord> Parse(string text)
    {
        int pos = 0, line = 1;
        var fields = new List<string>();
        var field = new StringBuilder();
        while (pos < text.Length)
        {
            // Skip blank lines between records (they are not records, matching pandas and most CSV consumers).
            if (text[pos] == '\n' || text[pos] == '\r')
            {
                pos += text[pos] == '\r' && pos + 1 < text.Length && text[pos + 1] == '\n' ? 2 : 1;
                line++;
                continue;
            }
            int startLine = line;
            fields.Clear();
            string? error = null;
            while (true)
            {
                field.Clear();
                if (pos < text.Length && text[pos] == '"')
                {
                    pos++;
                    bool closed = false;
                    while (pos < text.Length)
                    {
                        char c = text[pos];
                        if (c == '"')
                        {
                            if (pos + 1 < text.Length && text[pos + 1] == '"') { field.Append('"'); pos += 2; continue; }
                            pos++;
                            closed = true;
                            break;
                        }
                        if (c == '\n' || (c == '\r' && !(pos + 1 < text.Length && text[pos + 1] == '\n'))) line++;
                        field.Append(c);
                        pos++;
                    }
                    if (!closed) { error = $"unterminated quoted field (opened on line {startLine})"; }
                }
                // Unquoted field, or the remainder after a closing quote (kept literally, as Python's csv does).
                while (pos < text.Length && text[pos] != ',' && text[pos] != '\n' && text[pos] != '\r')
                {
                    field.Append(text[pos]);
                    pos++;
                }
                fields.Add(field.ToString());
                if (pos < text.Length && text[pos] == ',') { pos++; continue; }
                break;
            }
            if (pos < text.Length)
            {
                pos += text[pos] == '\r' && pos + 1 < text.Length && text[pos + 1] == '\n' ? 2 : 1;
                line++;
            }
            yield return new CsvRecord(startLine, fields.ToArray(), error);
            if (error is not null) yield break;
        }
    }
}
