using DoctorGlm.Engine.Data;
using DoctorGlm.Engine.Models.ChatGlm;

namespace DoctorGlm.Engine.Training;

/// <summary>
/// Collates §5.1 training samples (<see cref="ChatGlmSampleBuilder.BuildTrain"/>: right-padded to
/// max_source_length + max_target_length, labels −100 outside &lt;sop&gt;…&lt;eop&gt;) into a model batch.
/// </summary>
public static class GlmBatch
{
    /// <summary>
    /// Builds <see cref="GlmInputs"/> with labels from <paramref name="samples"/>. With <paramref name="cropToLongest"/>
    /// the right padding past the batch's longest sample is dropped: every position after a sample's &lt;eop&gt; is
    /// a pad with label −100 that no earlier position attends to (the mask is causal from &lt;sop&gt; on, spec §4.1), so
    /// the loss is exactly the one of the full-length batch, at a fraction of the cost.
    /// </summary>
    public static GlmInputs Collate(IReadOnlyList<ChatGlmTrainSample> samples, GlmConfig config, Device? device = null, bool cropToLongest = true)
    {
        ArgumentNullException.ThrowIfNull(samples);
        ArgumentNullException.ThrowIfNull(config);
        if (samples.Count == 0) throw new ArgumentException("GlmBatch.Collate: the batch is empty", nameof(samples));
        int full = samples[0].InputIds.Length;
        for (int i = 0; i < samples.Count; i++)
            if (samples[i].InputIds.Length != full || samples[i].Labels.Length != full)
                throw new ArgumentException($"GlmBatch.Collate: sample {i} has {samples[i].InputIds.Length} ids / {samples[i].Labels.Length} labels, sample 0 has {full} (all must be padded to max_source_length + max_target_length)", nameof(samples));
        int len = cropToLongest ? samples.Max(s => s.Length) : full;
        var ids = samples.Select(s => s.InputIds[..len]).ToArray();
        var labels = samples.Select(s => s.Labels[..len]).ToArray();
        return GlmInputs.Build(ids, config, labels, device);
    }

    /// <summary>Number of supervised targets after the causal shift (labels ≠ −100 at positions ≥ 1): what the mean loss averages over.</summary>
    public static int TargetCount(IReadOnlyList<ChatGlmTrainSample> samples)
    {
        ArgumentNullException.ThrowIfNull(samples);
        int n = 0;
        foreach (var s in samples)
            for (int t = 1; t < s.Labels.Length; t++)
                if (s.Labels[t] != ChatGlmSampleBuilder.IgnoreIndex) n++;
        return n;
    }
}
