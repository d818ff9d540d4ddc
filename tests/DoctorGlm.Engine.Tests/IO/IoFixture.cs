using DoctorGlm.Engine.IO;
using DoctorGlm.Engine.Tests.Harness;

namespace DoctorGlm.Engine.Tests.IO;

/// <summary>Paths of the checkpoint fixtures (tools/reference/make_io_fixtures.py) and exact comparisons against expected.safetensors.</summary>
public static class IoFixture
{
    public static string PathOf(string relative) => Path.Combine(Fixture.Dir("io"), relative);

    public static SafeTensorsFile Expected() => SafeTensorsFile.Open(PathOf("expected.safetensors"));

    /// <summary>Reads <paramref name="name"/> from <paramref name="src"/> in its stored dtype.</summary>
    public static Tensor Load(ITensorSource src, string name, DType? dtype = null)
    {
        var info = src.Info(name);
        var t = Tensor.Empty(info.Shape, dtype ?? info.DType);
        src.ReadInto(name, t);
        return t;
    }

    /// <summary>Asserts that <paramref name="actual"/> holds exactly the bytes Python stored for <paramref name="expectedKey"/>.</summary>
    public static void AssertBitExact(SafeTensorsFile expected, string expectedKey, Tensor actual)
    {
        var e = expected[expectedKey];
        Assert.Equal(e.Shape, actual.Shape.ToArray());
        var bytes = new byte[e.End - e.Begin];
        expected.ReadBytes(expectedKey, bytes);
        Assert.True(bytes.AsSpan().SequenceEqual(actual.ToBytes()), $"{expectedKey}: bytes differ");
    }

    /// <summary>A fresh temporary folder (deleted by the caller).</summary>
    public static string TempDir() => Directory.CreateTempSubdirectory("io-tests-").FullName;

    /// <summary>Copies a fixture file or folder into <paramref name="dir"/>; returns the copy's path.</summary>
    public static string CopyTo(string relative, string dir)
    {
        string src = PathOf(relative), dst = Path.Combine(dir, Path.GetFileName(relative));
        if (Directory.Exists(src))
        {
            Directory.CreateDirectory(dst);
            foreach (var f in Directory.GetFiles(src)) File.Copy(f, Path.Combine(dst, Path.GetFileName(f)));
        }
        else File.Copy(src, dst);
        return dst;
    }

    /// <summary>Cuts a file to <paramref name="length"/> bytes.</summary>
    public static void Truncate(string path, long length)
    {
        using var fs = new FileStream(path, FileMode.Open, FileAccess.ReadWrite);
        fs.SetLength(length);
    }
}
