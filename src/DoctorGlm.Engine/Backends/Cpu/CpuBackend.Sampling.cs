namespace DoctorGlm.Engine.Backends.Cpu;

public sealed unsafe partial class CpuBackend
{
    /// <inheritdoc />
    /// <remarks>
    /// The reference for kernels/sampling.cu, written the plain way: the k-th largest comes from a sorted copy of the
    /// row (the kernel's radix select must agree with it), then one ordered scan collects the candidates.
    /// </remarks>
    public void SelectCandidates(Tensor scores, Tensor penaltyIds, Tensor settings, Tensor topK, Tensor candidateIds, Tensor candidateScores, Tensor counts)
    {
        SamplingArguments.Check(scores, penaltyIds, settings, topK, candidateIds, candidateScores, counts);
        int rows = scores.Shape[0], v = scores.Shape[1], l = penaltyIds.Shape[1], capacity = candidateIds.Shape[1];
        float* ps = scores.Ptr<float>(), pset = settings.Ptr<float>(), pcs = candidateScores.Ptr<float>();
        int* ppen = penaltyIds.Ptr<int>(), pk = topK.Ptr<int>(), pci = candidateIds.Ptr<int>(), pcount = counts.Ptr<int>();
        ForRows(rows, v, r =>
        {
            var row = new Span<float>(ps + r * v, v);
            float theta = pset[2 * r], temperature = pset[2 * r + 1];
            if (theta != 1f)
                for (int i = 0; i < l; i++)
                {
                    int id = ppen[r * l + i];
                    if (id < 0) continue;
                    if (id >= v) throw new ArgumentOutOfRangeException(nameof(penaltyIds), id, $"SelectCandidates: penaltyIds[{r}, {i}] is outside [0, {v})");
                    float s = row[id];
                    row[id] = s < 0 ? s * theta : s / theta;
                }
            foreach (float s in row)
                if (!float.IsFinite(s)) { pcount[r] = -1; return; }
            var scaled = new float[v];
            for (int j = 0; j < v; j++) scaled[j] = row[j] / temperature;
            int k = pk[r];
            if (k <= 0 || k > v) k = v;
            var sorted = (float[])scaled.Clone();
            Array.Sort(sorted); // ascending; no NaN can be here (finite / positive)
            float kth = sorted[v - k];
            int count = 0;
            for (int j = 0; j < v; j++)
            {
                if (!(scaled[j] >= kth)) continue;
                if (count < capacity) { pci[r * capacity + count] = j; pcs[r * capacity + count] = scaled[j]; }
                count++;
            }
            pcount[r] = count;
        });
    }
}
