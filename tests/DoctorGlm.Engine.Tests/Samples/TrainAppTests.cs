using System.Diagnostics;

namespace DoctorGlm.Engine.Tests.Samples;

/// <summary>
/// The Train sample as a process (the README's main command, shortened): a four-step LoRA job on the shipped base and
/// dialogues writes a loadable adapter, and a bad option fails with a message instead of a stack trace.
/// </summary>
public sealed class TrainAppTests : IDisposable
{
    private readonly string _out = Path.Combine(Path.GetTempPath(), "doctorglm-train-" + Guid.NewGuid().ToString("N"));

    public void Dispose() { if (Directory.Exists(_out)) Directory.Delete(_out, recursive: true); }

    private static (int Code, string Output) RunTrain(params string[] args)
    {
        string dll = Checkout.SampleDll("Train", "DoctorGlm.Train"), root = Checkout.Root("the Train sample is not built here");
        var psi = new ProcessStartInfo(Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? "dotnet")
        {
            WorkingDirectory = root,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
        };
        psi.ArgumentList.Add("exec");
        psi.ArgumentList.Add(dll);
        foreach (var a in args) psi.ArgumentList.Add(a);
        psi.Environment["DOCTORGLM_TEST_CUDA"] = "0";
        using var p = Process.Start(psi)!;
        var stderr = p.StandardError.ReadToEndAsync(TestContext.Current.CancellationToken);
        string stdout = p.StandardOutput.ReadToEnd();
        Assert.True(p.WaitForExit(TimeSpan.FromMinutes(5)), "the Train sample did not finish in 5 minutes");
        return (p.ExitCode, stdout + stderr.Result);
    }

    [Fact]
    public void A_four_step_lora_job_writes_an_adapter_and_its_records()
    {
        var (code, text) = RunTrain("--max-steps", "4", "--warmup-steps", "0", "--lr", "1e-3", "--max-train-samples", "16", "--max-eval-samples", "2", "--eval-generate", "0",
            "--batch-size", "4", "--save-steps", "0", "--output", _out);
        Assert.True(code == 0, text);
        foreach (var f in new[] { "adapter_config.json", "adapter_model.safetensors", "trainer_options.json", "loss.csv" })
            Assert.True(File.Exists(Path.Combine(_out, f)), $"{f} missing from {_out}; output:\n{text}");
        Assert.Contains("eval loss after", text);
    }

    [Fact]
    public void A_p_tuning_job_over_an_int4_base_writes_its_prefix()
    {
        var (code, text) = RunTrain("--method", "ptuning", "--quantize", "4", "--pre-seq-len", "4", "--max-steps", "3", "--warmup-steps", "0",
            "--max-train-samples", "8", "--max-eval-samples", "2", "--eval-generate", "1", "--batch-size", "4", "--save-steps", "0", "--output", _out);
        Assert.True(code == 0, text);
        Assert.Contains("block linears in INT4", System.Text.RegularExpressions.Regex.Replace(text, @"\s+", " ")); // Spectre wraps at 80 columns
        Assert.True(File.Exists(Path.Combine(_out, "prefix_encoder.safetensors")), text);
        Assert.Contains("\"quantization_bit\": 4", File.ReadAllText(Path.Combine(_out, "trainer_options.json")));
    }

    [Theory]
    [InlineData("--quantize", "5", "--quantize 5")]
    [InlineData("--attention", "fast", "--attention fast")]
    [InlineData("--dtype", "int3", "int3")]
    [InlineData("--method", "dpo", "dpo")]
    public void A_bad_option_value_fails_with_a_message(string option, string value, string expected)
    {
        var (code, text) = RunTrain(option, value, "--max-steps", "1", "--output", _out);
        Assert.Equal(1, code);
        Assert.Contains("error:", text);
        Assert.Contains(expected, text);
        Assert.DoesNotContain("   at ", text); // no stack trace
    }
}
