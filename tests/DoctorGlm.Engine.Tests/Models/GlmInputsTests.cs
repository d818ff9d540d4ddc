using DoctorGlm.Engine.Models.ChatGlm;
using DoctorGlm.Engine.Tests.Harness;

namespace DoctorGlm.Engine.Tests.Models;

public sealed class GlmInputsTests
{
    [Fact]
    public void Spec_worked_example_positions_and_mask()
    {
        // §4.1: "你好" = [5, 74874, 130001, 130004] → ctx 3, mask_pos 2, pos [0,1,2,2], blk [0,0,0,1].
        using var scope = TensorScope.Begin();
        using var x = GlmInputs.Build([[5, 74874, 130001, 130004]], GlmConfig.ChatGlm6B);
        Assert.Equal(3, x.Ctx[0]);
        Assert.Equal(2, x.MaskPos[0]);
        Assert.Equal(new[] { 0, 1, 2, 2, 0, 0, 0, 1 }, x.PositionIds.ToIntArray());
        // rows 0–2 see columns 0–2; row 3 sees 0–3.
        Assert.Equal(new float[] { 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0 }, x.Mask.ToFloatArray());
    }

    [Fact]
    public void Left_pads_with_pad_id_blocked_rows_and_zero_positions()
    {
        var c = GlmConfig.ChatGlm6B;
        using var scope = TensorScope.Begin();
        using var x = GlmInputs.Build([[5, 74874, 130001, 130004, 9], [7, 130001, 130004]], c, [[-100, -100, -100, 130004, 9], [-100, -100, 130004]]);
        Assert.Equal(new[] { 0, 2 }, x.PadLeft);
        Assert.Equal(new[] { 5, 74874, 130001, 130004, 9, 3, 3, 7, 130001, 130004 }, x.Ids.ToIntArray());
        Assert.Equal(new[] { -100, -100, -100, 130004, 9, -100, -100, -100, -100, 130004 }, x.Labels!.ToIntArray());
        var pos = x.PositionIds.ToIntArray();
        Assert.Equal(new[] { 0, 1, 2, 2, 2, 0, 0, 0, 1, 2, 0, 0, 0, 1, 1, 0, 0, 0, 0, 1 }, pos);
        var mask = x.Mask.ToFloatArray();
        for (int j = 0; j < 5; j++) { Assert.Equal(1f, mask[25 + 0 * 5 + j]); Assert.Equal(1f, mask[25 + j * 5 + 1]); }
        Assert.Equal(new float[] { 1, 1, 0, 0, 1 }, mask.AsSpan(25 + 3 * 5, 5).ToArray()); // the [gMASK] row does not see <sop>
    }

    [Fact]
    public void A_mask_prompt_uses_the_mask_position_and_bad_sequences_are_rejected()
    {
        var c = GlmConfig.ChatGlm6B;
        using var scope = TensorScope.Begin();
        using var x = GlmInputs.Build([[5, 130000, 6, 130004, 8]], c);
        Assert.Equal(new[] { 0, 1, 2, 1, 1, 0, 0, 0, 1, 2 }, x.PositionIds.ToIntArray());
        Assert.Throws<ArgumentException>(() => GlmInputs.Build([[5, 6, 130004, 8]], c)); // <sop> with no mask token
        Assert.Throws<ArgumentOutOfRangeException>(() => GlmInputs.Build([[5, 130528]], c));
        Assert.Throws<ArgumentException>(() => GlmInputs.Build([[5, 6], []], c));
    }

    [Fact]
    public void Training_sequences_match_the_reference_script()
    {
        var c = ModelFixture.Config;
        using var f = ModelFixture.Open("train");
        var ids = ModelFixture.Rows(f, "ids");
        var labels = ModelFixture.Rows(f, "labels");
        (int[], int[])[] pairs = [([21, 34, 55, 89], [13, 8, 5]), ([144, 33, 70, 71, 72, 73, 74], [99, 98]), ([6], [17, 18, 19, 20, 21, 22, 23])];
        for (int b = 0; b < pairs.Length; b++)
        {
            var (i, l) = GlmInputs.TrainingSequence(pairs[b].Item1, pairs[b].Item2, c, (int)f.Meta("max_source_length"), (int)f.Meta("max_target_length"));
            Assert.Equal(ids[b], i);
            Assert.Equal(labels[b], l);
        }
    }
}
