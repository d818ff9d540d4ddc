using DoctorGlm.Engine.Autograd;

namespace DoctorGlm.Engine;

public static partial class Ops
{
    /// <summary>Same elements, new shape; a view when <paramref name="x"/> is contiguous. One dimension may be -1.</summary>
    public static Tensor Reshape(Tensor x, params int[] shape)
    {
        x.ThrowIfDisposed();
        var dims = (int[])shape.Clone();
        int infer = Array.IndexOf(dims, -1);
        long known = 1;
        for (int i = 0; i < dims.Length; i++) if (i != infer) known *= dims[i];
        if (infer >= 0)
        {
            if (known == 0 || x.NumElements % known != 0) throw new ArgumentException($"Reshape: cannot infer -1 in {Shape.Format(shape)} for {x.Describe("x")}");
            dims[infer] = (int)(x.NumElements / known);
            known *= dims[infer];
        }
        if (known != x.NumElements) throw new ArgumentException($"Reshape: {x.Describe("x")} has {x.NumElements} elements, {Shape.Format(shape)} needs {known}");
        var newShape = new Shape(dims);
        var src = x.IsContiguous ? x : ContiguousNoGrad(x);
        var y = src.ViewAs(newShape, newShape.ContiguousStrides(), src.Offset);
        var oldShape = x.Shape.ToArray();
        return Graph.Record("Reshape", y, [x], (g, _) => [g.Reshape(oldShape)]);
    }

    /// <summary>A view of entries [start, start+length) of dimension <paramref name="dim"/>.</summary>
    public static Tensor Narrow(Tensor x, int dim, int start, int length)
    {
        x.ThrowIfDisposed();
        if (dim < 0) dim += x.Rank;
        if (dim < 0 || dim >= x.Rank) throw new ArgumentOutOfRangeException(nameof(dim), $"Narrow: dimension {dim} out of range for {x.Describe("x")}");
        if (start < 0 || length < 0 || start + length > x.Shape[dim])
            throw new ArgumentOutOfRangeException(nameof(start), $"Narrow: [{start}, {start + length}) is outside dimension {dim} (size {x.Shape[dim]}) of {x.Describe("x")}");
        var y = x.ViewAs(x.Shape.With(dim, length), x.Strides.ToArray(), x.Offset + start * x.Strides[dim]);
        return Graph.Record("Narrow", y, [x], (g, _) =>
        {
            var gx = Tensor.Zeros(x.Shape, DType.F32, x.Device);
            using var window = gx.ViewAs(g.Shape, gx.Strides.ToArray(), start * gx.Strides[dim]);
            gx.Backend.Copy(g, window);
            return [gx];
        });
    }

    /// <summary>A view with dimensions reordered: output dimension i is input dimension <paramref name="dims"/>[i].</summary>
    public static Tensor Permute(Tensor x, params int[] dims)
    {
        x.ThrowIfDisposed();
        if (dims.Length != x.Rank || dims.Distinct().Count() != dims.Length || dims.Any(d => d < 0 || d >= x.Rank))
            throw new ArgumentException($"Permute: {Shape.Format(dims)} is not a permutation of the {x.Rank} dimensions of {x.Describe("x")}");
        var shape = new int[dims.Length];
        var strides = new long[dims.Length];
        for (int i = 0; i < dims.Length; i++) { shape[i] = x.Shape[dims[i]]; strides[i] = x.Strides[dims[i]]; }
        var y = x.ViewAs(new Shape(shape), strides, x.Offset);
        var inverse = new int[dims.Length];
        for (int i = 0; i < dims.Length; i++) inverse[dims[i]] = i;
        return Graph.Record("Permute", y, [x], (g, _) => [ContiguousNoGrad(g.ViewAs(x.Shape, Invert(g, inverse), g.Offset))]);
    }

    private static long[] Invert(Tensor g, int[] inverse)
    {
        var s = new long[inverse.Length];
        for (int i = 0; i < inverse.Length; i++) s[i] = g.Strides[inverse[i]];
        return s;
    }

    /// <summary>A view with dimensions <paramref name="dim0"/> and <paramref name="dim1"/> swapped.</summary>
    public static Tensor Transpose(Tensor x, int dim0, int dim1)
    {
        if (dim0 < 0) dim0 += x.Rank;
        if (dim1 < 0) dim1 += x.Rank;
        var p = Enumerable.Range(0, x.Rank).ToArray();
        (p[dim0], p[dim1]) = (p[dim1], p[dim0]);
        return Permute(x, p);
    }

    /// <summary><paramref name="x"/> itself when contiguous, otherwise a contiguous copy (gradient passes through).</summary>
    public static Tensor Contiguous(Tensor x)
    {
        x.ThrowIfDisposed();
        if (x.IsContiguous) return x;
        return Graph.Record("Contiguous", ContiguousNoGrad(x), [x], (g, _) => [g]);
    }

    /// <summary>
    /// Converts between float dtypes (round to nearest even). Gradients are F32 whatever a tensor's dtype (a 16-bit
    /// activation's gradient included), so the gradient passes through unchanged in either direction.
    /// </summary>
    public static Tensor Cast(Tensor x, DType dtype)
    {
        x.ThrowIfDisposed();
        if (x.DType == dtype) return x;
        if (!x.DType.IsFloat() || !dtype.IsFloat()) throw new ArgumentException($"Cast: {x.Describe("x")} to {dtype}: only float types convert");
        var y = Tensor.Empty(x.Shape, dtype, x.Device);
        x.Backend.Copy(x, y);
        return Graph.Record("Cast", y, [x], (g, _) => [g]);
    }
}
