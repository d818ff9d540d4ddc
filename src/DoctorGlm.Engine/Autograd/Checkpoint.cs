namespace DoctorGlm.Engine.Autograd;

/// <summary>
/// Gradient checkpointing of a block (spec §11): the forward runs without recording a graph and keeps only the
/// block's input; backward re-runs the block with recording on and backpropagates through that local graph.
/// Trades one extra forward per block for not storing the block's activations.
/// </summary>
public static class Checkpoint
{
    /// <summary>
    /// Runs <paramref name="block"/> on <paramref name="input"/> checkpointed. Random generators the block draws
    /// from (dropout) are passed in so the recomputation replays exactly the same random streams.
    /// </summary>
    /// <remarks>
    /// Parameters used inside the block are invisible to the outer graph, so the output is always marked as
    /// requiring a gradient while grad mode is on; this also makes frozen-input blocks (LoRA on a frozen
    /// embedding) work without PyTorch's <c>enable_input_require_grads</c> hook.
    /// </remarks>
    public static Tensor Run(Func<Tensor, Tensor> block, Tensor input, params RandomGenerator[] generators)
    {
        if (!GradMode.IsEnabled) return block(input);
        var before = generators.Select(g => g.State).ToArray();
        Tensor output;
        using (var scope = TensorScope.Begin())
        using (GradMode.NoGrad())
        {
            output = block(input);
            output = ReferenceEquals(output, input) ? input.Detach() : output;
            output.Keep();
        }

        return Graph.RecordAlways("Checkpoint", output, [input], grad =>
        {
            using var recompute = TensorScope.Begin();
            // Replay the forward's random streams, then put the generators back where backward found them.
            var current = generators.Select(g => g.State).ToArray();
            for (int i = 0; i < generators.Length; i++) generators[i].State = before[i];
            using var x = input.Detach();
            x.RequiresGrad = true;
            Tensor y;
            using (GradMode.EnableGrad()) y = block(x);
            for (int i = 0; i < generators.Length; i++) generators[i].State = current[i];
            if (y.Shape != grad.Shape)
                throw new InvalidOperationException($"Checkpoint: the block returned {y.Shape} on recomputation but {grad.Shape} on the forward pass");
            if (y.RequiresGrad) y.Backward(grad);
            Tensor? gx = null;
            if (x.Grad is { } g)
            {
                gx = Tensor.EmptyLike(g);
                g.Backend.Copy(g, gx);
                gx.Keep(); // survives the recompute scope; everything else the recomputation made is freed now
                g.Dispose();
                x.Grad = null;
            }
            return [gx];
        });
    }
}
