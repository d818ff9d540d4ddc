using System.Globalization;
using System.Text.Json;
using DoctorGlm.Engine.Autograd;
using DoctorGlm.Engine.IO;

namespace DoctorGlm.Engine.Optim;

/// <summary>
/// Base of the optimizers: owns the list of trainable parameters and their per-parameter state, runs the update
/// under <see cref="GradMode.NoGrad"/>, and saves/loads the state as a safetensors file.
/// </summary>
/// <remarks>
/// <para>Only parameters with <see cref="Tensor.RequiresGrad"/> set when the optimizer is built are trainable; the
/// others are ignored for good (never changed, never given state). A trainable parameter whose
/// <see cref="Tensor.Grad"/> is null (or disposed), or whose RequiresGrad was turned off since, is skipped for that step, and — as in PyTorch — its own
/// step count does not advance, so its bias corrections stay in step with the updates it actually received.</para>
/// <para>State tensors are created lazily at a parameter's first update, outside any <see cref="TensorScope"/>
/// (they outlive the step's scope), and are released by <see cref="Dispose"/>.</para>
/// <para>State file layout: per parameter with state, <c>{name}.{buffer}</c> (F32, the parameter's shape) and
/// <c>{name}.step</c> (I32 [1]); metadata <c>optimizer</c>, <c>step</c>, <c>parameters</c> (a JSON array of every
/// trainable name, in order) and the hyper-parameters as round-trip strings.</para>
/// </remarks>
public abstract class Optimizer : IDisposable
{
    private readonly (string Name, Tensor Param)[] _params;
    private readonly ParamState?[] _state;
    private bool _disposed;

    /// <summary>Per-parameter state: the buffers named by <see cref="StateNames"/> and the parameter's own step count.</summary>
    private sealed class ParamState(Tensor[] buffers)
    {
        public Tensor[] Buffers { get; } = buffers;
        public long Step { get; set; }
    }

    /// <summary>Builds the optimizer over the named parameters; those without <see cref="Tensor.RequiresGrad"/> are left out.</summary>
    /// <param name="parameters">Named parameters; names must be unique and non-empty (they key the saved state).</param>
    /// <param name="learningRate">Initial learning rate (change it with <see cref="LearningRate"/> or an <see cref="LrSchedule"/>).</param>
    protected Optimizer(IEnumerable<(string Name, Tensor Param)> parameters, double learningRate)
    {
        ArgumentNullException.ThrowIfNull(parameters);
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var list = new List<(string, Tensor)>();
        int index = 0;
        foreach (var (name, p) in parameters)
        {
            if (string.IsNullOrEmpty(name)) throw new ArgumentException($"{GetType().Name}: parameter {index} has no name (names key the saved state)", nameof(parameters));
            if (p is null) throw new ArgumentException($"{GetType().Name}: parameter '{name}' is null", nameof(parameters));
            if (!seen.Add(name)) throw new ArgumentException($"{GetType().Name}: parameter name '{name}' appears twice", nameof(parameters));
            p.ThrowIfDisposed();
            index++;
            if (!p.RequiresGrad) continue;
            if (p.DType != DType.F32) throw new ArgumentException($"{GetType().Name}: trainable {p.Describe($"parameter '{name}'")} must be F32 (keep master weights in fp32)", nameof(parameters));
            if (!p.IsContiguous) throw new ArgumentException($"{GetType().Name}: trainable {p.Describe($"parameter '{name}'")} must be contiguous", nameof(parameters));
            list.Add((name, p));
        }
        _params = [.. list];
        _state = new ParamState?[_params.Length];
        LearningRate = learningRate;
    }

    /// <summary>The trainable parameters (those that had <see cref="Tensor.RequiresGrad"/> at construction), in order.</summary>
    public IReadOnlyList<(string Name, Tensor Param)> Parameters => _params;

    /// <summary>Learning rate used by the next <see cref="Step"/>.</summary>
    public double LearningRate
    {
        get;
        set => field = double.IsFinite(value) && value >= 0 ? value : throw new ArgumentOutOfRangeException(nameof(value), value, "learning rate must be finite and non-negative");
    }

    /// <summary>Number of <see cref="Step"/> calls so far (restored by <see cref="LoadState"/>).</summary>
    public long StepCount { get; private set; }

