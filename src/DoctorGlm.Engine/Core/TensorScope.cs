namespace DoctorGlm.Engine;

/// <summary>
/// Deterministic tensor lifetimes. Every tensor created while a scope is active belongs to the innermost scope
/// and is disposed when that scope ends, unless it was moved out with <see cref="Tensor.Keep"/>.
/// A training step therefore looks like <c>using (TensorScope.Begin()) { forward; backward; step; }</c> and
/// allocates nothing that outlives it except parameter gradients and optimizer state, which are created unscoped.
/// </summary>
/// <remarks>Scopes are per thread; they nest.</remarks>
public sealed class TensorScope : IDisposable
{
    [ThreadStatic] private static TensorScope? t_current;
    private readonly TensorScope? _parent;
    private readonly HashSet<Tensor> _owned = new(ReferenceEqualityComparer.Instance);
    private readonly bool _suppress;
    private bool _disposed;

    private TensorScope(TensorScope? parent, bool suppress) { _parent = parent; _suppress = suppress; }

    /// <summary>Starts a scope on this thread.</summary>
    public static TensorScope Begin() => t_current = new TensorScope(t_current, suppress: false);

    /// <summary>
    /// Starts a region in which new tensors belong to no scope (they live until disposed or collected):
    /// used for parameters, gradients of leaves and optimizer state created in the middle of a step.
    /// </summary>
    public static TensorScope Unscoped() => t_current = new TensorScope(t_current, suppress: true);

    /// <summary>The innermost active scope on this thread, if any.</summary>
    public static TensorScope? Current => t_current;

    /// <summary>Number of tensors this scope will dispose.</summary>
    public int Count => _owned.Count;

    internal static void Register(Tensor t)
    {
        var s = t_current;
        if (s is null || s._suppress) return;
        s._owned.Add(t);
        t.OwnerScope = s;
    }

    internal void Forget(Tensor t) => _owned.Remove(t);

    /// <summary>Moves <paramref name="t"/> to the parent scope (or to no scope).</summary>
    internal void HandToParent(Tensor t)
    {
        _owned.Remove(t);
        t.OwnerScope = null;
        var p = _parent;
        while (p is not null && p._suppress) p = p._parent;
        if (p is not null) { p._owned.Add(t); t.OwnerScope = p; }
    }

    /// <summary>Disposes every tensor the scope still owns and makes the parent current again.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        if (t_current != this)
            throw new InvalidOperationException("TensorScope disposed out of order: dispose inner scopes first (use 'using').");
        t_current = _parent;
        foreach (var t in _owned) { t.OwnerScope = null; t.Dispose(); }
        _owned.Clear();
    }
}
