using Spectre.Console;
using Spectre.Console.Rendering;

namespace DoctorGlm.Samples.Train;

/// <summary>Renders the loss per step as a small text chart (people would rather look at a curve than read a log).</summary>
public static class LossCurve
{
    public static IRenderable Render(IReadOnlyList<double> losses, int width = 60, int height = 10)
    {
        if (losses.Count == 0) return new Text("");
        // Average the steps into `width` columns, then draw each column's height with block characters.
        int cols = Math.Min(width, losses.Count);
        var avg = Enumerable.Range(0, cols).Select(c =>
        {
            int s = c * losses.Count / cols, e = Math.Max(s + 1, (c + 1) * losses.Count / cols);
            return losses.Skip(s).Take(e - s).Average();
        }).ToArray();
        double lo = avg.Min(), hi = avg.Max();
        if (hi - lo < 1e-9) hi = lo + 1;
        var rows = new List<string>();
        for (int r = height - 1; r >= 0; r--)
        {
            double level = lo + (hi - lo) * r / (height - 1);
            string label = r == height - 1 ? $"{hi,6:F2} ┤" : r == 0 ? $"{lo,6:F2} ┤" : "       │";
            rows.Add(label + new string(avg.Select(v => v >= level ? '█' : ' ').ToArray()));
        }
        rows.Add("       └" + new string('─', cols));
        rows.Add($"        step 1{new string(' ', Math.Max(1, cols - 12 - losses.Count.ToString().Length))}step {losses.Count}");
        return new Panel(new Text(string.Join('\n', rows))) { Header = new PanelHeader("training loss") };
    }
}
