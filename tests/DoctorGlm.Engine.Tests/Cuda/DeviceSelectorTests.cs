using DoctorGlm.Engine.Backends;

namespace DoctorGlm.Engine.Tests.Cuda;

/// <summary>Device choice: "cpu" always works, "auto" falls back with a reason, "cuda" fails loudly without a GPU.</summary>
[Collection(GpuCollection.Name)]
public class DeviceSelectorTests
{
    [Fact]
    public void CpuIsAlwaysTheCpu()
    {
        Assert.Equal(Device.Cpu, DeviceSelector.Resolve("cpu", out var note));
        Assert.Null(note);
        Assert.Equal(Device.Cpu, DeviceSelector.Resolve(" CPU "));
    }

    [Fact]
    public void AutoPicksTheGpuOrFallsBackWithTheReason()
    {
        var d = DeviceSelector.Resolve("auto", out var note);
        if (CudaTestSetup.Backend is { } gpu)
        {
            Assert.Equal(gpu.Device, d);
            Assert.Null(note);
        }
        else
        {
            Assert.Equal(Device.Cpu, d);
            Assert.NotNull(note);
            Assert.Contains("CPU", note);
            Assert.True(note!.Length > 40, $"the fallback note should say why: '{note}'");
        }
    }

    [Fact]
    public void CudaWithoutAGpuThrowsWithTheReason()
    {
        if (CudaTestSetup.Backend is not null)
        {
            Assert.Equal(Device.Cuda(0), DeviceSelector.Resolve("cuda"));
            Assert.Equal(Device.Cuda(0), DeviceSelector.Resolve("cuda:0"));
            return;
        }
        var e = Assert.Throws<InvalidOperationException>(() => DeviceSelector.Resolve("cuda"));
        Assert.Contains("not available", e.Message);
        Assert.Throws<InvalidOperationException>(() => BackendRegistry.For(Device.Cuda(0)));
    }

    [Theory]
    [InlineData("gpu")]
    [InlineData("cuda:x")]
    [InlineData("cuda:-1")]
    public void BadSpecsAreRejected(string spec) => Assert.Throws<ArgumentException>(() => DeviceSelector.Resolve(spec));
}
