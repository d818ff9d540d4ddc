using System.IO.Compression;
using DoctorGlm.Engine.IO;
using DoctorGlm.Engine.Tests.Harness;
using static DoctorGlm.Engine.Tests.IO.IoFixture;

namespace DoctorGlm.Engine.Tests.IO;

/// <summary>torch.save zip checkpoints: values bit-exact against what PyTorch stored, conversions, and refusals.</summary>
public sealed class TorchCheckpointTests : IDisposable
{
    private readonly string _dir = TempDir();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static readonly string[] SameDTypeKeys = ["f32", "f16", "bf16", "i8", "u8", "i32", "bool", "scalar", "param", "view_a", "view_b"];

    [Theory]
    [InlineData("dtypes.bin")]
    [InlineData("dtypes_deflate.bin")]
    public void EveryDTypeRoundTripsBitExact(string file)
    {
        using var expected = Expected();
        using var src = CheckpointReader.Open(PathOf(file));
        Assert.IsType<TorchCheckpointFile>(src);
        foreach (var key in SameDTypeKeys)
        {
            using var t = Load(src, key);
            AssertBitExact(expected, "dtypes/" + key, t);
        }
        Assert.Equal(DType.F16, src.Info("f16").DType);
        Assert.Equal(DType.BF16, src.Info("bf16").DType);
        Assert.Equal(DType.I8, src.Info("i8").DType);
        Assert.Equal(DType.U8, src.Info("bool").DType);
        Assert.Equal(0, src.Info("scalar").Shape.Rank);
        Assert.Equal([2, 2], src.Info("view_b").Shape.ToArray());
        // Non-tensor values are skipped, not exposed.
        Assert.False(src.Contains("epoch"));
        Assert.False(src.Contains("note"));
    }

    [Fact]
    public void ViewsOfOneStorageReadTheirOwnOffsets()
    {
        using var src = CheckpointReader.Open(PathOf("dtypes.bin"));
        using var expected = Expected();
        using var a = Load(src, "view_a");
        using var b = Load(src, "view_b");
        Assert.Equal(expected.Floats("dtypes/view_a"), a.ToFloatArray());
        Assert.Equal(expected.Floats("dtypes/view_b"), b.ToFloatArray());
        Assert.NotEqual(a.ToFloatArray()[0], b.ToFloatArray()[0]);
    }

    [Fact]
    public void WideIntegerAndDoubleTypesConvert()
    {
        using var src = CheckpointReader.Open(PathOf("dtypes.bin"));
        using var expected = Expected();
        Assert.Equal(DType.I32, src.Info("i64").DType);
        using (var t = Load(src, "i64")) Assert.Equal([3, -5, 150528], t.ToIntArray());
        Assert.Equal(DType.F32, src.Info("f64").DType);
        using (var t = Load(src, "f64"))
            Assert.Equal(expected.ReadDoubles("dtypes/f64").Select(d => (float)d).ToArray(), t.ToFloatArray());
        var e = Assert.Throws<InvalidDataException>(() => { using var _ = Load(src, "i64_big"); });
        Assert.Contains("i64_big", e.Message);
        Assert.Contains("dtypes.bin", e.Message);
    }

    [Fact]
    public void FloatsConvertWithRoundToNearestEven()
    {
        using var src = CheckpointReader.Open(PathOf("dtypes.bin"));
        using var f16 = Load(src, "f16");
        using var f16AsF32 = Load(src, "f16", DType.F32);
        Assert.Equal(f16.ToFloatArray(), f16AsF32.ToFloatArray());
        using var bf16AsF32 = Load(src, "bf16", DType.F32);
        using var bf16 = Load(src, "bf16");
        Assert.Equal(bf16.ToFloatArray(), bf16AsF32.ToFloatArray());

        using var f32 = Load(src, "f32");
        var v = f32.ToFloatArray();
        using var asHalf = Load(src, "f32", DType.F16);
        using var asBf = Load(src, "f32", DType.BF16);
        Assert.Equal(v.Select(HalfConvert.FloatToF16).ToArray(), asHalf.AsSpan<ushort>().ToArray());
        Assert.Equal(v.Select(HalfConvert.FloatToBf16).ToArray(), asBf.AsSpan<ushort>().ToArray());

        // Ints never silently become floats (or the reverse).
        var e = Assert.Throws<InvalidDataException>(() => { using var _ = Load(src, "i8", DType.F32); });
        Assert.Contains("'i8'", e.Message);
        e = Assert.Throws<InvalidDataException>(() => { using var _ = Load(src, "f32", DType.I32); });
        Assert.Contains("'f32'", e.Message);
    }

    [Fact]
    public void NonContiguousTensorIsRefusedNamingTheKey()
    {
        using var src = CheckpointReader.Open(PathOf("dtypes.bin"));
        Assert.Equal([3, 2], src.Info("transposed").Shape.ToArray());
        var e = Assert.Throws<InvalidDataException>(() => { using var _ = Load(src, "transposed"); });
        Assert.Contains("'transposed'", e.Message);
        Assert.Contains("not contiguous", e.Message);
        Assert.Contains("dtypes.bin", e.Message);
    }

    [Fact]
    public void WrongDestinationShapeNamesTheKey()
    {
        using var src = CheckpointReader.Open(PathOf("dtypes.bin"));
        using var t = Tensor.Empty(new Shape(4, 3));
        var e = Assert.Throws<InvalidDataException>(() => src.ReadInto("f32", t));
        Assert.Contains("'f32'", e.Message);
        Assert.Throws<KeyNotFoundException>(() => src.Info("nope"));
    }

