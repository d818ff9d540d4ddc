using System.Text.RegularExpressions;
using System.Xml.Linq;

namespace DoctorGlm.Engine.Tests.Evaluation;

/// <summary>
/// The package's build/DoctorGlm.Engine.targets copies jieba.NET's dictionaries from that package's folder, whose name
/// holds its version: it must name the version the engine depends on, or a project using the package would build
/// without them (and <c>JiebaWordSegmenter</c> throw at run time). tools/package-check/check.sh runs a real consumer.
/// </summary>
public sealed class PackageTargetsTests
{
    [Fact]
    public void The_targets_copy_the_dictionaries_of_the_jieba_version_the_package_depends_on()
    {
        string src = Path.Combine(Checkout.Root("the project files are not here"), "src", "DoctorGlm.Engine");
        var project = XDocument.Load(Path.Combine(src, "DoctorGlm.Engine.csproj"));
        string? version = project.Descendants("JiebaNetVersion").SingleOrDefault()?.Value;
        Assert.False(string.IsNullOrEmpty(version), "DoctorGlm.Engine.csproj sets no JiebaNetVersion");
        var reference = project.Descendants("PackageReference").Single(e => (string?)e.Attribute("Include") == "jieba.NET");
        Assert.Equal("$(JiebaNetVersion)", (string?)reference.Attribute("Version"));

        string targets = File.ReadAllText(Path.Combine(src, "build", "DoctorGlm.Engine.targets"));
        var named = Regex.Matches(targets, @"jieba\.net/([^/]+)/Resources").Select(m => m.Groups[1].Value).Distinct().ToArray();
        Assert.Equal([version!], named);
        foreach (var file in new[] { "dict.txt", "prob_trans.json", "prob_emit.json" })
            Assert.Contains(file, targets);
    }
}