    /// <summary>The name written to and checked in the state file's <c>optimizer</c> metadata.</summary>
    protected abstract string TypeName { get; }

    /// <summary>Names of the per-parameter state buffers, in the order <see cref="Update"/> receives them.</summary>
    protected abstract IReadOnlyList<string> StateNames { get; }

    /// <summary>
    /// Applies one update to every parameter of <paramref name="updates"/> in place, all on <paramref name="backend"/>
    /// (a fused multi-tensor kernel: one launch per step on the GPU).
    /// </summary>
    /// <param name="backend">The backend every tensor of the group lives on.</param>
    /// <param name="updates">Per parameter: the contiguous fp32 parameter, its gradient (same shape and device),
    /// the buffers named by <see cref="StateNames"/> (zeros before its first update) and its step number (1 for
    /// its first update).</param>
    protected abstract void Update(Backends.IBackend backend, IReadOnlyList<ParameterUpdate> updates);

    /// <summary>Hyper-parameters to record in the state file, as invariant round-trip strings (learning rate excluded).</summary>
    protected abstract IReadOnlyDictionary<string, string> HyperParameters();

    /// <summary>Restores hyper-parameters from a state file's metadata (as PyTorch's load_state_dict does).</summary>
    /// <param name="metadata">The file's metadata.</param>
    /// <param name="path">The file, for error messages.</param>
    protected abstract void RestoreHyperParameters(IReadOnlyDictionary<string, string> metadata, string path);

