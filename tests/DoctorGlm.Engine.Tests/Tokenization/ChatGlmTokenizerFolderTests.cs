using DoctorGlm.Engine.Models.ChatGlm;
using DoctorGlm.Engine.Tokenization;
using static DoctorGlm.Engine.Tests.Tokenization.SentencePieceParityTests;

namespace DoctorGlm.Engine.Tests.Tokenization;

/// <summary>
/// <see cref="ChatGlmTokenizer.FromPretrained"/>: which file of a model folder it loads, and the image-token offset it
/// reads there (the one <see cref="GlmConfig.FromJson"/> infers for the same folder, so ids and embedding rows agree).
/// </summary>
public sealed class ChatGlmTokenizerFolderTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("doctorglm-tokenizer-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private void Put(string name, string model = "chatglm_like_unigram") =>
        File.Copy(Path.Combine(Dir, model + ".model"), Path.Combine(_dir, name), overwrite: true);

    private void Config(int vocab, int? imageTokens = null) => File.WriteAllText(Path.Combine(_dir, "config.json"),
        $$"""{"vocab_size": {{vocab}}, "hidden_size": 64, "num_layers": 2, "num_attention_heads": 4, "bos_token_id": {{vocab - 524}}, "eos_token_id": {{vocab - 523}}{{(imageTokens is int n ? $", \"num_image_tokens\": {n}" : "")}}}""");

    [Theory]
    [InlineData(150528, null, 20000)] // the old icetk vocabulary, whose config.json does not say it (DoctorGLM's base)
    [InlineData(130528, null, 0)]     // the slim one
    [InlineData(130528, 7, 7)]        // stated
    public void The_image_token_offset_is_the_one_the_model_config_infers(int vocab, int? stated, int expected)
    {
        Put("ice_text.model");
        Config(vocab, stated);
        var tok = ChatGlmTokenizer.FromPretrained(_dir);
        Assert.Equal(expected, tok.NumImageTokens);
        Assert.Equal(GlmConfig.FromJson(Path.Combine(_dir, "config.json")).NumImageTokens, tok.NumImageTokens);
        Assert.Equal(new ChatGlmTokenizer(Load("chatglm_like_unigram"), expected).Encode("头痛发热怎么办？\n"), tok.Encode("头痛发热怎么办？\n"));
    }

    [Fact]
    public void The_tokenizer_config_and_the_caller_take_precedence()
    {
        Put("ice_text.model");
        Config(150528);
        File.WriteAllText(Path.Combine(_dir, "tokenizer_config.json"), """{"tokenizer_class": "ChatGLMTokenizer", "num_image_tokens": 0}""");
        Assert.Equal(0, ChatGlmTokenizer.FromPretrained(_dir).NumImageTokens);
        Assert.Equal(20000, ChatGlmTokenizer.FromPretrained(_dir, numImageTokens: 20000).NumImageTokens);
    }

    [Fact]
    public void Hugging_Faces_file_comes_before_ours_and_a_folder_without_either_is_named()
    {
        var missing = Assert.Throws<FileNotFoundException>(() => ChatGlmTokenizer.FromPretrained(_dir));
        Assert.Contains(_dir, missing.Message);
        Assert.Contains("ice_text.model or tokenizer.model", missing.Message);
        Assert.Null(ChatGlmTokenizer.FindModelFile(_dir));

        Put("tokenizer.model", "chatglm_like_bpe");
        Assert.Equal(Path.Combine(_dir, "tokenizer.model"), ChatGlmTokenizer.FindModelFile(_dir));
        Assert.Equal(0, ChatGlmTokenizer.FromPretrained(_dir).NumImageTokens); // no config at all: the slim layout
        Put("ice_text.model", "chatglm_like_unigram");
        Assert.Equal(Path.Combine(_dir, "ice_text.model"), ChatGlmTokenizer.FindModelFile(_dir));
        Assert.Equal(Load("chatglm_like_unigram").Count, ChatGlmTokenizer.FromPretrained(_dir).Model.Count);
    }

    [Fact]
    public void A_malformed_tokenizer_config_is_named()
    {
        Put("ice_text.model");
        string path = Path.Combine(_dir, "tokenizer_config.json");
        File.WriteAllText(path, """{"num_image_tokens": "many"}""");
        var e = Assert.Throws<InvalidDataException>(() => ChatGlmTokenizer.FromPretrained(_dir));
        Assert.Contains(path, e.Message);
        Assert.Contains("num_image_tokens", e.Message);
        File.WriteAllText(path, "{ not json");
        Assert.Contains(path, Assert.Throws<InvalidDataException>(() => ChatGlmTokenizer.FromPretrained(_dir)).Message);
    }
}
