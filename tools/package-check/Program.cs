// The package check's program (see check.sh): the README of the package (src/DoctorGlm.Engine/PACKAGE.md), run
// against the packed package on the small model the Train sample ships. Each step fails loudly; the last line says ok.
using DoctorGlm.Engine.Data;
using DoctorGlm.Engine.Evaluation;
using DoctorGlm.Engine.Generation;
using DoctorGlm.Engine.Models.ChatGlm;
using DoctorGlm.Engine.Tokenization;
using DoctorGlm.Engine.Training;

if (args.Length != 2) { Console.Error.WriteLine("usage: PackageConsumer MODEL_DIR TRAIN_JSONL"); return 2; }
string modelDir = args[0], trainFile = args[1];
string outDir = Path.Combine(Path.GetTempPath(), $"doctorglm-package-check-{Environment.ProcessId}");
try
{
    // The CUDA kernels travel inside the assembly (compiled at run time by NVRTC).
    var kernels = typeof(GlmModel).Assembly.GetManifestResourceNames().Where(n => n.StartsWith("kernels/")).ToArray();
    if (!kernels.Contains("kernels/common.cuh") || kernels.Length < 10) throw new Exception($"the package's assembly holds {kernels.Length} kernel sources");

    // Chat with a model.
    using var model = GlmModel.FromPretrained(modelDir);
    var tokenizer = ChatGlmTokenizer.FromPretrained(modelDir);
    var chat = new GlmChat(model, tokenizer);
    var (answer, history) = chat.Chat("高血压患者能吃党参吗？", options: GenerationOptions.Greedy with { MaxNewTokens = 24 });
    if (answer.Length == 0 || history.Count != 1) throw new Exception($"chat gave '{answer}' and {history.Count} turns");

    // Fine-tune with LoRA (a few steps).
    var c = model.Config;
    var builder = new ChatGlmSampleBuilder(s => tokenizer.Encode(s), c.GMaskTokenId, c.BosTokenId, c.EosTokenId, c.PadTokenId,
        maxSourceLength: 32, maxTargetLength: 48);
    var train = DatasetReader.Read(trainFile).Examples.Take(16).Select(builder.BuildTrain).ToList();
    var options = new TrainerOptions { Method = TrainingMethod.Lora, LoraRank = 8, MaxSteps = 3, BatchSize = 4 }.Validate();
    using (var trainer = new Trainer(model, options, train, eval: [], outputDir: outDir))
    {
        var result = trainer.Run();
        if (result.StepsDone != 3) throw new Exception($"training ran {result.StepsDone} steps, not 3");
        trainer.Export();
    }
    foreach (var f in new[] { "adapter_config.json", "adapter_model.safetensors" })
        if (!File.Exists(Path.Combine(outDir, f))) throw new Exception($"the export wrote no {f} to {outDir}");

    // The evaluation's word segmentation: jieba.NET's dictionaries must have reached the output (build/DoctorGlm.Engine.targets).
    model.Training = false;
    var after = chat.Chat("高血压患者能吃党参吗？", options: GenerationOptions.Greedy with { MaxNewTokens = 24 }).Response;
    var scores = new GenerationMetrics().Score(after, answer);
    var words = new JiebaWordSegmenter().Cut("高血压患者能吃党参吗");
    if (words.Count < 2) throw new Exception($"jieba cut the question into {words.Count} word(s)");
    Console.WriteLine($"package check: ok ({kernels.Length} kernel sources; answer '{answer}'; 3 LoRA steps exported; ROUGE-L against the first answer {scores.RougeL:F2}; jieba: {string.Join('/', words)})");
    return 0;
}
catch (Exception e)
{
    Console.Error.WriteLine($"package check: FAILED: {e}");
    return 1;
}
finally
{
    if (Directory.Exists(outDir)) Directory.Delete(outDir, recursive: true);
}
