namespace DoctorGlm.Engine.Autograd;

/// <summary>Reverse-mode traversal of the recorded graph.</summary>
internal static class AutogradEngine
{
    private sealed class Pending
    {
        public required Tensor Grad;
        public bool Owned; // false when the tensor is borrowed (another node's gradient): never add into it in place
    }

    public static void Backward(Tensor root, Tensor? gradient)
    {
        root.ThrowIfDisposed();
        if (!root.RequiresGrad)
            throw new InvalidOperationException($"Backward: {root.Describe("tensor")} does not require a gradient (no trainable input, or computed under NoGrad)");
        Tensor seed;
        bool seedOwned;
        if (gradient is null)
        {
            if (root.NumElements != 1)
                throw new InvalidOperationException($"Backward: {root.Describe("tensor")} is not a scalar; pass the output gradient explicitly");
            seed = Tensor.Full(root.Shape, 1f, DType.F32, root.Device);
            seedOwned = true;
        }
        else
        {
            if (gradient.Shape != root.Shape)
                throw new ArgumentException($"Backward: gradient {gradient.Shape} does not match {root.Describe("output")}");
            seed = gradient;
            seedOwned = false;
        }

        if (root.GradFn is null) { AccumulateLeaf(root, seed); if (seedOwned) seed.Dispose(); return; }

        var order = TopologicalOrder(root.GradFn);
        var pending = new Dictionary<GradNode, Pending>(ReferenceEqualityComparer.Instance) { [root.GradFn] = new Pending { Grad = seed, Owned = seedOwned } };
        foreach (var node in order)
        {
            if (!pending.Remove(node, out var p)) continue; // no gradient reached this node
            var grads = node.BackwardFn(p.Grad);
            if (grads.Length != node.Inputs.Length)
                throw new InvalidOperationException($"backward of {node.Op} returned {grads.Length} gradients for {node.Inputs.Length} inputs");
            // A backward may pass its incoming gradient on unchanged (a residual add's unscaled branch, a cast), or a
            // view of it (a reshape), instead of copying it. Passed to one input, an owned gradient changes owner
            // (the receiver may add into it in place and frees it after its own backward); passed to several, or
            // borrowed in the first place, it is borrowed by each receiver, which never writes into it. Aliasing is
            // judged by storage, so a view is treated like the tensor it views.
            bool incomingKept = false;
            for (int i = 0; i < grads.Length; i++)
            {
                var input = node.Inputs[i];
                var g = grads[i];
                if (input is null || g is null) continue;
                if (g.Shape != input.Shape)
                    throw new InvalidOperationException($"backward of {node.Op} produced gradient {g.Shape} for input {i} of shape {input.Shape}");
                if (input.GradFn is null) { AccumulateLeaf(input, g); continue; } // copies or adds g: g stays the node's
                if (!pending.TryGetValue(input.GradFn, out var q))
                {
                    bool aliasesIncoming = ReferenceEquals(g.Storage, p.Grad.Storage);
                    pending[input.GradFn] = new Pending { Grad = g, Owned = AliasedOnce(grads, i) && (!aliasesIncoming || p.Owned) };
                    incomingKept |= ReferenceEquals(g, p.Grad);
                }
                else if (q.Owned)
                    q.Grad.Backend.AddScaled(q.Grad, 1f, Contig(g), 1f, q.Grad);
                else
                {
                    var sum = Tensor.EmptyLike(q.Grad);
                    sum.Backend.AddScaled(q.Grad, 1f, Contig(g), 1f, sum);
                    q.Grad = sum;
                    q.Owned = true;
                }
            }
            // Free the incoming gradient early unless a receiver holds it now: keeps peak memory at about one layer's
            // activations' gradients instead of the whole graph's.
            if (p.Owned && !incomingKept) p.Grad.Dispose();
        }
    }

    /// <summary>Whether no other gradient of <paramref name="grads"/> shares the storage of gradient <paramref name="i"/>.</summary>
    private static bool AliasedOnce(Tensor?[] grads, int i)
    {
        for (int j = 0; j < grads.Length; j++)
            if (j != i && grads[j] is { } other && ReferenceEquals(other.Storage, grads[i]!.Storage)) return false;
        return true;
    }

    private static Tensor Contig(Tensor g) => g.IsContiguous ? g : throw new InvalidOperationException("gradients must be contiguous");

    private static void AccumulateLeaf(Tensor leaf, Tensor g)
    {
        if (!leaf.RequiresGrad) return;
        if (leaf.Grad is null || leaf.Grad.IsDisposed)
        {
            using (TensorScope.Unscoped())
            {
                var copy = Tensor.Empty(leaf.Shape, DType.F32, leaf.Device);
                copy.Backend.Copy(g, copy);
                leaf.Grad = copy;
            }
        }
        else leaf.Grad.Backend.AddScaled(leaf.Grad, 1f, Contig(g), 1f, leaf.Grad);
    }

    /// <summary>Nodes ordered so that each node comes before every node that produced one of its inputs.</summary>
    private static List<GradNode> TopologicalOrder(GradNode root)
    {
        var visited = new HashSet<GradNode>(ReferenceEqualityComparer.Instance);
        var post = new List<GradNode>();
        var stack = new Stack<(GradNode Node, int Next)>();
        stack.Push((root, 0));
        visited.Add(root);
        while (stack.Count > 0)
        {
            var (node, next) = stack.Pop();
            bool descended = false;
            for (int i = next; i < node.Inputs.Length; i++)
            {
                var child = node.Inputs[i]?.GradFn;
                if (child is null || !visited.Add(child)) continue;
                stack.Push((node, i + 1));
                stack.Push((child, 0));
                descended = true;
                break;
            }
            if (!descended) post.Add(node);
        }
        post.Reverse();
        return post;
    }
}
