namespace DoctorGlm.Engine.Data;

/// <summary>
/// One supervised dialogue turn: the user's <paramref name="Prompt"/>, the target <paramref name="Response"/>, and the
/// earlier turns of the same conversation (oldest first). How the history is rendered into prompt text is decided by
/// <see cref="ChatGlmPrompt"/> / <see cref="ChatGlmSampleBuilder"/>, not here.
/// </summary>
/// <param name="Prompt">The query of this turn (for Alpaca data: instruction and input already joined).</param>
/// <param name="Response">The answer the model is trained to produce.</param>
/// <param name="History">Earlier (question, answer) turns, oldest first; empty for single-turn data.</param>
/// <param name="Source">Where the record came from, as <c>file:line</c> (1-based line where the record starts).</param>
public sealed record DialogueExample(
    string Prompt,
    string Response,
    IReadOnlyList<(string Question, string Answer)> History,
    string Source);

/// <summary>A record that was skipped while reading a dataset, with the 1-based line where it starts.</summary>
/// <param name="File">The dataset file.</param>
/// <param name="Line">1-based line number where the bad record starts.</param>
/// <param name="Message">What was wrong with it.</param>
public sealed record DataIssue(string File, int Line, string Message)
{
    /// <summary><c>file:line: message</c>, the form compilers use, so editors can jump to it.</summary>
    public override string ToString() => $"{File}:{Line}: {Message}";
}
