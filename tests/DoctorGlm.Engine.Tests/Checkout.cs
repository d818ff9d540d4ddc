namespace DoctorGlm.Engine.Tests;

/// <summary>
/// The checkout the tests run from: its root (the folder holding DoctorGlm.Engine.sln), found upward from the test
/// assembly, and the samples the tests' project references build there. A published test program (the GPU runner)
/// lives outside any checkout: the tests that need one skip there, saying why.
/// </summary>
internal static class Checkout
{
    /// <summary>The root, or null outside a checkout.</summary>
    public static string? FindRoot()
    {
        for (var d = new DirectoryInfo(AppContext.BaseDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "DoctorGlm.Engine.sln"))) return d.FullName;
        return null;
    }

    /// <summary>The root; outside a checkout the test is skipped, the message ending with <paramref name="why"/>.</summary>
    public static string Root(string why)
    {
        if (FindRoot() is { } root) return root;
        Assert.Skip($"not run from a checkout (no DoctorGlm.Engine.sln above {AppContext.BaseDirectory}): {why}");
        return "";
    }

    /// <summary>
    /// A sample's program (samples/<paramref name="sample"/>/bin/CONFIGURATION/net10.0/<paramref name="assembly"/>.dll),
    /// built by the tests' project reference in the tests' own configuration; fails when it was not built.
    /// </summary>
    public static string SampleDll(string sample, string assembly)
    {
        string root = Root($"the {sample} sample is not built here");
        string configuration = AppContext.BaseDirectory.Contains($"{Path.DirectorySeparatorChar}Release{Path.DirectorySeparatorChar}") ? "Release" : "Debug";
        string dll = Path.Combine(root, "samples", sample, "bin", configuration, "net10.0", assembly + ".dll");
        Assert.True(File.Exists(dll), $"{dll} was not built (the tests' project reference builds it)");
        return dll;
    }
}
