using DoctorGlm.Engine.IO;
using DoctorGlm.Engine.Models.ChatGlm;
using DoctorGlm.Engine.Tests.Harness;

namespace DoctorGlm.Engine.Tests.Models;

/// <summary>The tiny-model fixtures of tools/reference/make_model_fixtures.py.</summary>
internal static class ModelFixture
{
    public static string Dir => Fixture.Dir("model");

    public static string ConfigPath => Path.Combine(Dir, "config.json");

    public static GlmConfig Config => GlmConfig.FromJson(ConfigPath);

    public static SafeTensorsFile Open(string name) => SafeTensorsFile.Open(Path.Combine(Dir, name + ".safetensors"));

    public static GlmModel LoadModel(bool trainable = false)
    {
        using var w = Open("weights");
        return GlmModel.Load(Config, w, trainable: trainable);
    }

    /// <summary>The §5.1 training batch of train.safetensors (ids and labels as the fixture built them).</summary>
    public static GlmInputs TrainBatch(GlmConfig config)
    {
        using var f = Open("train");
        var ids = Rows(f, "ids");
        var labels = Rows(f, "labels");
        return GlmInputs.Build(ids, config, labels);
    }

    public static int[][] Rows(SafeTensorsFile f, string name)
    {
        using var t = f.Load(name);
        var flat = t.ToIntArray();
        int rows = t.Shape[0], cols = t.Shape[1];
        return Enumerable.Range(0, rows).Select(r => flat[(r * cols)..((r + 1) * cols)]).ToArray();
    }

    /// <summary>max |a − e|.</summary>
    public static double MaxAbs(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        double m = 0;
        for (int i = 0; i < expected.Length; i++) m = Math.Max(m, Math.Abs((double)actual[i] - expected[i]));
        return m;
    }

    /// <summary>max |a − e| / max |e|.</summary>
    public static double RelErr(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual)
    {
        double scale = 0;
        foreach (var e in expected) scale = Math.Max(scale, Math.Abs(e));
        Assert.True(scale > 0, "reference gradient is all zero: the test would prove nothing");
        return MaxAbs(expected, actual) / scale;
    }
}
