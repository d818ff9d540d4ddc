using DoctorGlm.Engine.Generation;
using DoctorGlm.Engine.Models.ChatGlm;
using DoctorGlm.Engine.Tests.Models;
using DoctorGlm.Samples.Chat;

namespace DoctorGlm.Engine.Tests.Samples;

/// <summary>The Chat sample end to end, in-process, on a tiny random model folder sized to the chatglm-like tokenizer.</summary>
public sealed class ChatAppTests : IDisposable
{
    private readonly string _dir = Path.Combine(Path.GetTempPath(), "doctorglm-chat-" + Guid.NewGuid().ToString("N"));

    public ChatAppTests() => ChatModelFixture.WriteFolder(_dir);

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private (int Code, string Output) Run(string input, params string[] args)
    {
        var output = new StringWriter();
        // Look for the default model only under this test's temp folder, not in a checkout where the Train sample ran.
        int code = ChatApp.Run(args, output, new StringReader(input), searchRoots: [_dir]);
        return (code, output.ToString());
    }

    [Fact]
    public void Prompt_mode_prints_the_same_answer_as_the_library()
    {
        var (code, text) = Run("", "--model", _dir, "--prompt", "头疼怎么办", "--seed", "3", "--max-length", "40", "--temperature", "1.2", "--top-p", "0.9");
        Assert.True(code == 0, text);
        var tok = ChatModelFixture.Tokenizer();
        using var model = ChatModelFixture.Model(tok);
        var (expected, _) = new GlmChat(model, tok).Chat("头疼怎么办", null,
            new GenerationOptions { Seed = 3, MaxLength = 40, Temperature = 1.2f, TopP = 0.9f }, TestContext.Current.CancellationToken);
        Assert.NotEmpty(expected);
        Assert.Contains("ChatGLM: " + expected + Environment.NewLine, text);
    }

    [Fact]
    public void Questions_file_answers_every_line_as_the_library_answers_it_alone()
    {
        string file = Path.Combine(_dir, "questions.txt");
        string[] questions = ["头疼怎么办", "高血压患者能吃党参吗？", "失眠"];
        File.WriteAllText(file, $"{questions[0]}\n\n  {questions[1]}  \n{questions[2]}\n");
        string[] common = ["--model", _dir, "--questions", file, "--greedy", "--max-length", "40", "--repetition-penalty", "5", "--batch", "2"];
        var (code, text) = Run("", common);
        Assert.True(code == 0, text);
        var tok = ChatModelFixture.Tokenizer();
        using var model = ChatModelFixture.Model(tok);
        var chat = new GlmChat(model, tok);
        var o = new GenerationOptions { DoSample = false, MaxLength = 40, RepetitionPenalty = 5 };
        var expected = questions.Select(q => chat.Chat(q, null, o, TestContext.Current.CancellationToken).Response).ToArray();
        var lines = text.Split('\n').Where(l => l.StartsWith('{')).ToArray();
        Assert.Equal(questions.Length, lines.Length);
        for (int i = 0; i < questions.Length; i++)
        {
            using var doc = System.Text.Json.JsonDocument.Parse(lines[i]);
            Assert.Equal(questions[i], doc.RootElement.GetProperty("question").GetString());
            Assert.Equal(expected[i], doc.RootElement.GetProperty("answer").GetString());
        }
        // --answers writes the same lines to a file; bad combinations are refused before loading anything.
        string outFile = Path.Combine(_dir, "answers.jsonl");
        var (code2, text2) = Run("", [.. common, "--answers", outFile]);
        Assert.True(code2 == 0, text2);
        Assert.Equal(lines, File.ReadAllLines(outFile));
        Assert.Equal(2, Run("", "--model", _dir, "--answers", outFile).Code);
        Assert.Equal(2, Run("", "--model", _dir, "--questions", file, "--prompt", "x").Code);
        Assert.Equal(2, Run("", "--model", _dir, "--questions", Path.Combine(_dir, "missing.txt")).Code);
        File.WriteAllText(file, "头疼\n\n" + string.Concat(Enumerable.Repeat("头疼怎么办", 20)) + "\n");
        var (code3, text3) = Run("", "--model", _dir, "--questions", file, "--max-length", "30");
        Assert.Equal(2, code3);
        Assert.Contains($"{file}:3: the question is", text3);
    }

    [Fact]
    public void Greedy_prompt_mode_is_deterministic()
    {
        var a = Run("", "--model", _dir, "--tokenizer", Path.Combine(_dir, "tokenizer.model"), "--prompt", "你好", "--greedy", "--max-length", "30", "--repetition-penalty", "5");
        var b = Run("", "--model", _dir, "--prompt", "你好", "--greedy", "--max-length", "30", "--repetition-penalty", "5", "--device", "cpu");
        Assert.Equal(0, a.Code);
        Assert.Equal(a.Output, b.Output);
    }