    [Fact]
    public void NestedModuleStateDictIsFlattenedAndPrefixesStrip()
    {
        using var expected = Expected();
        using var src = CheckpointReader.Open(PathOf("nested.pt"));
        string[] keys = ["module.weight", "module.bias", "module.transformer.layers.0.attention.query_key_value.weight", "module.transformer.layers.0.attention.query_key_value.weight_scale"];
        Assert.Equal(keys.Order(), src.Tensors.Select(t => t.Name).Order());
        foreach (var k in keys) { using var t = Load(src, k); AssertBitExact(expected, "nested/" + k, t); }
        Assert.Equal(DType.I8, src.Info(keys[2]).DType);
        Assert.Equal(DType.F16, src.Info(keys[3]).DType);

        using var stripped = CheckpointReader.WithoutPrefixes(CheckpointReader.Open(PathOf("nested.pt")), "module.", "_forward_module.");
        Assert.True(stripped.Contains("transformer.layers.0.attention.query_key_value.weight"));
        using var q = Load(stripped, "transformer.layers.0.attention.query_key_value.weight");
        AssertBitExact(expected, "nested/" + keys[2], q);
    }

    [Fact]
    public void MaliciousGlobalIsRefusedNotExecuted()
    {
        string path = PathOf("malicious.bin");
        var e = Assert.Throws<InvalidDataException>(() => CheckpointReader.Open(path).Dispose());
        Assert.Contains("'os system'", e.Message);
        Assert.Contains(path, e.Message);
        Assert.Contains("byte 13", e.Message); // the GLOBAL opcode's offset in data.pkl
    }

    /// <summary>Copies dtypes.bin with its data.pkl (or a data entry) replaced.</summary>
    private string Rewrite(string name, Func<string, byte[], byte[]> change)
    {
        string dst = Path.Combine(_dir, name);
        using (var zin = ZipFile.OpenRead(PathOf("dtypes.bin")))
        using (var zout = ZipFile.Open(dst, ZipArchiveMode.Create))
        {
            foreach (var entry in zin.Entries)
            {
                using var s = entry.Open();
                var ms = new MemoryStream();
                s.CopyTo(ms);
                var outEntry = zout.CreateEntry(entry.FullName, CompressionLevel.NoCompression);
                using var o = outEntry.Open();
                o.Write(change(entry.FullName, ms.ToArray()));
            }
        }
        return dst;
    }

    [Fact]
    public void UnknownOpcodeIsRefusedWithItsOffset()
    {
        // 'i' (INST) right after PROTO: a class-instantiating opcode torch never writes.
        string path = Rewrite("inst.bin", (n, d) => n.EndsWith("data.pkl") ? [.. d[..2], (byte)'i', .. d[2..]] : d);
        var e = Assert.Throws<InvalidDataException>(() => CheckpointReader.Open(path).Dispose());
        Assert.Contains("0x69", e.Message);
        Assert.Contains("byte 2", e.Message);
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void TruncatedPickleIsRefused()
    {
        string path = Rewrite("shortpkl.bin", (n, d) => n.EndsWith("data.pkl") ? d[..(d.Length / 2)] : d);
        var e = Assert.Throws<InvalidDataException>(() => CheckpointReader.Open(path).Dispose());
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void StorageEntryShorterThanThePickleClaimsNamesTheTensor()
    {
        // Every storage entry cut in half: the pickle's storage sizes now lie.
        string path = Rewrite("short.bin", (n, d) => n.Contains("/data/") ? d[..(d.Length / 2)] : d);
        var e = Assert.Throws<InvalidDataException>(() => CheckpointReader.Open(path).Dispose());
        Assert.Contains(path, e.Message);
        Assert.Contains("tensor 'f32'", e.Message); // the first tensor in the state dict
        Assert.Contains("truncated", e.Message);
    }

    [Fact]
    public void MissingStorageEntryNamesTheTensor()
    {
        string src = Path.Combine(_dir, "src.bin");
        File.Copy(PathOf("dtypes.bin"), src);
        string path = Path.Combine(_dir, "missing.bin");
        using (var zin = ZipFile.OpenRead(src))
        using (var zout = ZipFile.Open(path, ZipArchiveMode.Create))
            foreach (var entry in zin.Entries.Where(e => e.FullName != "dtypes/data/0"))
            {
                using var s = entry.Open();
                using var o = zout.CreateEntry(entry.FullName).Open();
                s.CopyTo(o);
            }
        var e = Assert.Throws<InvalidDataException>(() => CheckpointReader.Open(path).Dispose());
        Assert.Contains("'f32'", e.Message);
        Assert.Contains("dtypes/data/0", e.Message);
    }

    [Theory]
    [InlineData(0.5)]
    [InlineData(0.97)]
    [InlineData(0.0)]
    public void TruncatedFileIsRefused(double fraction)
    {
        string path = CopyTo("dtypes.bin", _dir);
        Truncate(path, (long)(new FileInfo(path).Length * fraction));
        var e = Assert.ThrowsAny<Exception>(() => CheckpointReader.Open(path).Dispose());
        Assert.True(e is InvalidDataException, e.ToString());
        Assert.Contains(path, e.Message);
    }

    [Fact]
    public void LegacyPickleFormatIsRefusedWithAHint()
    {
        string path = Path.Combine(_dir, "legacy.bin");
        File.WriteAllBytes(path, [0x80, 0x02, 0x8a, 0x0a, 0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19, 0x2e]);
        var e = Assert.Throws<InvalidDataException>(() => CheckpointReader.Open(path).Dispose());
        Assert.Contains("legacy", e.Message);
    }
}
