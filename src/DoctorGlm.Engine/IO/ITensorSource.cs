namespace DoctorGlm.Engine.IO;

/// <summary>Where a stored tensor is and what it holds.</summary>
/// <param name="Name">Key (e.g. <c>transformer.layers.0.attention.query_key_value.weight</c>).</param>
/// <param name="DType">Stored element type.</param>
/// <param name="Shape">Stored shape.</param>
/// <param name="File">The file that holds it (for error messages).</param>
public sealed record TensorInfo(string Name, DType DType, Shape Shape, string File);

/// <summary>
/// A read-only collection of named tensors on disk (a safetensors file, a torch pickle, a sharded folder).
/// Loading streams each tensor straight into its destination, so a model never needs two copies of its weights.
/// </summary>
public interface ITensorSource : IDisposable
{
    /// <summary>What this source is (a file or folder path), for error messages.</summary>
    string Description { get; }

    /// <summary>Every stored tensor.</summary>
    IReadOnlyCollection<TensorInfo> Tensors { get; }

    /// <summary>True when <paramref name="name"/> is stored.</summary>
    bool Contains(string name);

    /// <summary>The stored tensor's description; throws <see cref="KeyNotFoundException"/> naming the source and key.</summary>
    TensorInfo Info(string name);

    /// <summary>
    /// Reads <paramref name="name"/> into <paramref name="destination"/> (a contiguous tensor of the same shape, any
    /// float dtype when the stored one is a float; converted with round-to-nearest-even). Throws
    /// <see cref="InvalidDataException"/> naming the file and key on a shape mismatch or corrupt data.
    /// </summary>
    void ReadInto(string name, Tensor destination);
}
