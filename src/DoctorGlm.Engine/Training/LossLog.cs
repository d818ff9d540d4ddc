using System.Globalization;
using System.Text;
using DoctorGlm.Engine.IO;

namespace DoctorGlm.Engine.Training;

/// <summary>One optimizer step's record.</summary>
/// <param name="Step">1-based optimizer step.</param>
/// <param name="Loss">Mean training loss over the step's micro-batches.</param>
/// <param name="LearningRate">The rate the step used.</param>
/// <param name="GradNorm">Global gradient L2 norm before clipping (NaN when not computed).</param>
/// <param name="Tokens">Non-pad tokens the step processed.</param>
public readonly record struct StepRecord(int Step, double Loss, double LearningRate, double GradNorm, long Tokens);

/// <summary>
/// The CSV of the run's steps: header <c>step,loss,learning_rate,grad_norm,tokens</c>, one row per optimizer step,
/// numbers in invariant round-trip form (so a resumed run's file is byte-identical to an uninterrupted one's).
/// </summary>
public static class LossLog
{
    /// <summary>The header line.</summary>
    public const string Header = "step,loss,learning_rate,grad_norm,tokens";

    /// <summary>The CSV text of <paramref name="records"/> (LF line ends).</summary>
    public static string Format(IEnumerable<StepRecord> records)
    {
        ArgumentNullException.ThrowIfNull(records);
        var sb = new StringBuilder(Header).Append('\n');
        foreach (var r in records)
            sb.Append(r.Step.ToString(CultureInfo.InvariantCulture)).Append(',')
              .Append(r.Loss.ToString("R", CultureInfo.InvariantCulture)).Append(',')
              .Append(r.LearningRate.ToString("R", CultureInfo.InvariantCulture)).Append(',')
              .Append(r.GradNorm.ToString("R", CultureInfo.InvariantCulture)).Append(',')
              .Append(r.Tokens.ToString(CultureInfo.InvariantCulture)).Append('\n');
        return sb.ToString();
    }

    /// <summary>Writes the CSV to <paramref name="path"/> atomically (temporary file, then rename).</summary>
    public static void Write(string path, IEnumerable<StepRecord> records) => AtomicFile.WriteAllText(path, Format(records));

    /// <summary>Reads a file written by <see cref="Write"/>; errors name the file and line.</summary>
    public static List<StepRecord> Read(string path)
    {
        var lines = File.ReadAllLines(path);
        if (lines.Length == 0 || lines[0] != Header) throw new InvalidDataException($"{path}:1: expected the header '{Header}'");
        var list = new List<StepRecord>();
        for (int i = 1; i < lines.Length; i++)
        {
            if (lines[i].Length == 0) continue;
            var c = lines[i].Split(',');
            if (c.Length != 5
                || !int.TryParse(c[0], NumberStyles.Integer, CultureInfo.InvariantCulture, out int step)
                || !double.TryParse(c[1], NumberStyles.Float, CultureInfo.InvariantCulture, out double loss)
                || !double.TryParse(c[2], NumberStyles.Float, CultureInfo.InvariantCulture, out double lr)
                || !double.TryParse(c[3], NumberStyles.Float, CultureInfo.InvariantCulture, out double norm)
                || !long.TryParse(c[4], NumberStyles.Integer, CultureInfo.InvariantCulture, out long tokens))
                throw new InvalidDataException($"{path}:{i + 1}: expected step,loss,learning_rate,grad_norm,tokens; got '{lines[i]}'");
            list.Add(new StepRecord(step, loss, lr, norm, tokens));
        }
        return list;
    }
}
