using System.Globalization;

namespace DoctorGlm.Samples.Train;

/// <summary>Command-line options of the sample (System.CommandLine arrives with the full Train job).</summary>
public sealed record TrainOptions(int Steps, int BatchSize, double LearningRate, ulong Seed)
{
    public static TrainOptions? Parse(string[] args)
    {
        var o = new TrainOptions(Steps: 300, BatchSize: 16, LearningRate: 3e-3, Seed: 1234);
        for (int i = 0; i < args.Length; i++)
        {
            string Next() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{args[i]} needs a value");
            switch (args[i])
            {
                case "--steps": o = o with { Steps = int.Parse(Next(), CultureInfo.InvariantCulture) }; break;
                case "--batch-size": o = o with { BatchSize = int.Parse(Next(), CultureInfo.InvariantCulture) }; break;
                case "--lr": o = o with { LearningRate = double.Parse(Next(), CultureInfo.InvariantCulture) }; break;
                case "--seed": o = o with { Seed = ulong.Parse(Next(), CultureInfo.InvariantCulture) }; break;
                case "-h" or "--help":
                    Console.WriteLine("""
                        DoctorGlm.Train — trains a tiny GLM on medical dialogues, character-level, on the CPU.
                          --steps N        optimisation steps (default 300)
                          --batch-size N   dialogues per step (default 16)
                          --lr X           peak learning rate, AdamW, 5% warmup then cosine (default 3e-3)
                          --seed N         seed for weights and data order (default 1234)
                        """);
                    return null;
                default:
                    Console.Error.WriteLine($"unknown option '{args[i]}' (see --help)");
                    return null;
            }
        }
        if (o.Steps < 1 || o.BatchSize < 1 || o.LearningRate <= 0) { Console.Error.WriteLine("steps, batch size and lr must be positive"); return null; }
        return o;
    }
}
