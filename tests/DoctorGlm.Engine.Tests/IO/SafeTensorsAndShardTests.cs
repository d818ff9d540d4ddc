using System.Buffers.Binary;
using System.Text;
using System.Text.Json.Nodes;
using DoctorGlm.Engine.IO;
using static DoctorGlm.Engine.Tests.IO.IoFixture;

namespace DoctorGlm.Engine.Tests.IO;

/// <summary>Memory-mapped safetensors, sharded index sets, folder resolution, and broken inputs.</summary>
public sealed class SafeTensorsAndShardTests : IDisposable
{
    private readonly string _dir = TempDir();

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static readonly string[] ShardKeys =
    [
        "transformer.word_embeddings.weight", "transformer.layers.0.input_layernorm.weight",
        "transformer.layers.0.attention.query_key_value.weight", "transformer.final_layernorm.weight", "lm_head.weight",
    ];

    [Theory]
    [InlineData("single.safetensors", typeof(SafeTensorsFile))]
    [InlineData("sharded_bin", typeof(ShardedTensorSource))]
    [InlineData("sharded_bin/pytorch_model.bin.index.json", typeof(ShardedTensorSource))]
    [InlineData("sharded_safetensors", typeof(ShardedTensorSource))]
    [InlineData("sharded_safetensors/model.safetensors.index.json", typeof(ShardedTensorSource))]
    [InlineData("sharded_bin/pytorch_model-00002-of-00002.bin", typeof(TorchCheckpointFile))]
    public void AllFormatsLoadTheSameValuesBitExact(string path, Type kind)
    {
        using var expected = Expected();
        using var src = CheckpointReader.Open(PathOf(path));
        Assert.IsType(kind, src);
        var keys = kind == typeof(TorchCheckpointFile) ? ShardKeys[2..] : ShardKeys;
        Assert.Equal(keys.Order(), src.Tensors.Select(t => t.Name).Order());
        foreach (var k in keys)
        {
            Assert.Equal(DType.F16, src.Info(k).DType);
            using var t = Load(src, k);
            AssertBitExact(expected, "sharded/" + k, t);
            // Converting load: f16 → f32 is exact.
            using var f = Load(src, k, DType.F32);
            Assert.Equal(t.ToFloatArray(), f.ToFloatArray());
        }
    }

    [Theory]
    [InlineData(0x80)]
    [InlineData(0x8a)]
    [InlineData(0x180)]
    public void A_header_length_whose_first_byte_looks_like_a_pickle_is_still_safetensors(int headerLength)
    {
        // The first byte of a safetensors file is its header length's low byte; 0x80 and 0x8a also open a legacy
        // torch pickle, and the format sniffing once took such a file (one in 128) for one and refused it.
        var json = Encoding.UTF8.GetBytes("{\"x\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}");
        var header = new byte[headerLength];
        Array.Fill(header, (byte)' ');
        json.CopyTo(header, 0);
        var file = new byte[8 + headerLength + 8];
        BinaryPrimitives.WriteUInt64LittleEndian(file, (ulong)headerLength);
        header.CopyTo(file, 8);
        BinaryPrimitives.WriteSingleLittleEndian(file.AsSpan(8 + headerLength), 1.5f);
        BinaryPrimitives.WriteSingleLittleEndian(file.AsSpan(12 + headerLength), -2f);
        string path = Path.Combine(_dir, $"h{headerLength:x}.safetensors");
        File.WriteAllBytes(path, file);
        Assert.Equal(headerLength & 0xFF, file[0]);
        using var src = CheckpointReader.Open(path);
        Assert.IsType<SafeTensorsFile>(src);
        using var t = Load(src, "x");
        Assert.Equal([1.5f, -2f], t.ToFloatArray());
    }

    [Fact]
    public void A_symlinked_file_opens_as_its_target()
    {
        // The Hugging Face cache links each snapshot file to a blob: the link's own size must not be taken for the file's.
        string link = Path.Combine(_dir, "linked.safetensors");
        File.CreateSymbolicLink(link, Path.GetFullPath(PathOf("single.safetensors")));
        using var viaLink = CheckpointReader.Open(link);
        using var direct = CheckpointReader.Open(PathOf("single.safetensors"));
        Assert.Equal(direct.Tensors.Select(t => t.Name).Order(), viaLink.Tensors.Select(t => t.Name).Order());
        using var a = Load(viaLink, ShardKeys[0]);
        using var b = Load(direct, ShardKeys[0]);
        Assert.Equal(b.ToFloatArray(), a.ToFloatArray());
    }

