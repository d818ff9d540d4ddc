using System.Runtime.CompilerServices;
using DoctorGlm.Engine.Backends.Cuda;

namespace DoctorGlm.Engine.Tests.Cuda;

/// <summary>
/// Registers the CUDA backend, when a GPU is present, before any test data is built: the op harness enumerates
/// <c>BackendRegistry.All</c> when xunit discovers its theories, so it then runs every case on CUDA as well.
/// </summary>
internal static class CudaTestSetup
{
    /// <summary>The backend, or null with <see cref="Reason"/> saying why there is none.</summary>
    public static CudaBackend? Backend { get; private set; }

    /// <summary>Why CUDA is unavailable (null when it is).</summary>
    public static string? Reason { get; private set; }

#pragma warning disable CA2255 // a module initializer is the one hook that runs before xunit builds theory data
    [ModuleInitializer]
#pragma warning restore CA2255
    internal static void Initialize()
    {
        if (Environment.GetEnvironmentVariable("DOCTORGLM_TEST_CUDA") == "0") { Reason = "disabled by DOCTORGLM_TEST_CUDA=0"; return; }
        Backend = CudaBackend.TryInitialize(0, out var reason);
        Reason = reason;
    }

    /// <summary>
    /// True when <c>DOCTORGLM_TEST_CUDA=1</c>: the run is meant for a GPU (the GPU runner sets it), so a missing GPU
    /// fails the CUDA tests instead of skipping them — a runner whose library search found nothing must not look green.
    /// </summary>
    public static bool Required => Environment.GetEnvironmentVariable("DOCTORGLM_TEST_CUDA") == "1";

    /// <summary>The CUDA backend, or a dynamic skip (a failure when <see cref="Required"/>) naming why there is none.</summary>
    public static CudaBackend Require()
    {
        if (Backend is null)
        {
            if (Required) Assert.Fail("DOCTORGLM_TEST_CUDA=1 but no CUDA GPU: " + Reason);
            Assert.Skip("no CUDA GPU: " + Reason);
        }
        return Backend!;
    }
}

/// <summary>
/// The test classes that use the GPU run one after another (xunit runs collections in parallel): they share the
/// device's allocator, whose pool statistics a test checks exactly.
/// </summary>
[CollectionDefinition(Name)]
public sealed class GpuCollection
{
    /// <summary>The collection's name.</summary>
    public const string Name = "GPU";
}
