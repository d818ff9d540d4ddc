using DoctorGlm.Engine.Models.ChatGlm;

namespace DoctorGlm.Engine.Tests.Models;

public sealed class GlmConfigTests
{
    private const string Slim = """
        { "architectures": ["ChatGLMModel"], "bos_token_id": 130004, "eos_token_id": 130005, "mask_token_id": 130000,
          "gmask_token_id": 130001, "pad_token_id": 3, "hidden_size": 4096, "inner_hidden_size": 16384,
          "layernorm_epsilon": 1e-05, "max_sequence_length": 2048, "model_type": "chatglm", "num_attention_heads": 32,
          "num_layers": 28, "position_encoding_2d": true, "torch_dtype": "float16", "transformers_version": "4.23.1",
          "use_cache": true, "vocab_size": 130528 }
        """;

    // DoctorGLM's ckpt/lora/config.json (old vocabulary): no mask/gmask ids, extra fields.
    private const string OldLora = """
        { "bos_token_id": 150004, "eos_token_id": 20002, "hidden_size": 4096, "initializer_range": 0.02,
          "initializer_weight": false, "inner_hidden_size": 16384, "layernorm_epsilon": 1e-05,
          "max_sequence_length": 2048, "model_type": "chatglm", "num_attention_heads": 32, "num_layers": 28,
          "pad_token_id": 20003, "position_encoding_2d": true, "precision": 16, "return_dict": false,
          "task_specific_params": { "learning_rate": 2e-05 }, "torch_dtype": "float16", "use_cache": true,
          "vocab_size": 150528 }
        """;

    [Fact]
    public void Parses_the_slim_config_to_the_6B_preset()
    {
        var c = GlmConfig.Parse(Slim, "config.json");
        Assert.Equal(GlmConfig.ChatGlm6B, c);
        Assert.Equal(128, c.HeadDim);
        Assert.Equal(7.483314773547883, c.Alpha, 6);
        Assert.Equal(0, c.NumImageTokens);
        Assert.True(c.TieWordEmbeddings);
        Assert.Null(c.PreSeqLen);
    }

    [Fact]
    public void Parses_the_old_150528_config_inferring_mask_ids_and_image_tokens()
    {
        var c = GlmConfig.Parse(OldLora, "lora/config.json");
        Assert.Equal(150528, c.VocabSize);
        Assert.Equal(150000, c.MaskTokenId);
        Assert.Equal(150001, c.GMaskTokenId);
        Assert.Equal(20002, c.EosTokenId);
        Assert.Equal(20003, c.PadTokenId);
        Assert.Equal(20000, c.NumImageTokens);
    }

    [Fact]
    public void Reads_the_fixture_config_file_and_the_ptuning_fields()
    {
        var c = ModelFixture.Config;
        Assert.Equal(GlmConfig.Tiny(200, 64, 2, 4, 256) with { MaxSequenceLength = 512, TorchDType = "float32", MaskTokenId = 190, GMaskTokenId = 191, BosTokenId = 192, EosTokenId = 193 }, c);
        var p = GlmConfig.Parse(Slim.Replace("\"vocab_size\"", "\"pre_seq_len\": 128, \"prefix_projection\": false, \"vocab_size\""), "ptuning/config.json");
        Assert.Equal(128, p.PreSeqLen);
    }

    [Theory]
    [InlineData("hidden_size")]
    [InlineData("num_layers")]
    [InlineData("vocab_size")]
    [InlineData("bos_token_id")]
    public void A_missing_required_field_names_the_file_and_the_field(string field)
    {
        var json = System.Text.RegularExpressions.Regex.Replace(Slim, $"\"{field}\":\\s*[0-9]+,?", "");
        var e = Assert.Throws<InvalidDataException>(() => GlmConfig.Parse(json, "some/dir/config.json"));
        Assert.Contains("some/dir/config.json", e.Message);
        Assert.Contains($"'{field}'", e.Message);
    }

    [Fact]
    public void Mask_ids_cannot_be_inferred_for_other_vocabularies_and_bad_values_are_named()
    {
        var json = """{ "vocab_size": 300, "hidden_size": 64, "num_layers": 2, "num_attention_heads": 4, "bos_token_id": 5, "eos_token_id": 6 }""";
        var e = Assert.Throws<InvalidDataException>(() => GlmConfig.Parse(json, "tiny.json"));
        Assert.Contains("'mask_token_id'", e.Message);
        e = Assert.Throws<InvalidDataException>(() => GlmConfig.Parse(Slim.Replace("\"num_layers\": 28", "\"num_layers\": \"28\""), "c.json"));
        Assert.Contains("'num_layers'", e.Message);
        e = Assert.Throws<InvalidDataException>(() => GlmConfig.Parse(Slim.Replace("\"num_attention_heads\": 32", "\"num_attention_heads\": 30"), "c.json"));
        Assert.Contains("num_attention_heads", e.Message);
        e = Assert.Throws<InvalidDataException>(() => GlmConfig.Parse("{ nope", "broken.json"));
        Assert.Contains("broken.json", e.Message);
        e = Assert.Throws<InvalidDataException>(() => GlmConfig.FromJson("/nonexistent/config.json"));
        Assert.Contains("/nonexistent/config.json", e.Message);
    }

    [Fact]
    public void The_6B_shapes_and_parameter_count_match_the_spec_without_allocating()
    {
        var shapes = GlmModel.ParameterShapes(GlmConfig.ChatGlm6B).ToList();
        Assert.Equal(28 * 12 + 3, shapes.Count); // 368 stored keys − 28 inv_freq − lm_head
        Assert.Equal(6_173_286_400L, GlmConfig.ChatGlm6B.ParameterCount);
        Assert.Equal(6_255_206_400L, GlmConfig.ChatGlm6BOld.ParameterCount);
        var d = shapes.ToDictionary(s => s.Name, s => s.Shape);
        Assert.Equal(new Shape(130528, 4096), d["transformer.word_embeddings.weight"]);
        Assert.Equal(new Shape(12288, 4096), d["transformer.layers.27.attention.query_key_value.weight"]);
        Assert.Equal(new Shape(12288), d["transformer.layers.0.attention.query_key_value.bias"]);
        Assert.Equal(new Shape(16384, 4096), d["transformer.layers.5.mlp.dense_h_to_4h.weight"]);
        Assert.Equal(new Shape(4096, 16384), d["transformer.layers.5.mlp.dense_4h_to_h.weight"]);
        Assert.Equal(new Shape(4096), d["transformer.final_layernorm.bias"]);
        // One layer: 201,379,840 parameters (spec §2).
        Assert.Equal(201_379_840L, shapes.Where(s => s.Name.StartsWith("transformer.layers.3.")).Sum(s => s.Shape.NumElements));
        // P-Tuning v2 with N = 128: 29.36M (spec §8).
        Assert.Equal(29_360_128L, GlmPrefixEncoder.ParameterShapes(GlmConfig.ChatGlm6B, 128, false).Sum(s => s.Shape.NumElements));
    }
}