    [Fact]
    public void ShardInfoNamesTheShardFile()
    {
        using var src = CheckpointReader.Open(PathOf("sharded_safetensors"));
        Assert.EndsWith("model-00002-of-00002.safetensors", src.Info("lm_head.weight").File);
        Assert.EndsWith("model-00001-of-00002.safetensors", src.Info("transformer.word_embeddings.weight").File);
    }

    [Fact]
    public void FolderPrefersSafetensors()
    {
        string d = Path.Combine(_dir, "both");
        Directory.CreateDirectory(d);
        File.Copy(PathOf("single.safetensors"), Path.Combine(d, "model.safetensors"));
        File.Copy(PathOf("sharded_bin/pytorch_model-00002-of-00002.bin"), Path.Combine(d, "pytorch_model.bin"));
        using var src = CheckpointReader.Open(d);
        Assert.IsType<SafeTensorsFile>(src);
        File.Delete(Path.Combine(d, "model.safetensors"));
        using var src2 = CheckpointReader.Open(d);
        Assert.IsType<TorchCheckpointFile>(src2);
        File.Delete(Path.Combine(d, "pytorch_model.bin"));
        Assert.Throws<FileNotFoundException>(() => CheckpointReader.Open(d));
    }

    [Fact]
    public void SaveThenReadIsBitExactForEveryDType()
    {
        string path = Path.Combine(_dir, "rt.safetensors");
        var r = new Random(5);
        var vals = Enumerable.Range(0, 24).Select(_ => (float)(r.NextDouble() * 200 - 100)).ToArray();
        using var f32 = Tensor.FromArray(vals, new Shape(4, 6));
        using var f16 = Tensor.FromArray(vals, new Shape(2, 12), DType.F16);
        using var bf16 = Tensor.FromArray(vals, new Shape(24), DType.BF16);
        using var i32 = Tensor.FromArray([1, -2, int.MaxValue], new Shape(3));
        using var u8 = Tensor.FromArray(new byte[] { 0, 1, 255 }, new Shape(3));
        using var i8 = Tensor.FromBytes([0x80, 0x7f, 0x00], new Shape(3), DType.I8);
        var items = new (string, Tensor)[] { ("a", f32), ("b", f16), ("c", bf16), ("d", i32), ("e", u8), ("f", i8) };
        SafeTensorsFile.Save(path, items.Select(x => new KeyValuePair<string, Tensor>(x.Item1, x.Item2)));
        using var src = CheckpointReader.Open(path);
        foreach (var (name, t) in items)
        {
            Assert.Equal(t.DType, src.Info(name).DType);
            using var back = Load(src, name);
            Assert.Equal(t.ToBytes(), back.ToBytes());
        }
        // Converting loads from the mapping.
        using var asF16 = Load(src, "a", DType.F16);
        Assert.Equal(f32.ToFloatArray().Select(HalfConvert.FloatToF16).ToArray(), asF16.AsSpan<ushort>().ToArray());
        using var asBf = Load(src, "b", DType.BF16);
        Assert.Equal(f16.ToFloatArray().Select(HalfConvert.FloatToBf16).ToArray(), asBf.AsSpan<ushort>().ToArray());
    }

    [Fact]
    public void MissingShardNamesTheIndexTheShardAndAKey()
    {
        string d = CopyTo("sharded_bin", _dir);
        File.Delete(Path.Combine(d, "pytorch_model-00002-of-00002.bin"));
        var e = Assert.Throws<InvalidDataException>(() => CheckpointReader.Open(d).Dispose());
        Assert.Contains("pytorch_model.bin.index.json", e.Message);
        Assert.Contains("pytorch_model-00002-of-00002.bin", e.Message);
        Assert.Contains("'lm_head.weight'", e.Message); // the first key (index order) that lives in the missing shard
    }

