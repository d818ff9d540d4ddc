using DoctorGlm.Engine.Autograd;
using DoctorGlm.Engine.IO;
using DoctorGlm.Engine.Tests.Harness;

namespace DoctorGlm.Engine.Tests.Golden;

/// <summary>
/// Rotary, GLM attention and LoRA against the PyTorch fixtures (tools/reference/make_op_fixtures.py): forward and
/// every stored gradient. The fixtures are float64 results of float32 inputs; we compute in float32, so the
/// tolerance is 1e-5 relative plus a small absolute term for values that cancel to near zero.
/// </summary>
public class AttentionGoldenTests
{
    private const double Rtol = 1e-5, Atol = 1e-5;

    private static Tensor Leaf(SafeTensorsFile f, string name)
    {
        var t = f.Load(name);
        t.RequiresGrad = true;
        return t;
    }

    private static void Check(SafeTensorsFile f, string name, Tensor actual, double rtol = Rtol, double atol = Atol)
    {
        Assert.Equal(new Shape(f[name].Shape), actual.Shape);
        Fixture.AssertClose(f.Floats(name), actual.ToFloatArray(), rtol, atol, $"{Path.GetFileNameWithoutExtension(f.Path)}.{name}");
    }

    [Theory]
    [InlineData("rotary2d")]
    [InlineData("rotary2d_d128")]
    public void Rotary2DMatchesPyTorch(string fixture)
    {
        using var scope = TensorScope.Begin();
        using var f = Fixture.Ops(fixture);
        var x = Leaf(f, "x");
        var y = Ops.Rotary2D(x, f.Load("position_ids"));
        Check(f, "y", y);
        y.Backward(f.Load("dout"));
        Check(f, "dx", x.Grad!);
    }