    [Fact]
    public void Interactive_mode_streams_and_handles_history_clear_and_exit()
    {
        // The random model rarely ends an answer: a frequent piece as eos keeps the second turn's prompt short.
        string dir = Path.Combine(_dir, "short");
        ChatModelFixture.WriteFolder(dir, eosPiece: "理解");
        var (code, text) = Run("你好\n/history\n还有呢\n/history\n/clear\n/history\n/bogus\n/exit\n这句不会被回答\n",
            "--model", dir, "--seed", "1", "--max-length", "300");
        Assert.True(code == 0, text);
        Assert.Contains("[Round 0] 问：你好", text);
        Assert.Contains("[Round 1] 问：还有呢", text);
        Assert.Contains("(conversation cleared)", text);
        Assert.Contains("(no history)", text);
        Assert.Contains("unknown command /bogus", text);
        Assert.DoesNotContain("这句不会被回答", text);
        Assert.Equal(3, text.Split("用户: ChatGLM: ").Length); // two answers (input is not echoed, so each follows the prompt)
    }

    [Fact]
    public void A_lora_adapter_loads_from_its_folder_and_merging_gives_the_same_greedy_answer()
    {
        // An adapter with non-zero B, so it changes the model; saved in PEFT format next to the model.
        var tok = ChatModelFixture.Tokenizer();
        string adapterDir = Path.Combine(_dir, "adapter");
        using (var model = ChatModelFixture.Model(tok))
        {
            model.AttachLora(new DoctorGlm.Engine.Models.ChatGlm.LoraSettings(4, 8f), new RandomGenerator(9));
            foreach (var (_, b) in model.Lora!.Layers)
            {
                var noise = new RandomGenerator(10).Normal(b.Shape, 0.5f);
                b.Backend.Copy(noise, b);
                noise.Dispose();
            }
            model.SaveLoraAdapter(adapterDir, baseModelNameOrPath: _dir);
            // The Train sample's default output: an adapter in out/train naming its base folder.
            model.SaveLoraAdapter(Path.Combine(_dir, "out", "train"), baseModelNameOrPath: _dir);
        }
        string[] common = ["--model", _dir, "--prompt", "头疼怎么办", "--greedy", "--max-length", "24", "--repetition-penalty", "5"];
        var plain = Run("", common);
        var withLora = Run("", [.. common, "--adapter", adapterDir]);
        var merged = Run("", [.. common, "--adapter", adapterDir, "--merge"]);
        Assert.True(withLora.Code == 0, withLora.Output);
        Assert.True(merged.Code == 0, merged.Output);
        Assert.Contains("LoRA adapter", withLora.Output);
        string Answer(string o) => o[o.LastIndexOf("ChatGLM: ", StringComparison.Ordinal)..];
        Assert.NotEqual(Answer(plain.Output), Answer(withLora.Output));
        Assert.Equal(Answer(withLora.Output), Answer(merged.Output));
        var byDefault = Run("", common[2..]); // no --model: finds out/train and its base model
        Assert.True(byDefault.Code == 0, byDefault.Output);
        Assert.Equal(Answer(withLora.Output), Answer(byDefault.Output));
        // fp32 beside the INT8 linears, as the library's model below holds them (--dtype auto would give bf16).
        var int8 = Run("", [.. common, "--adapter", adapterDir, "--quantize", "8", "--dtype", "fp32"]);
        Assert.True(int8.Code == 0, int8.Output);
        Assert.Contains("of F32 weights, block linears in INT8", int8.Output);
        Assert.Contains("merged while loading", int8.Output);
        Assert.Contains("INT8", int8.Output);
        // Merged and quantized while loading: the answer of the library's attach, merge, quantize.
        using (var model = ChatModelFixture.Model(tok))
        {
            model.LoadLoraAdapter(adapterDir);
            model.MergeLora();
            model.Quantize(8);
            var (expected, _) = new GlmChat(model, tok).Chat("头疼怎么办", null,
                new GenerationOptions { DoSample = false, MaxLength = 24, RepetitionPenalty = 5f }, TestContext.Current.CancellationToken);
            Assert.Equal("ChatGLM: " + expected + Environment.NewLine, Answer(int8.Output));
        }
        // --save writes the merged INT4 model with its tokenizer and exits; loaded back, it answers the same.
        string saved = Path.Combine(_dir, "saved-int4");
        var save = Run("", [.. common[..2], "--adapter", adapterDir, "--quantize", "4", "--save", saved]);
        Assert.True(save.Code == 0, save.Output);
        Assert.Contains("INT4", save.Output);
        Assert.DoesNotContain("ChatGLM: ", save.Output);
        Assert.True(File.Exists(Path.Combine(saved, "tokenizer.model")));
        var fromSaved = Run("", ["--model", saved, .. common[2..]]);
        var int4 = Run("", [.. common, "--adapter", adapterDir, "--quantize", "4"]);
        Assert.True(fromSaved.Code == 0, fromSaved.Output);
        // --dtype auto: bf16 beside the INT4 linears, whether quantized while loading or read pre-quantized.
        Assert.Contains("of BF16 weights, block linears in INT4", int4.Output);
        Assert.Contains("of BF16 weights, block linears in INT4", fromSaved.Output);
        Assert.Equal(Answer(int4.Output), Answer(fromSaved.Output));
        Assert.Equal(1, Run("", [.. common, "--quantize", "5"]).Code);
        var bad = Run("", [.. common, "--merge"]);
        Assert.Equal(1, bad.Code);
        Assert.Contains("--merge needs --adapter", bad.Output);
    }

