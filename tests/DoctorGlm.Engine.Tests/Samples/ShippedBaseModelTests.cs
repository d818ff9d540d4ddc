using System.Globalization;
using System.Text.Json;
using DoctorGlm.Engine.Data;
using DoctorGlm.Engine.IO;
using DoctorGlm.Engine.Models.ChatGlm;
using DoctorGlm.Engine.Tokenization;
using DoctorGlm.Engine.Training;

namespace DoctorGlm.Engine.Tests.Samples;

/// <summary>
/// The pretrained base model that ships in samples/Train/base (the Train sample's default job fine-tunes it): it loads,
/// has the size the README promises, and its committed training record (pretraining-eval.csv, pretraining-options.json)
/// describes these very weights: recomputing the held-out loss gives the number the record ends with.
/// </summary>
public sealed class ShippedBaseModelTests
{
    // The checkout's samples/Train (the files are not copied next to the tests).
    private static string SampleDir() => Path.Combine(Checkout.Root("the shipped base model is not here"), "samples", "Train");

    private static string BaseDir => Path.Combine(SampleDir(), "base");

    [Fact]
    public void Is_a_few_million_parameter_chatglm_with_its_tokenizer()
    {
        var config = GlmConfig.FromJson(Path.Combine(BaseDir, "config.json"));
        Assert.InRange(config.ParameterCount, 2_000_000, 4_000_000);
        Assert.True(config.PositionEncoding2D);
        Assert.Equal(4 * config.HiddenSize, config.InnerHiddenSize);
        var tok = ChatGlmTokenizer.Load(Path.Combine(BaseDir, "tokenizer.model"));
        Assert.Equal(config.VocabSize, tok.VocabSize);
        Assert.Equal(tok.GMaskId, config.GMaskTokenId);
        Assert.Equal(tok.SopId, config.BosTokenId);
        Assert.Equal(tok.EopId, config.EosTokenId);
        // Stored as fp32 (the README says so, and LoRA on it then trains against exact weights).
        using var file = SafeTensorsFile.Open(Path.Combine(BaseDir, "model.safetensors"));
        Assert.All(file.Entries, e => Assert.Equal("F32", e.DTypeName));
    }

    [Fact]
    public void Is_past_the_unigram_plateau_on_held_out_dialogues_and_matches_its_training_record()
    {
        var record = File.ReadAllLines(Path.Combine(BaseDir, "pretraining-eval.csv"))
            .Skip(1).Select(l => l.Split(',')).Select(f => (Step: int.Parse(f[0], CultureInfo.InvariantCulture), Loss: double.Parse(f[1], CultureInfo.InvariantCulture))).ToList();
        using var json = JsonDocument.Parse(File.ReadAllText(Path.Combine(BaseDir, "pretraining-options.json")));
        var options = json.RootElement;
        var config = GlmConfig.FromJson(Path.Combine(BaseDir, "config.json"));
        // The record is that of a from-scratch run of this very shape (not of an earlier, differently sized base).
        Assert.Equal("full", options.GetProperty("method").GetString());
        Assert.Equal(config.ParameterCount, options.GetProperty("trainable_parameters").GetInt64());
        Assert.Equal(0, record[0].Step);
        Assert.Equal(options.GetProperty("total_steps").GetInt32(), record[^1].Step);
        Assert.True(record[^1].Loss < record[0].Loss, $"recorded held-out loss {record[0].Loss} → {record[^1].Loss}");

        // Recomputing the recorded loss on all 100 held-out dialogues takes ~30 s with the Debug engine the tests use;
        // the first 8 (one evaluation batch) cost a few seconds and still tell a trained model (≈3.5) from one stuck on the
        // unigram plateau (≈6.9, where too short a warm-up leaves wider models) or a random init (≈8.6).
        var tok = ChatGlmTokenizer.Load(Path.Combine(BaseDir, "tokenizer.model"));
        using var model = GlmModel.Load(config, CheckpointReader.Open(BaseDir));
        var builder = new ChatGlmSampleBuilder(s => tok.Encode(s), config.GMaskTokenId, config.BosTokenId, config.EosTokenId, config.PadTokenId,
            options.GetProperty("max_source_length").GetInt32(), options.GetProperty("max_target_length").GetInt32());
        var eval = DatasetReader.Read(Path.Combine(SampleDir(), "data", "eval.jsonl")).Examples.Take(8).Select(builder.BuildTrain).ToList();
        using var trainer = new Trainer(model, new TrainerOptions { Method = TrainingMethod.Full }, eval, eval,
            Path.Combine(Path.GetTempPath(), "doctorglm-shipped-base-" + Guid.NewGuid().ToString("N")));
        double loss = trainer.Evaluate();
        Assert.True(loss < 4.5, $"held-out loss of the shipped base on 8 dialogues: {loss:F4}");
    }
}
