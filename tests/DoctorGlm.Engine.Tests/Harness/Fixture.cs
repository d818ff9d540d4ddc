using DoctorGlm.Engine.IO;

namespace DoctorGlm.Engine.Tests.Harness;

/// <summary>Access to the PyTorch-generated fixtures (tools/reference/make_op_fixtures.py) and comparisons.</summary>
public static class Fixture
{
    /// <summary>Folder of the committed fixtures, copied next to the test assembly.</summary>
    public static string Dir(string group) => Path.Combine(AppContext.BaseDirectory, "Fixtures", group);

    /// <summary>Opens <c>Fixtures/ops/NAME.safetensors</c>.</summary>
    public static SafeTensorsFile Ops(string name) => SafeTensorsFile.Open(Path.Combine(Dir("ops"), name + ".safetensors"));

    /// <summary>A fixture tensor as floats.</summary>
    public static float[] Floats(this SafeTensorsFile f, string name) { using var t = f.Load(name); return t.ToFloatArray(); }

    /// <summary>A metadata number.</summary>
    public static double Meta(this SafeTensorsFile f, string key) =>
        double.Parse(f.Metadata.TryGetValue(key, out var v) ? v : throw new KeyNotFoundException($"{f.Path}: metadata '{key}' missing"), System.Globalization.CultureInfo.InvariantCulture);

    /// <summary>Asserts |actual − expected| ≤ atol + rtol·|expected| element by element, naming the first failure.</summary>
    public static void AssertClose(ReadOnlySpan<float> expected, ReadOnlySpan<float> actual, double rtol, double atol, string what)
    {
        Assert.True(expected.Length == actual.Length, $"{what}: {actual.Length} values, expected {expected.Length}");
        for (int i = 0; i < expected.Length; i++)
        {
            double err = Math.Abs((double)actual[i] - expected[i]);
            Assert.True(err <= atol + rtol * Math.Abs(expected[i]), $"{what}[{i}] = {actual[i]}, expected {expected[i]} (|err| {err:E2} > {atol} + {rtol}·|expected|)");
        }
    }
}