    /// <summary>Updates every trainable parameter that has a gradient, then advances <see cref="StepCount"/>.</summary>
    public void Step()
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var noGrad = GradMode.NoGrad();
        var pending = new List<ParameterUpdate>(_params.Length);
        for (int i = 0; i < _params.Length; i++)
        {
            var (name, p) = _params[i];
            var g = p.Grad;
            if (!p.RequiresGrad || g is null || g.IsDisposed) continue;
            p.ThrowIfDisposed();
            if (g.Shape != p.Shape) throw new InvalidOperationException($"{TypeName}.Step: gradient {g.Shape} of parameter '{name}' does not match its shape {p.Shape}");
            if (g.DType != DType.F32 || !g.IsContiguous) throw new InvalidOperationException($"{TypeName}.Step: gradient of parameter '{name}' must be contiguous F32 (is {g.DType}{(g.IsContiguous ? "" : ", strided")})");
            if (g.Device != p.Device) throw new InvalidOperationException($"{TypeName}.Step: gradient of parameter '{name}' is on {g.Device} but the parameter is on {p.Device}");
            var st = _state[i] ??= NewState(p);
            st.Step++;
            pending.Add(new ParameterUpdate(p, g, st.Buffers, st.Step));
        }
        foreach (var group in pending.GroupBy(u => u.Param.Device)) Update(group.First().Param.Backend, group.ToList());
        StepCount++;
    }

    private ParamState NewState(Tensor p)
    {
        using var unscoped = TensorScope.Unscoped();
        return new ParamState([.. StateNames.Select(_ => Tensor.ZerosLike(p))]);
    }

    /// <summary>Clears the gradients of the trainable parameters.</summary>
    /// <param name="setToNone">True (default) disposes each gradient and sets it to null, returning its memory to the
    /// pool; false fills it with zeros in place.</param>
    public void ZeroGrad(bool setToNone = true)
    {
        foreach (var (_, p) in _params)
        {
            var g = p.Grad;
            if (g is null) continue;
            if (setToNone || g.IsDisposed) { g.Dispose(); p.Grad = null; }
            else g.Backend.Fill(g, 0f);
        }
    }

    // ---------------------------------------------------------------- state files

    /// <summary>Writes the optimizer state to <paramref name="path"/> (atomically: temporary file, then rename).</summary>
    public void SaveState(string path)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var meta = new Dictionary<string, string>(StringComparer.Ordinal)
        {
            ["optimizer"] = TypeName,
            ["step"] = StepCount.ToString(CultureInfo.InvariantCulture),
            ["lr"] = Format(LearningRate),
            ["parameters"] = JsonSerializer.Serialize(_params.Select(p => p.Name).ToArray(), OptimJson.Default.StringArray),
        };
        foreach (var (k, v) in HyperParameters()) meta[k] = v;
        var tensors = new List<KeyValuePair<string, Tensor>>();
        var temps = new List<Tensor>();
        try
        {
            using (TensorScope.Unscoped())
            {
                for (int i = 0; i < _params.Length; i++)
                {
                    if (_state[i] is not { } st) continue;
                    string name = _params[i].Name;
                    for (int b = 0; b < StateNames.Count; b++) tensors.Add(new($"{name}.{StateNames[b]}", st.Buffers[b]));
                    var stepT = Tensor.FromArray([checked((int)st.Step)], new Shape(1));
                    temps.Add(stepT);
                    tensors.Add(new($"{name}.step", stepT));
                }
            }
            SafeTensorsFile.Save(path, tensors, meta);
        }
        finally
        {
            foreach (var t in temps) t.Dispose();
        }
    }

    /// <summary>
    /// Replaces the optimizer state (buffers, step counts, learning rate and hyper-parameters) with the one saved in
    /// <paramref name="path"/>. Throws <see cref="InvalidDataException"/> naming the file and the key when the file is
    /// from another optimizer type, lists other parameters, or holds a buffer of the wrong shape or a missing key;
    /// the current state is left untouched in that case.
    /// </summary>
    public void LoadState(string path)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        using var f = SafeTensorsFile.Open(path);
        var meta = f.Metadata;
        string Meta(string key) => meta.TryGetValue(key, out var v) ? v : throw new InvalidDataException($"{path}: metadata '{key}' is missing (not an optimizer state file?)");

        if (Meta("optimizer") != TypeName)
            throw new InvalidDataException($"{path}: metadata 'optimizer' is '{meta["optimizer"]}' but this optimizer is {TypeName}");
        string[] names;
        try { names = JsonSerializer.Deserialize(Meta("parameters"), OptimJson.Default.StringArray) ?? throw new JsonException("null"); }
        catch (JsonException e) { throw new InvalidDataException($"{path}: metadata 'parameters' is not a JSON array of names: {e.Message}", e); }
        var ours = _params.Select(p => p.Name).ToHashSet(StringComparer.Ordinal);
        foreach (var n in names)
            if (!ours.Contains(n)) throw new InvalidDataException($"{path}: holds state for parameter '{n}', which this optimizer does not train");
        var theirs = names.ToHashSet(StringComparer.Ordinal);
        foreach (var (n, _) in _params)
            if (!theirs.Contains(n)) throw new InvalidDataException($"{path}: has no entry for trainable parameter '{n}' (metadata 'parameters')");

        long step = ParseLong(path, "step", Meta("step"));
        double lr = ParseDouble(path, "lr", Meta("lr"));

        // Read everything first, so that a bad file leaves the current state untouched.
        var loaded = new ParamState?[_params.Length];
        var known = new HashSet<string>(StringComparer.Ordinal);
        try
        {
            using (TensorScope.Unscoped())
            {
                for (int i = 0; i < _params.Length; i++)
                {
                    var (name, p) = _params[i];
                    string stepKey = $"{name}.step";
                    var bufferKeys = StateNames.Select(s => $"{name}.{s}").ToArray();
                    known.Add(stepKey);
                    known.UnionWith(bufferKeys);
                    if (!f.Contains(stepKey))
                    {
                        // A parameter that never had a gradient has no state; then none of its buffers may be there.
                        foreach (var k in bufferKeys)
                            if (f.Contains(k)) throw new InvalidDataException($"{path}: '{k}' is present but '{stepKey}' is missing");
                        continue;
                    }
                    var se = f[stepKey];
                    if (se.DTypeName != "I32" || se.Shape is not [1]) throw new InvalidDataException($"{path}: '{stepKey}' must be I32 [1], is {se.DTypeName} {Shape.Format(se.Shape)}");
                    var bytes = new byte[4];
                    f.ReadBytes(stepKey, bytes);
                    int pStep = BitConverter.ToInt32(bytes);
                    if (pStep < 1 || pStep > step) throw new InvalidDataException($"{path}: '{stepKey}' = {pStep} is outside [1, {step}]");
                    var buffers = new Tensor[bufferKeys.Length];
                    loaded[i] = new ParamState(buffers) { Step = pStep };
                    for (int b = 0; b < bufferKeys.Length; b++)
                    {
                        string key = bufferKeys[b];
                        if (!f.Contains(key)) throw new InvalidDataException($"{path}: key '{key}' is missing (parameter '{name}' has '{stepKey}')");
                        var e = f[key];
                        if (e.DTypeName != "F32") throw new InvalidDataException($"{path}: '{key}' is {e.DTypeName}, expected F32");
                        if (new Shape(e.Shape) != p.Shape)
                            throw new InvalidDataException($"{path}: '{key}' has shape {Shape.Format(e.Shape)} but parameter '{name}' has shape {p.Shape}");
                        buffers[b] = f.Load(key, p.Device);
                    }
                }
            }
            foreach (var e in f.Entries)
                if (!known.Contains(e.Name)) throw new InvalidDataException($"{path}: unexpected key '{e.Name}' (no such {TypeName} state)");
            RestoreHyperParameters(meta, path);
        }
        catch
        {
            foreach (var s in loaded) if (s is not null) foreach (var t in s.Buffers) t?.Dispose();
            throw;
        }

        for (int i = 0; i < _state.Length; i++)
        {
            if (_state[i] is { } old) foreach (var t in old.Buffers) t.Dispose();
            _state[i] = loaded[i];
        }
        StepCount = step;
        LearningRate = lr;
    }

    /// <summary>The state buffer <paramref name="stateName"/> of parameter <paramref name="paramName"/>, or null before its first update.</summary>
    public Tensor? GetState(string paramName, string stateName)
    {
        int i = Array.FindIndex(_params, p => p.Name == paramName);
        if (i < 0) throw new KeyNotFoundException($"{TypeName}: no trainable parameter '{paramName}'");
        int b = StateNames.ToList().IndexOf(stateName);
        if (b < 0) throw new KeyNotFoundException($"{TypeName}: no state '{stateName}' (it has {string.Join(", ", StateNames)})");
        return _state[i]?.Buffers[b];
    }

    /// <summary>Invariant round-trip text of a hyper-parameter.</summary>
    protected static string Format(double value) => value.ToString("R", CultureInfo.InvariantCulture);

    /// <summary>Reads a hyper-parameter written by <see cref="Format"/>, naming the file and key when it is missing or malformed.</summary>
    protected static double ReadHyper(IReadOnlyDictionary<string, string> metadata, string key, string path) =>
        ParseDouble(path, key, metadata.TryGetValue(key, out var v) ? v : throw new InvalidDataException($"{path}: metadata '{key}' is missing"));

    private static double ParseDouble(string path, string key, string text) =>
        double.TryParse(text, NumberStyles.Float, CultureInfo.InvariantCulture, out var d) ? d
            : throw new InvalidDataException($"{path}: metadata '{key}' = '{text}' is not a number");

    private static long ParseLong(string path, string key, string text) =>
        long.TryParse(text, NumberStyles.Integer, CultureInfo.InvariantCulture, out var d) && d >= 0 ? d
            : throw new InvalidDataException($"{path}: metadata '{key}' = '{text}' is not a non-negative integer");

    /// <summary>Releases the state buffers (the parameters and their gradients belong to the caller).</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        foreach (var s in _state) if (s is not null) foreach (var t in s.Buffers) t.Dispose();
        Array.Clear(_state);
        GC.SuppressFinalize(this);
    }
}

/// <summary>Source-generated JSON for the state file's metadata (the library is AOT-compatible: no reflection).</summary>
[System.Text.Json.Serialization.JsonSerializable(typeof(string[]), TypeInfoPropertyName = "StringArray")]
internal sealed partial class OptimJson : System.Text.Json.Serialization.JsonSerializerContext;

/// <summary>One parameter's share of an optimizer step.</summary>
/// <param name="Param">The contiguous fp32 parameter, updated in place.</param>
/// <param name="Grad">Its gradient.</param>
/// <param name="State">Its state buffers (as named by the optimizer).</param>
/// <param name="Step">Its step number, 1 for its first update.</param>
public readonly record struct ParameterUpdate(Tensor Param, Tensor Grad, Tensor[] State, long Step);