    [Fact]
    public void IndexEntryForAMissingKeyNamesIt()
    {
        string d = CopyTo("sharded_safetensors", _dir);
        string index = Path.Combine(d, "model.safetensors.index.json");
        var json = JsonNode.Parse(File.ReadAllText(index))!;
        json["weight_map"]!["transformer.layers.7.mlp.dense_4h_to_h.bias"] = "model-00001-of-00002.safetensors";
        File.WriteAllText(index, json.ToJsonString());
        var e = Assert.Throws<InvalidDataException>(() => CheckpointReader.Open(d).Dispose());
        Assert.Contains("transformer.layers.7.mlp.dense_4h_to_h.bias", e.Message);
        Assert.Contains("model-00001-of-00002.safetensors", e.Message);
    }

    [Fact]
    public void IndexCannotPointOutsideItsFolder()
    {
        string d = CopyTo("sharded_safetensors", _dir);
        string index = Path.Combine(d, "model.safetensors.index.json");
        var json = JsonNode.Parse(File.ReadAllText(index))!;
        json["weight_map"]!["lm_head.weight"] = "../single.safetensors";
        File.WriteAllText(index, json.ToJsonString());
        var e = Assert.Throws<InvalidDataException>(() => CheckpointReader.Open(d).Dispose());
        Assert.Contains("lm_head.weight", e.Message);
    }

    [Theory]
    [InlineData(0.3, null)]
    [InlineData(0.0, null)]
    [InlineData(0.995, "'lm_head.weight'")] // only the last tensor's last bytes are cut
    public void TruncatedSafetensorsIsRefused(double fraction, string? key)
    {
        string path = CopyTo("single.safetensors", _dir);
        Truncate(path, (long)(new FileInfo(path).Length * fraction));
        var e = Assert.Throws<InvalidDataException>(() => CheckpointReader.Open(path).Dispose());
        Assert.Contains(path, e.Message);
        if (key is not null) Assert.Contains(key, e.Message);
    }

    /// <summary>Rewrites single.safetensors with one header entry's offsets changed (the data is kept).</summary>
    private string WithOffsets(string key, long begin, long end)
    {
        var bytes = File.ReadAllBytes(PathOf("single.safetensors"));
        int n = (int)BinaryPrimitives.ReadUInt64LittleEndian(bytes);
        var header = JsonNode.Parse(Encoding.UTF8.GetString(bytes, 8, n))!;
        header[key]!["data_offsets"] = new JsonArray(begin, end);
        var h = Encoding.UTF8.GetBytes(header.ToJsonString());
        var outBytes = new byte[8 + h.Length + bytes.Length - 8 - n];
        BinaryPrimitives.WriteUInt64LittleEndian(outBytes, (ulong)h.Length);
        h.CopyTo(outBytes, 8);
        bytes.AsSpan(8 + n).CopyTo(outBytes.AsSpan(8 + h.Length));
        string path = Path.Combine(_dir, $"lie-{begin}-{end}.safetensors");
        File.WriteAllBytes(path, outBytes);
        return path;
    }

    [Fact]
    public void HeaderThatLiesAboutOffsetsIsRefusedNamingTheKey()
    {
        using var f = SafeTensorsFile.Open(PathOf("single.safetensors"));
        var e0 = f["lm_head.weight"];
        long dataLen = new FileInfo(PathOf("single.safetensors")).Length - 8 - (long)BinaryPrimitives.ReadUInt64LittleEndian(File.ReadAllBytes(PathOf("single.safetensors")));

        // Past the end of the data.
        var e = Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Open(WithOffsets("lm_head.weight", dataLen - 2, dataLen + e0.End - e0.Begin - 2)).Dispose());
        Assert.Contains("'lm_head.weight'", e.Message);
        // Size that does not match dtype × shape.
        e = Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Open(WithOffsets("lm_head.weight", e0.Begin, e0.End - 2)).Dispose());
        Assert.Contains("'lm_head.weight'", e.Message);
        // Overlapping another tensor.
        e = Assert.Throws<InvalidDataException>(() => SafeTensorsFile.Open(WithOffsets("lm_head.weight", 0, e0.End - e0.Begin)).Dispose());
        Assert.Contains("'lm_head.weight'", e.Message);
        Assert.Contains("overlap", e.Message);
    }

    [Fact]
    public void ReadAfterDisposeThrows()
    {
        var src = CheckpointReader.Open(PathOf("single.safetensors"));
        src.Dispose();
        using var t = Tensor.Empty(new Shape(5, 4), DType.F16);
        Assert.Throws<ObjectDisposedException>(() => src.ReadInto("lm_head.weight", t));
    }
}
