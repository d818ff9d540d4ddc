using System.Collections;

namespace DoctorGlm.Engine;

/// <summary>An immutable tensor shape (row-major dimension sizes).</summary>
public readonly struct Shape : IEquatable<Shape>, IReadOnlyList<int>
{
    private readonly int[]? _dims;

    /// <summary>Creates a shape; every dimension must be non-negative.</summary>
    public Shape(params int[] dims)
    {
        foreach (int d in dims)
            if (d < 0) throw new ArgumentException($"shape {Format(dims)} has a negative dimension", nameof(dims));
        _dims = (int[])dims.Clone();
    }

    /// <summary>The dimensions (a copy-free read-only view).</summary>
    public ReadOnlySpan<int> Dims => _dims ?? [];

    /// <summary>Number of dimensions.</summary>
    public int Rank => _dims?.Length ?? 0;

    /// <summary>Total number of elements (1 for a scalar).</summary>
    public long NumElements
    {
        get { long n = 1; foreach (int d in Dims) n *= d; return n; }
    }

    /// <summary>Dimension <paramref name="i"/>; negative values count from the end.</summary>
    public int this[int i] => Dims[i < 0 ? Rank + i : i];

    /// <inheritdoc />
    public int Count => Rank;

    /// <summary>The last dimension (the row length of a row-major matrix view).</summary>
    public int Last => Rank == 0 ? 1 : Dims[^1];

    /// <summary>Product of all dimensions but the last.</summary>
    public long Rows => Rank == 0 ? 1 : NumElements / Math.Max(1, Last);

    /// <summary>Contiguous row-major strides, in elements.</summary>
    public long[] ContiguousStrides()
    {
        var s = new long[Rank];
        long acc = 1;
        for (int i = Rank - 1; i >= 0; i--) { s[i] = acc; acc *= Dims[i]; }
        return s;
    }

    /// <summary>Returns a copy with dimension <paramref name="dim"/> replaced.</summary>
    public Shape With(int dim, int size)
    {
        var d = Dims.ToArray();
        d[dim < 0 ? Rank + dim : dim] = size;
        return new Shape(d);
    }

    /// <summary>The dimensions as an array (a copy).</summary>
    public int[] ToArray() => Dims.ToArray();

    /// <inheritdoc />
    public bool Equals(Shape other) => Dims.SequenceEqual(other.Dims);
    /// <inheritdoc />
    public override bool Equals(object? obj) => obj is Shape s && Equals(s);
    /// <inheritdoc />
    public override int GetHashCode() { var h = new HashCode(); foreach (int d in Dims) h.Add(d); return h.ToHashCode(); }
    /// <summary>Equality.</summary>
    public static bool operator ==(Shape a, Shape b) => a.Equals(b);
    /// <summary>Inequality.</summary>
    public static bool operator !=(Shape a, Shape b) => !a.Equals(b);
    /// <summary>Implicit conversion from a dimension array.</summary>
    public static implicit operator Shape(int[] dims) => new(dims);

    /// <inheritdoc />
    public IEnumerator<int> GetEnumerator() => ((IEnumerable<int>)(_dims ?? [])).GetEnumerator();
    IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

    /// <summary>"[2, 3, 4]".</summary>
    public override string ToString() => Format(Dims);

    internal static string Format(ReadOnlySpan<int> dims) => "[" + string.Join(", ", dims.ToArray()) + "]";
}
