namespace DoctorGlm.Engine.Autograd;

/// <summary>
/// One recorded op in the define-by-run graph: which inputs want gradients, and how to compute them from the
/// gradient of the op's output.
/// </summary>
internal sealed class GradNode
{
    public GradNode(string op, Tensor?[] inputs, Func<Tensor, Tensor?[]> backward)
    {
        Op = op;
        Inputs = inputs;
        BackwardFn = backward;
    }

    /// <summary>Op name, for error messages.</summary>
    public string Op { get; }

    /// <summary>The op's inputs that require a gradient; null where none is needed.</summary>
    public Tensor?[] Inputs { get; }

    /// <summary>Maps the output gradient to input gradients (same order as <see cref="Inputs"/>; null entries are skipped).</summary>
    public Func<Tensor, Tensor?[]> BackwardFn { get; }

    /// <summary>True when input <paramref name="i"/> needs a gradient: backward code computes only those.</summary>
    public bool Needs(int i) => Inputs[i] is not null;
}

/// <summary>Records ops into the graph; used by op implementations.</summary>
public static class Graph
{
    /// <summary>
    /// Attaches a backward function to <paramref name="output"/> when grad mode is on and some input requires a
    /// gradient. <paramref name="backward"/> receives the output gradient and a predicate telling which inputs
    /// need gradients, and returns one gradient (or null) per input, shaped like that input.
    /// </summary>
    public static Tensor Record(string op, Tensor output, Tensor?[] inputs, Func<Tensor, Func<int, bool>, Tensor?[]> backward)
    {
        if (!GradMode.IsEnabled) return output;
        bool any = false;
        var needed = new Tensor?[inputs.Length];
        for (int i = 0; i < inputs.Length; i++)
            if (inputs[i] is { RequiresGrad: true } t) { needed[i] = t; any = true; }
        if (!any) return output;
        output.RequiresGrad = true;
        GradNode? node = null;
        node = new GradNode(op, needed, g => backward(g, node!.Needs));
        output.GradFn = node;
        return output;
    }

    /// <summary>Like <see cref="Record"/> but always makes <paramref name="output"/> require a gradient (gradient checkpointing: the block may hold trainable parameters the graph cannot see).</summary>
    internal static Tensor RecordAlways(string op, Tensor output, Tensor?[] inputs, Func<Tensor, Tensor?[]> backward)
    {
        if (!GradMode.IsEnabled) return output;
        var needed = new Tensor?[inputs.Length];
        for (int i = 0; i < inputs.Length; i++)
            if (inputs[i] is { RequiresGrad: true } t) needed[i] = t;
        output.RequiresGrad = true;
        output.GradFn = new GradNode(op, needed, backward);
        return output;
    }
}
