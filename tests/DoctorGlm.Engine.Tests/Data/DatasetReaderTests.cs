using System.Text;
using DoctorGlm.Engine.Data;

namespace DoctorGlm.Engine.Tests.Data;

/// <summary>Readers for Alpaca, P-tuning and the CMD CSV; issue reporting with file:line; the bad-fraction threshold.</summary>
public sealed class DatasetReaderTests : IDisposable
{
    /// <summary>The project's shared data folder sits beside the checkout (../shared), on developers' machines and in CI.</summary>
    private static readonly string CmdDir = FindSharedData();

    private static string FindSharedData() =>
        Path.Combine(Checkout.FindRoot() is { } root ? Path.Combine(root, "..") : "..", "shared", "data", "cmd-internal-medicine");
    private readonly string _dir = Directory.CreateTempSubdirectory("dglm-data-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Write(string name, string text, Encoding? enc = null)
    {
        var path = Path.Combine(_dir, name);
        File.WriteAllText(path, text, enc ?? new UTF8Encoding(false));
        return path;
    }

    [Fact]
    public void CmdCsv_RealCorpus_Utf8AndGb18030_ReadIdentically()
    {
        var utf8Path = Path.Combine(CmdDir, "internal-medicine-qa.csv");
        var gbPath = Path.Combine(CmdDir, "internal-medicine-qa.gb18030.csv");
        Assert.SkipUnless(File.Exists(utf8Path) && File.Exists(gbPath), "CMD corpus not present");
        var utf8 = DatasetReader.Read(utf8Path);
        var gb = DatasetReader.Read(gbPath);
        Assert.Equal(DatasetFormat.CmdCsv, utf8.Format);
        Assert.Equal("utf-8", utf8.EncodingName);
        Assert.Equal("gb18030", gb.EncodingName);
        // 7644 data rows (Python's csv module agrees); none malformed.
        Assert.Equal(7644, utf8.Examples.Count);
        Assert.Empty(utf8.Issues);
        Assert.Equal(utf8.Examples.Select(e => (e.Prompt, e.Response)), gb.Examples.Select(e => (e.Prompt, e.Response)));
        var first = utf8.Examples[0];
        Assert.Equal("我有高血压这两天女婿来的时候给我拿了些党参泡水喝，您好高血压可以吃党参吗？", first.Prompt);
        Assert.StartsWith("高血压病人可以口服党参的。", first.Response);
        Assert.Equal($"{utf8Path}:2", first.Source);
        // Rows whose ask is the placeholder "无" fall back to the title.
        Assert.Contains(utf8.Examples, e => e.Prompt == "小孩癫痫有什么特征");
        Assert.DoesNotContain(utf8.Examples, e => e.Prompt == "无");
        // Multi-line quoted answers are kept whole, so later records start on later lines than their index suggests.
        Assert.Contains(utf8.Examples, e => e.Response.Contains('\n'));
    }

    [Fact]
    public void CmdCsv_QuotingEdgeCases_LineNumbers_Issues()
    {
        var csv = "\uFEFFdepartment,title,ask,answer\r\n" +
                  "内科,标题一,\"问,带逗号\",\"答\"\"引号\"\"\"\r\n" +   // line 2: comma and doubled quotes inside quotes
                  "内科,标题二,\"问\n跨行\",答二\r\n" +                  // line 3-4: newline inside quotes
                  "\r\n" +                                                // line 5: blank, not a record
                  "内科,标题三,只有三列\r\n" +                            // line 6: wrong column count
                  "内科,标题四,,答四\r\n" +                               // line 7: empty ask → title
                  "内科,标题五,问五,   \r\n" +                             // line 8: empty answer
                  "内科,标题六,问六,答六";                               // line 9: no trailing newline
        var path = Write("dirty.csv", csv);
        var r = DatasetReader.Read(path, new DatasetReadOptions { MaxBadFraction = 0.5 });
        Assert.Equal(DatasetFormat.CmdCsv, r.Format);
        Assert.Equal(6, r.TotalRecords);
        Assert.Equal(["问,带逗号", "问\n跨行", "标题四", "问六"], r.Examples.Select(e => e.Prompt));
        Assert.Equal(["答\"引号\"", "答二", "答四", "答六"], r.Examples.Select(e => e.Response));
        Assert.Equal([$"{path}:2", $"{path}:3", $"{path}:7", $"{path}:9"], r.Examples.Select(e => e.Source));
        Assert.Equal([6, 8], r.Issues.Select(i => i.Line));
        Assert.Contains("expected 4 columns, got 3", r.Issues[0].Message);
        Assert.Contains("empty 'answer'", r.Issues[1].Message);
    }

    [Fact]
    public void CmdCsv_Gb18030WithoutBom_IsDetected()
    {
        Encoding.RegisterProvider(CodePagesEncodingProvider.Instance);
        var path = Write("gb.csv", "department,title,ask,answer\n儿科,发烧,孩子发烧怎么办,多喝水\n", Encoding.GetEncoding(54936));
        var r = DatasetReader.Read(path);
        Assert.Equal("gb18030", r.EncodingName);
        Assert.Equal(("孩子发烧怎么办", "多喝水"), (r.Examples[0].Prompt, r.Examples[0].Response));
    }

    [Fact]
    public void CmdCsv_UnterminatedQuote_IsAnIssueAtItsLine()
    {
        var rows = string.Concat(Enumerable.Range(0, 20).Select(i => $"科,t{i},q{i},a{i}\n"));
        var path = Write("unterminated.csv", "department,title,ask,answer\n" + rows + "科,t,\"never closed,a\n");
        var r = DatasetReader.Read(path);
        Assert.Equal(20, r.Examples.Count);
        var issue = Assert.Single(r.Issues);
        Assert.Equal(22, issue.Line);
        Assert.Contains("unterminated", issue.Message);
    }

    [Fact]
    public void CmdCsv_MissingColumns_Throws()
    {
        var path = Write("nohdr.csv", "a,b,c,d\n1,2,3,4\n");
        var e = Assert.Throws<InvalidDataException>(() => DatasetReader.Read(path));
        Assert.Contains($"{path}:1", e.Message);
    }

    [Fact]
    public void Alpaca_JsonArray_JoinsInstructionAndInput_ReportsLines()
    {
        var json = """
            [
              {"instruction": "解释", "input": "高血压", "output": "血压高"},
              {"instruction": "只有指令", "input": "", "output": "好"},
              {"instruction": "无输出",
               "input": "x"},
              {"instruction": "类型错", "output": 5},
              {"instruction": "带历史", "output": "答", "history": [["旧问", "旧答"]]}
            ]
            """;
        var path = Write("a.json", json);
        var r = DatasetReader.Read(path, new DatasetReadOptions { MaxBadFraction = 0.5 });
        Assert.Equal(DatasetFormat.Alpaca, r.Format);
        Assert.Equal(["解释\n高血压", "只有指令", "带历史"], r.Examples.Select(e => e.Prompt));
        Assert.Equal($"{path}:2", r.Examples[0].Source);
        Assert.Equal($"{path}:7", r.Examples[2].Source);
        Assert.Equal([("旧问", "旧答")], r.Examples[2].History);
        Assert.Equal([4, 6], r.Issues.Select(i => i.Line));
        Assert.Contains("missing required field 'output'", r.Issues[0].Message);
        Assert.Contains("'output' must be a string, got a number", r.Issues[1].Message);
    }

    [Fact]
    public void Alpaca_Jsonl_IsDetected()
    {
        var path = Write("a.jsonl", "{\"instruction\":\"i\",\"input\":\"x\",\"output\":\"o\"}\n");
        var r = DatasetReader.Read(path);
        Assert.Equal(DatasetFormat.Alpaca, r.Format);
        Assert.Equal("i\nx", r.Examples[0].Prompt);
    }

    [Fact]
    public void PTuning_Jsonl_History_BadLines()
    {
        var lines = new List<string>();
        for (int i = 0; i < 18; i++) lines.Add($"{{\"prompt\":\"p{i}\",\"response\":\"r{i}\",\"history\":[]}}");
        lines.Insert(3, "{\"prompt\":\"p\",\"response\":\"r\",\"history\":[[\"q0\",\"a0\"],[\"q1\",\"a1\"]]}");
        lines.Insert(5, "{\"prompt\": \"broken\""); // line 6: bad JSON
        lines.Insert(7, "");                          // line 8: blank, not a record
        lines.Insert(9, "{\"prompt\":\"p\",\"response\":\"r\",\"history\":[[\"only one\"]]}"); // line 10: bad history
        var path = Write("p.jsonl", string.Join("\n", lines));
        var r = DatasetReader.Read(path);
        Assert.Equal(DatasetFormat.PTuning, r.Format);
        Assert.Equal(21, r.TotalRecords);
        Assert.Equal(19, r.Examples.Count);
        Assert.Equal([("q0", "a0"), ("q1", "a1")], r.Examples[3].History);
        Assert.Equal($"{path}:4", r.Examples[3].Source);
        Assert.Equal([6, 10], r.Issues.Select(i => i.Line));
        Assert.StartsWith("invalid JSON", r.Issues[0].Message);
        Assert.Contains("'history'[0] must be a [question, answer] pair", r.Issues[1].Message);
    }

    [Fact]
    public void PTuning_CustomColumns()
    {
        var path = Write("c.json", "{\"content\":\"问\",\"summary\":\"答\",\"hist\":[[\"a\",\"b\"]]}\n");
        var opts = new DatasetReadOptions { Format = DatasetFormat.PTuning, PromptColumn = "content", ResponseColumn = "summary", HistoryColumn = "hist" };
        var r = DatasetReader.Read(path, opts);
        Assert.Equal(("问", "答"), (r.Examples[0].Prompt, r.Examples[0].Response));
        Assert.Equal([("a", "b")], r.Examples[0].History);
        // Auto-detection also honours configured column names.
        Assert.Equal(DatasetFormat.PTuning, DatasetReader.Read(path, new DatasetReadOptions { PromptColumn = "content", ResponseColumn = "summary" }).Format);
    }

    [Fact]
    public void TooManyBadRecords_ThrowsListingFileAndLines()
    {
        var lines = Enumerable.Range(0, 8).Select(i => $"{{\"prompt\":\"p{i}\",\"response\":\"r{i}\"}}").ToList();
        lines.Add("{\"prompt\":\"p\",\"response\":\"\"}");   // line 9: empty response
        lines.Add("{\"prompt\":5,\"response\":\"r\"}");      // line 10: wrong type
        var path = Write("bad.jsonl", string.Join("\n", lines));
        // 2 of 10 bad = 20% > 10% default.
        var e = Assert.Throws<InvalidDataException>(() => DatasetReader.Read(path));
        Assert.Contains("2 of 10", e.Message);
        Assert.Contains($"{path}:9: empty 'response'", e.Message);
        Assert.Contains($"{path}:10: field 'prompt' must be a string", e.Message);
        // At exactly the threshold it passes.
        Assert.Equal(8, DatasetReader.Read(path, new DatasetReadOptions { MaxBadFraction = 0.2 }).Examples.Count);
    }

    [Fact]
    public void MalformedJsonArray_Throws_WithLine()
    {
        var path = Write("broken.json", "[\n{\"instruction\":\"a\",\"output\":\"b\"},\n{\"instruction\": }\n]");
        var e = Assert.Throws<InvalidDataException>(() => DatasetReader.Read(path, DatasetFormat.Alpaca));
        Assert.Contains($"{path}:3", e.Message);
    }

    [Fact]
    public void Detection_And_FormatNames()
    {
        Assert.Equal(DatasetFormat.CmdCsv, DatasetReader.ParseFormat("cmd-csv"));
        Assert.Equal(DatasetFormat.PTuning, DatasetReader.ParseFormat("PTuning"));
        Assert.Equal(DatasetFormat.Alpaca, DatasetReader.ParseFormat("alpaca"));
        Assert.Equal(DatasetFormat.Auto, DatasetReader.ParseFormat("auto"));
        Assert.Throws<ArgumentException>(() => DatasetReader.ParseFormat("parquet"));
        Assert.Equal(DatasetFormat.CmdCsv, DatasetReader.DetectFormat("x.txt", "department,title,ask,answer\n"));
        Assert.Throws<InvalidDataException>(() => DatasetReader.DetectFormat("x.jsonl", "{\"foo\":1}"));
        Assert.Throws<InvalidDataException>(() => DatasetReader.DetectFormat("x.txt", "hello"));
    }
}