    [Fact]
    public void RotaryFixturePositionIdsFollowSpec()
    {
        // rotary2d's ids are §4.1 sequences: sample 0 ctx = 5, mask_pos = 4; sample 1 ctx = 3, mask_pos = 1.
        using var scope = TensorScope.Begin();
        using var f = Fixture.Ops("rotary2d");
        var ids = PositionIds.Glm([5, 3], [4, 1], 7);
        Assert.Equal(f.Load("position_ids").ToIntArray(), ids.ToIntArray());
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void GlmAttentionMatchesPyTorch(bool prefix)
    {
        using var scope = TensorScope.Begin();
        using var f = Fixture.Ops(prefix ? "glm_attention_prefix" : "glm_attention");
        float c = (float)f.Meta("layer_coeff");
        var q = Leaf(f, "q");
        var k = Leaf(f, "k");
        var v = Leaf(f, "v");
        var pk = prefix ? Leaf(f, "prefix_k") : null;
        var pv = prefix ? Leaf(f, "prefix_v") : null;
        var output = Ops.GlmAttention(q, k, v, f.Load("mask"), c, pk, pv);
        Check(f, "out", output);
        output.Backward(f.Load("dout"));
        Check(f, "dq", q.Grad!);
        Check(f, "dk", k.Grad!);
        Check(f, "dv", v.Grad!);
        if (prefix)
        {
            Check(f, "dprefix_k", pk!.Grad!);
            Check(f, "dprefix_v", pv!.Grad!);
        }
    }

    /// <summary>
    /// The prefix mask (a batched KV cache's left pads) hides prefix keys exactly as if they were absent: each row
    /// hides its own subset, and agrees with the attention over only its visible prefix keys; an all-zero mask gives
    /// PyTorch's output.
    /// </summary>
    [Fact]
    public void PrefixMaskHidesPrefixKeysAsIfTheyWereAbsent()
    {
        using var scope = TensorScope.Begin();
        using var _ = GradMode.NoGrad();
        using var f = Fixture.Ops("glm_attention_prefix");
        float c = (float)f.Meta("layer_coeff");
        Tensor q = f.Load("q"), k = f.Load("k"), v = f.Load("v"), mask = f.Load("mask"), pk = f.Load("prefix_k"), pv = f.Load("prefix_v");
        int batch = q.Shape[0], n = pk.Shape[1], rowLen = pk.Shape[2] * pk.Shape[3];
        Assert.True(n >= 2, $"the fixture has {n} prefix keys");
        Check(f, "out", Ops.GlmAttention(q, k, v, mask, c, pk, pv, Tensor.FromArray(new byte[batch * n], new Shape(batch, n))));

        var pm = new byte[batch * n];
        for (int b = 0; b < batch; b++) for (int j = 0; j < n; j++) pm[b * n + j] = (byte)((j + b) % 2 == 0 && j != n - 1 ? 1 : 0);
        var masked = Ops.GlmAttention(q, k, v, mask, c, pk, pv, Tensor.FromArray(pm, new Shape(batch, n))).ToFloatArray();
        float[] pkAll = pk.ToFloatArray(), pvAll = pv.ToFloatArray();
        int per = masked.Length / batch;
        for (int b = 0; b < batch; b++)
        {
            var keep = Enumerable.Range(0, n).Where(j => pm[b * n + j] == 0).ToArray();
            float[] Rows(float[] all) => [.. keep.SelectMany(j => all.AsSpan((b * n + j) * rowLen, rowLen).ToArray())];
            var shape = new Shape(1, keep.Length, pk.Shape[2], pk.Shape[3]);
            Tensor One(Tensor t) => t.Narrow(0, b, 1).Contiguous();
            var alone = Ops.GlmAttention(One(q), One(k), One(v), One(mask), c, Tensor.FromArray(Rows(pkAll), shape), Tensor.FromArray(Rows(pvAll), shape)).ToFloatArray();
            Fixture.AssertClose(alone, masked.AsSpan(b * per, per).ToArray(), 1e-6, 1e-6, $"row {b} (visible prefix keys {string.Join(",", keep)})");
        }
    }

    [Fact]
    public void FullyBlockedPadRowsGiveZeroQueryAndKeyGradients()
    {
        // The fixture documents it: sample 1's two pad query rows get dq = 0 and its two pad keys dk = 0 exactly,
        // while their values still get gradient (the uniform attention reads them).
        using var scope = TensorScope.Begin();
        using var f = Fixture.Ops("glm_attention");
        var q = Leaf(f, "q");
        var k = Leaf(f, "k");
        var v = Leaf(f, "v");
        Ops.GlmAttention(q, k, v, f.Load("mask"), (float)f.Meta("layer_coeff")).Backward(f.Load("dout"));
        int rowLen = q.Shape[2] * q.Shape[3], sampleLen = q.Shape[1] * rowLen;
        var dq = q.Grad!.ToFloatArray();
        var dk = k.Grad!.ToFloatArray();
        var dv = v.Grad!.ToFloatArray();
        for (int e = 0; e < 2 * rowLen; e++)
        {
            Assert.Equal(0f, dq[sampleLen + e]);
            Assert.Equal(0f, dk[sampleLen + e]);
        }
        Assert.Contains(dv.Skip(sampleLen).Take(2 * rowLen), x => x != 0f);
    }

    [Fact]
    public void PrefixLmMaskMatchesFixtureMask()
    {
        // glm_attention's mask: sample 0 unpadded with ctx 4; sample 1 ctx 2 on 4 real tokens, left-padded by 2.
        using var scope = TensorScope.Begin();
        using var f = Fixture.Ops("glm_attention");
        var mask = AttentionMask.PrefixLm([4, 2], 6, [0, 2]);
        Assert.Equal(DType.U8, mask.DType);
        Assert.Equal(f.Load("mask").ToBytes(), mask.ToBytes());
    }

    [Fact]
    public void SpecWorkedExample()
    {
        // Spec §4.1: "你好" = [5, 74874, 130001 ([gMASK]), 130004 (<sop>)]: ctx = 3, mask_pos = 2.
        using var scope = TensorScope.Begin();
        var ids = PositionIds.Glm([3], [2], 4);
        Assert.Equal(new Shape(1, 2, 4), ids.Shape);
        Assert.Equal([0, 1, 2, 2, 0, 0, 0, 1], ids.ToIntArray());
        // Rows 0–2 see columns 0–2; row 3 sees 0–3.
        var mask = AttentionMask.PrefixLm([3], 4);
        Assert.Equal(new byte[]
        {
            0, 0, 0, 1,
            0, 0, 0, 1,
            0, 0, 0, 1,
            0, 0, 0, 0,
        }, mask.ToBytes());
        // The same prompt left-padded by 2 (§4.3): pads get position 0 and fully blocked rows and columns.
        var padded = PositionIds.Glm([3], [2], 6, [2]);
        Assert.Equal([0, 0, 0, 1, 2, 2, 0, 0, 0, 0, 0, 1], padded.ToIntArray());
        var pm = AttentionMask.PrefixLm([3], 6, [2]).ToBytes();
        for (int i = 0; i < 6; i++)
            for (int j = 0; j < 6; j++)
            {
                byte want = i < 2 || j < 2 ? (byte)1 : mask.ToBytes()[(i - 2) * 4 + (j - 2)];
                Assert.Equal(want, pm[i * 6 + j]);
            }
    }

    [Theory]
    [InlineData("lora_linear")]
    [InlineData("lora_linear_grouped")]
    public void LoraLinearMatchesPyTorch(string fixture)
    {
        using var scope = TensorScope.Begin();
        using var f = Fixture.Ops(fixture);
        var groups = fixture.EndsWith("grouped", StringComparison.Ordinal)
            ? LoraGroups.Merged(f.Metadata["enable_lora"].Split(',').Select(e => e == "1").ToArray())
            : null;
        float scaling = (float)f.Meta("scaling");
        var x = Leaf(f, "x");
        var a = Leaf(f, "lora_a");
        var b = Leaf(f, "lora_b");
        var weight = f.Load("weight");
        var bias = f.Load("bias");
        var y = Ops.LoraLinear(x, weight, bias, a, b, scaling, groups);
        Check(f, "y", y);
        y.Backward(f.Load("dout"));
        Check(f, "dx", x.Grad!);
        Check(f, "dlora_a", a.Grad!);
        Check(f, "dlora_b", b.Grad!);
        Assert.Null(weight.Grad);

        // Merging the update into W gives the same layer; unmerging restores W.
        var w0 = weight.ToFloatArray();
        LoraMerge.Merge(weight, a, b, scaling, groups);
        using (GradMode.NoGrad())
            Fixture.AssertClose(f.Floats("y"), Ops.Linear(x, weight, bias).ToFloatArray(), Rtol, Atol, $"{fixture}: merged Linear");
        LoraMerge.Unmerge(weight, a, b, scaling, groups);
        Fixture.AssertClose(w0, weight.ToFloatArray(), 0, 1e-6, $"{fixture}: unmerged weight");
    }

    [Fact]
    public void GroupedLoraLeavesDisabledBlockUntouched()
    {
        // enable_lora [T, F, T]: output rows 6..11 of the 18 equal the plain linear layer.
        using var scope = TensorScope.Begin();
        using var f = Fixture.Ops("lora_linear_grouped");
        var x = f.Load("x");
        var weight = f.Load("weight");
        var bias = f.Load("bias");
        var lora = Ops.LoraLinear(x, weight, bias, f.Load("lora_a"), f.Load("lora_b"), 2f, LoraGroups.Merged(true, false, true)).ToFloatArray();
        var plain = Ops.Linear(x, weight, bias).ToFloatArray();
        for (int row = 0; row < 6; row++)
            for (int o = 0; o < 18; o++)
            {
                bool touched = o is < 6 or >= 12;
                if (touched) Assert.NotEqual(plain[row * 18 + o], lora[row * 18 + o]);
                else Assert.Equal(plain[row * 18 + o], lora[row * 18 + o]);
            }
    }
}
