namespace DoctorGlm.Engine.Backends.Cuda;

/// <summary>
/// A failed CUDA driver, NVRTC or cuBLAS call: names the call and the library's status (numeric value, name and
/// description), so a log line is enough to tell which call failed and why.
/// </summary>
public sealed class CudaException : Exception
{
    /// <summary>Creates the exception for <paramref name="call"/> returning <paramref name="status"/>.</summary>
    public CudaException(string call, int status, string statusName, string? detail = null)
        : base($"{call} failed: {statusName} ({status}){(string.IsNullOrEmpty(detail) ? "" : ": " + detail)}")
    {
        Call = call;
        Status = status;
        StatusName = statusName;
    }

    /// <summary>The native function that failed (e.g. <c>cuMemAlloc_v2</c>).</summary>
    public string Call { get; }

    /// <summary>The numeric status it returned.</summary>
    public int Status { get; }

    /// <summary>The status's symbolic name (e.g. <c>CUDA_ERROR_OUT_OF_MEMORY</c>).</summary>
    public string StatusName { get; }
}