    [Theory]
    [InlineData(null)]
    [InlineData("4")]
    public void A_p_tuning_prefix_loads_from_its_folder_on_a_full_or_quantized_model(string? bits)
    {
        var tok = ChatModelFixture.Tokenizer();
        string prefixDir = Path.Combine(_dir, "ptuning", "checkpoint-100"); // a folder, as THUDM's P-Tuning run writes
        Directory.CreateDirectory(prefixDir);
        using (var model = ChatModelFixture.Model(tok))
        {
            model.AttachPrefixEncoder(6, projection: false, new RandomGenerator(4));
            model.SavePrefixEncoder(prefixDir);
        }
        string[] args = ["--model", _dir, "--prompt", "头疼怎么办", "--greedy", "--max-length", "30", "--repetition-penalty", "5", "--adapter", prefixDir];
        var (code, text) = Run("", bits is null ? args : [.. args, "--quantize", bits]);
        Assert.True(code == 0, text);
        Assert.Contains("P-Tuning v2 prefix", text);
        // With --quantize, --dtype auto keeps the float weights beside the INT4 linears in bf16: the library's load
        // with those options.
        using var reference = bits is null ? ChatModelFixture.Model(tok)
            : GlmModel.FromPretrained(_dir, new GlmLoadOptions { WeightDType = DType.BF16, QuantizeBits = int.Parse(bits, System.Globalization.CultureInfo.InvariantCulture) });
        var options = new GenerationOptions { DoSample = false, MaxLength = 30, RepetitionPenalty = 5f };
        var (withoutPrefix, _) = new GlmChat(reference, tok).Chat("头疼怎么办", null, options, TestContext.Current.CancellationToken);
        reference.LoadPrefixEncoder(prefixDir);
        var (expected, _) = new GlmChat(reference, tok).Chat("头疼怎么办", null, options, TestContext.Current.CancellationToken);
        Assert.NotEqual(withoutPrefix, expected);
        Assert.Contains("ChatGLM: " + expected + Environment.NewLine, text);
        var save = Run("", "--model", _dir, "--adapter", prefixDir, "--save", Path.Combine(_dir, "never"));
        Assert.Equal(1, save.Code);
        Assert.Contains("P-Tuning prefix is not part of it", save.Output);
        Assert.False(Directory.Exists(Path.Combine(_dir, "never")));
    }

    [Fact]
    public void Bf16_weights_halve_the_memory_and_answer_like_a_model_holding_the_rounded_weights()
    {
        var (code, text) = Run("", "--model", _dir, "--prompt", "头疼怎么办", "--greedy", "--max-length", "40", "--dtype", "bf16");
        Assert.True(code == 0, text);
        Assert.Contains("of BF16 weights", text);
        var tok = ChatModelFixture.Tokenizer();
        using var model = ChatModelFixture.Model(tok);
        model.ConvertWeights(DType.BF16);
        model.ConvertWeights(DType.F32);
        var (expected, _) = new GlmChat(model, tok).Chat("头疼怎么办", null,
            new GenerationOptions { DoSample = false, MaxLength = 40 }, TestContext.Current.CancellationToken);
        Assert.Contains("ChatGLM: " + expected + Environment.NewLine, text);
        var fp32 = Run("", "--model", _dir, "--prompt", "x", "--greedy", "--max-length", "20");
        string MiB(string t) => t[(t.IndexOf(" parameters (", StringComparison.Ordinal) + 13)..t.IndexOf(" MiB", StringComparison.Ordinal)];
        Assert.Equal(double.Parse(MiB(fp32.Output)) / 2, double.Parse(MiB(text)), 1);

        var bad = Run("", "--model", _dir, "--prompt", "x", "--dtype", "int8");
        Assert.Equal(2, bad.Code);
        Assert.Contains("--dtype int8", bad.Output);
    }

    [Fact]
    public void Without_a_model_it_explains_how_to_make_one_and_exits_1()
    {
        var (code, text) = Run("");
        Assert.Equal(1, code);
        Assert.Contains("out/train", text);
        Assert.Contains("--model", text);
    }

    [Fact]
    public void Bad_arguments_and_missing_files_fail_with_a_message()
    {
        Assert.NotEqual(0, Run("", "--model", _dir, "--top-k", "many").Code);
        var (code, text) = Run("", "--model", _dir, "--temperature", "0", "--prompt", "x");
        Assert.Equal(2, code);
        Assert.Contains("Temperature", text);
        var missing = Run("", "--model", Path.Combine(_dir, "nope"), "--prompt", "x");
        Assert.Equal(1, missing.Code);
        Assert.Contains("does not exist", missing.Output);
    }
}
