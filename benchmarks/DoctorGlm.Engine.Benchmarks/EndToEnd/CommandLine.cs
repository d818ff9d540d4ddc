using System.Globalization;
using System.Text.Json;

namespace DoctorGlm.Engine.Benchmarks.EndToEnd;

/// <summary>
/// "--name value" options of the end-to-end modes. Unknown names are an error (a typo must not silently run the
/// default), and so is a value that does not parse.
/// </summary>
public sealed class Options
{
    private readonly Dictionary<string, string> _values = new(StringComparer.Ordinal);
    private readonly HashSet<string> _used = new(StringComparer.Ordinal);
    private readonly string _mode;

    /// <summary>Parses <paramref name="args"/> (pairs of "--name value").</summary>
    public Options(string mode, IReadOnlyList<string> args)
    {
        _mode = mode;
        for (int i = 0; i < args.Count; i++)
        {
            string a = args[i];
            if (!a.StartsWith("--", StringComparison.Ordinal) || i + 1 >= args.Count)
                throw new ArgumentException($"{mode}: expected '--name value' pairs, got '{a}'");
            _values[a[2..]] = args[++i];
        }
    }

    /// <summary>A string option.</summary>
    public string Text(string name, string fallback)
    {
        _used.Add(name);
        return _values.TryGetValue(name, out var v) ? v : fallback;
    }

    /// <summary>An integer option (at least 1).</summary>
    public int Int(string name, int fallback)
    {
        string v = Text(name, fallback.ToString(CultureInfo.InvariantCulture));
        if (!int.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out int n) || n < 1)
            throw new ArgumentException($"{_mode}: --{name} must be a positive integer, not '{v}'");
        return n;
    }

    /// <summary>A comma-separated list of positive integers.</summary>
    public int[] IntList(string name, string fallback)
    {
        var items = Text(name, fallback).Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        if (items.Length == 0) throw new ArgumentException($"{_mode}: --{name} is empty");
        return items.Select(v => int.TryParse(v, NumberStyles.Integer, CultureInfo.InvariantCulture, out int n) && n >= 1 ? n
            : throw new ArgumentException($"{_mode}: --{name} item '{v}' is not a positive integer")).ToArray();
    }

    /// <summary>A comma-separated list whose items must be in <paramref name="allowed"/>.</summary>
    public string[] List(string name, string fallback, params string[] allowed)
    {
        var items = Text(name, fallback).Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        foreach (var item in items)
            if (!allowed.Contains(item)) throw new ArgumentException($"{_mode}: --{name} item '{item}' is not one of {string.Join(", ", allowed)}");
        if (items.Length == 0) throw new ArgumentException($"{_mode}: --{name} is empty");
        return items;
    }

    /// <summary>Throws when an option was given that the mode never asked for.</summary>
    public void RejectUnknown()
    {
        var unknown = _values.Keys.Where(k => !_used.Contains(k)).ToList();
        if (unknown.Count > 0) throw new ArgumentException($"{_mode}: unknown option(s) {string.Join(", ", unknown.Select(u => "--" + u))}");
    }
}

/// <summary>The machine-readable result line shared with tools/bench/torch_lora_step.py: "RESULT {json}".</summary>
public static class ResultLine
{
    /// <summary>Prints the line and, when <paramref name="jsonl"/> is set, appends the JSON to that file.</summary>
    public static void Write(IReadOnlyDictionary<string, object?> fields, string? jsonl)
    {
        string json = JsonSerializer.Serialize(fields);
        Console.WriteLine("RESULT " + json);
        if (!string.IsNullOrEmpty(jsonl)) File.AppendAllText(jsonl, json + "\n");
    }
}
