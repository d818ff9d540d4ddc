using System.Globalization;
using DoctorGlm.Engine.IO;
using DoctorGlm.Engine.Models.ChatGlm;
using DoctorGlm.Engine.Tests.Harness;
using DoctorGlm.Engine.Tokenization;

namespace DoctorGlm.Engine.Tests.Models;

/// <summary>
/// A random tiny ChatGLM sized to the chatglm-like tokenizer fixture (its 3,000-piece vocabulary does not fit the
/// 200-row parity model), for chat, streaming and the Chat sample. Written as an HF-style folder on demand.
/// </summary>
internal static class ChatModelFixture
{
    public static string TokenizerPath => Path.Combine(Fixture.Dir("tokenizer"), "chatglm_like_bpe.model");

    public static ChatGlmTokenizer Tokenizer() => ChatGlmTokenizer.Load(TokenizerPath);

    public static GlmConfig Config(ChatGlmTokenizer tok) =>
        new GlmConfig(tok.VocabSize, HiddenSize: 32, NumLayers: 2, NumAttentionHeads: 2, InnerHiddenSize: 64,
            MaxSequenceLength: 512, BosTokenId: tok.SopId, EosTokenId: tok.EopId, MaskTokenId: tok.MaskId,
            GMaskTokenId: tok.GMaskId, PadTokenId: tok.PadId, TorchDType: "float32").Validated("ChatModelFixture");

    /// <summary>
    /// A model with N(0, 0.3) weights (random enough that sampling moves between many tokens); the same weights on
    /// every device (the generator is counter-based).
    /// </summary>
    public static GlmModel Model(ChatGlmTokenizer tok, ulong seed = 5, Device? device = null)
    {
        var m = GlmModel.CreateRandom(Config(tok), new RandomGenerator(seed), device, std: 0.3f);
        m.SetBaseTrainable(false);
        return m;
    }

    /// <summary>
    /// Writes config.json, model.safetensors and tokenizer.model into <paramref name="dir"/>.
    /// <paramref name="eosPiece"/> makes a frequent piece the config's eos so that answers of the random model end early.
    /// </summary>
    public static void WriteFolder(string dir, ulong seed = 5, string? eosPiece = null)
    {
        Directory.CreateDirectory(dir);
        var tok = Tokenizer();
        var c = Config(tok);
        if (eosPiece is not null) c = c with { EosTokenId = tok.TokenToId(eosPiece) };
        string I(int v) => v.ToString(CultureInfo.InvariantCulture);
        File.WriteAllText(Path.Combine(dir, "config.json"), $$"""
            {
              "architectures": ["ChatGLMModel"],
              "model_type": "chatglm",
              "vocab_size": {{I(c.VocabSize)}},
              "hidden_size": {{I(c.HiddenSize)}},
              "num_layers": {{I(c.NumLayers)}},
              "num_attention_heads": {{I(c.NumAttentionHeads)}},
              "inner_hidden_size": {{I(c.InnerHiddenSize)}},
              "max_sequence_length": {{I(c.MaxSequenceLength)}},
              "mask_token_id": {{I(c.MaskTokenId)}},
              "gmask_token_id": {{I(c.GMaskTokenId)}},
              "bos_token_id": {{I(c.BosTokenId)}},
              "eos_token_id": {{I(c.EosTokenId)}},
              "pad_token_id": {{I(c.PadTokenId)}},
              "torch_dtype": "float32"
            }
            """);
        using (var model = Model(tok, seed))
            SafeTensorsFile.Save(Path.Combine(dir, "model.safetensors"), model.BaseParameters());
        File.Copy(TokenizerPath, Path.Combine(dir, "tokenizer.model"), overwrite: true);
    }
}
