using System.Buffers.Binary;
using System.Text;

namespace DoctorGlm.Engine.IO;

/// <summary>Python's None in an unpickled value.</summary>
internal sealed class PyNone
{
    public static readonly PyNone Instance = new();
    private PyNone() { }
    public override string ToString() => "None";
}

/// <summary>A pickled tuple.</summary>
internal sealed record PyTuple(object[] Items);

/// <summary>A reference to a module attribute (only ever compared against the allow-list, never resolved).</summary>
internal sealed record PyGlobal(string Module, string Name)
{
    public override string ToString() => Module + "." + Name;
}

/// <summary>A pickled dict or OrderedDict: insertion order kept, keys are strings, ints or bools.</summary>
internal sealed class PyDict
{
    public Dictionary<object, object> Items { get; } = new();
}

/// <summary>A storage named by torch's persistent id: <c>('storage', torch.XStorage, key, location, numel)</c>.</summary>
internal sealed record TorchStorageRef(StoredType Type, string TypeName, string Key, string Location, long Numel);

/// <summary>What <c>torch._utils._rebuild_tensor_v2</c> would build: a view over a storage.</summary>
internal sealed record TorchTensorRef(TorchStorageRef Storage, long Offset, long[] Size, long[] Stride);

/// <summary>
/// A restricted unpickler for what <c>torch.save</c> writes for (nested) state dicts. It interprets the opcode
/// stream as data only: the few globals torch needs (OrderedDict, the tensor/parameter rebuild functions, the
/// storage types) are recognised by name and modelled, never imported or called. Any other global, any other
/// callable, and any opcode outside the list throw <see cref="InvalidDataException"/> naming the file, the
/// opcode or global, and the byte offset — a malicious checkpoint is refused, not executed.
/// </summary>
internal sealed class TorchPickle
{
    private static readonly Dictionary<string, StoredType> StorageTypes = new(StringComparer.Ordinal)
    {
        ["DoubleStorage"] = StoredType.F64, ["FloatStorage"] = StoredType.F32, ["HalfStorage"] = StoredType.F16,
        ["BFloat16Storage"] = StoredType.BF16, ["LongStorage"] = StoredType.I64, ["IntStorage"] = StoredType.I32,
        ["ShortStorage"] = StoredType.I16, ["CharStorage"] = StoredType.I8, ["ByteStorage"] = StoredType.U8,
        ["BoolStorage"] = StoredType.Bool,
    };

    private static readonly PyGlobal OrderedDict = new("collections", "OrderedDict");
    private static readonly PyGlobal RebuildTensorV2 = new("torch._utils", "_rebuild_tensor_v2");
    private static readonly PyGlobal RebuildParameter = new("torch._utils", "_rebuild_parameter");
    private static readonly PyGlobal RebuildParameterWithState = new("torch._utils", "_rebuild_parameter_with_state");

    private readonly byte[] _data;
    private readonly string _file;
    private readonly List<object> _stack = new();
    private readonly Stack<int> _marks = new();
    private readonly Dictionary<long, object> _memo = new();
    private readonly Dictionary<string, TorchStorageRef> _storages = new(StringComparer.Ordinal);
    private int _pos;
    private int _opPos;

    private TorchPickle(byte[] data, string file) { _data = data; _file = file; }

    /// <summary>Interprets a torch <c>data.pkl</c>; returns the root value.</summary>
    public static object Load(byte[] data, string file) => new TorchPickle(data, file).Run();

    private InvalidDataException Bad(string what) => new($"{_file}: data.pkl byte {_opPos}: {what}");

    private object Run()
    {
        while (true)
        {
            if (_pos >= _data.Length) throw Bad("the pickle ends without STOP (truncated?)");
            _opPos = _pos;
            byte op = _data[_pos++];
            switch (op)
            {
                case 0x80: // PROTO
                {
                    int proto = U8();
                    if (proto is < 2 or > 5) throw Bad($"pickle protocol {proto} is not one torch.save writes");
                    break;
                }
                case 0x95: Take(8); break; // FRAME (protocol 4): a length hint only
                case (byte)'.': // STOP
                    if (_stack.Count != 1 || _marks.Count != 0) throw Bad($"STOP with {_stack.Count} values on the stack");
                    return _stack[0];
                case (byte)'}': Push(new PyDict()); break; // EMPTY_DICT
                case (byte)']': Push(new List<object>()); break; // EMPTY_LIST
                case (byte)')': Push(new PyTuple([])); break; // EMPTY_TUPLE
                case (byte)'(': _marks.Push(_stack.Count); break; // MARK
                case (byte)'N': Push(PyNone.Instance); break;
                case 0x88: Push(true); break; // NEWTRUE
                case 0x89: Push(false); break; // NEWFALSE
                case (byte)'K': Push((long)U8()); break; // BININT1
                case (byte)'M': Push((long)BinaryPrimitives.ReadUInt16LittleEndian(Take(2))); break; // BININT2
                case (byte)'J': Push((long)BinaryPrimitives.ReadInt32LittleEndian(Take(4))); break; // BININT
                case 0x8a: Push(Long(U8())); break; // LONG1
                case 0x8b: Push(Long(checked((int)BinaryPrimitives.ReadUInt32LittleEndian(Take(4))))); break; // LONG4
                case (byte)'G': Push(BinaryPrimitives.ReadDoubleBigEndian(Take(8))); break; // BINFLOAT
                case (byte)'X': Push(Utf8(Length(BinaryPrimitives.ReadUInt32LittleEndian(Take(4))))); break; // BINUNICODE
                case 0x8c: Push(Utf8(U8())); break; // SHORT_BINUNICODE
                case 0x8d: Push(Utf8(Length(BinaryPrimitives.ReadUInt64LittleEndian(Take(8))))); break; // BINUNICODE8
                case (byte)'q': Memo(U8()); break; // BINPUT
                case (byte)'r': Memo(BinaryPrimitives.ReadUInt32LittleEndian(Take(4))); break; // LONG_BINPUT
                case 0x94: Memo(_memo.Count); break; // MEMOIZE
                case (byte)'h': Push(Recall(U8())); break; // BINGET
                case (byte)'j': Push(Recall(BinaryPrimitives.ReadUInt32LittleEndian(Take(4)))); break; // LONG_BINGET
                case (byte)'0': Pop(); break; // POP
                case (byte)'1': PopMark(); break; // POP_MARK
                case (byte)'2': Push(Peek()); break; // DUP
                case (byte)'c': // GLOBAL "module\nname\n"
                {
                    string module = Line(), name = Line();
                    Push(Allow(new PyGlobal(module, name)));
                    break;
                }
                case 0x93: // STACK_GLOBAL
                {
                    var name = Pop() as string ?? throw Bad("STACK_GLOBAL without a string name");
                    var module = Pop() as string ?? throw Bad("STACK_GLOBAL without a string module");
                    Push(Allow(new PyGlobal(module, name)));
                    break;
                }
                case (byte)'t': Push(new PyTuple(PopMark())); break; // TUPLE
                case 0x85: Push(new PyTuple([Pop()])); break; // TUPLE1
                case 0x86: { var b = Pop(); var a = Pop(); Push(new PyTuple([a, b])); break; } // TUPLE2
                case 0x87: { var c = Pop(); var b = Pop(); var a = Pop(); Push(new PyTuple([a, b, c])); break; } // TUPLE3
                case (byte)'Q': Push(PersistentLoad(Pop())); break; // BINPERSID
                case (byte)'R': { var args = Pop(); var fn = Pop(); Push(Reduce(fn, args)); break; } // REDUCE
                case (byte)'b': // BUILD
                {
                    var state = Pop();
                    // OrderedDict state (e.g. a state dict's _metadata attribute) carries no tensors: ignored.
                    if (Peek() is not PyDict) throw Bad($"BUILD on a {Describe(Peek())} (only an OrderedDict's state is accepted)");
                    _ = state;
                    break;
                }
                case (byte)'s': { var v = Pop(); var k = Pop(); SetItem(Peek(), k, v); break; } // SETITEM
                case (byte)'u': // SETITEMS
                {
                    var items = PopMark();
                    if (items.Length % 2 != 0) throw Bad("SETITEMS with an odd number of values");
                    var d = Peek();
                    for (int i = 0; i < items.Length; i += 2) SetItem(d, items[i], items[i + 1]);
                    break;
                }
                case (byte)'a': { var v = Pop(); AsList(Peek()).Add(v); break; } // APPEND
                case (byte)'e': { var items = PopMark(); AsList(Peek()).AddRange(items); break; } // APPENDS
                default:
                    string shown = op is >= 0x20 and < 0x7f ? $" ('{(char)op}')" : "";
                    throw Bad($"pickle opcode 0x{op:X2}{shown} is not allowed in a torch state dict (refused; nothing was executed)");
            }
        }
    }

    private PyGlobal Allow(PyGlobal g)
    {
        bool ok = g == OrderedDict || g == RebuildTensorV2 || g == RebuildParameter || g == RebuildParameterWithState
            || g.Module == "torch" && StorageTypes.ContainsKey(g.Name);
        if (!ok) throw Bad($"global '{g.Module} {g.Name}' is not allowed in a torch state dict (refused; nothing was executed)");
        return g;
    }

    private object Reduce(object fn, object args)
    {
        if (fn is not PyGlobal g) throw Bad($"REDUCE on a {Describe(fn)}, not a callable");
        if (args is not PyTuple t) throw Bad($"REDUCE of {g} with {Describe(args)} arguments");
        var a = t.Items;
        if (g == OrderedDict)
        {
            if (a.Length != 0) throw Bad("collections.OrderedDict called with arguments");
            return new PyDict();
        }
        if (g == RebuildTensorV2)
        {
            // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
            if (a.Length is < 6 or > 7) throw Bad($"_rebuild_tensor_v2 with {a.Length} arguments");
            if (a[0] is not TorchStorageRef s) throw Bad($"_rebuild_tensor_v2 on a {Describe(a[0])}, not a storage");
            long offset = a[1] is long o ? o : throw Bad("_rebuild_tensor_v2 storage_offset is not an int");
            return new TorchTensorRef(s, offset, Ints(a[2], "size"), Ints(a[3], "stride"));
        }
        if (g == RebuildParameter || g == RebuildParameterWithState)
        {
            // (tensor, requires_grad, backward_hooks[, state]): a parameter is just its tensor here.
            if (a.Length is < 3 or > 4 || a[0] is not TorchTensorRef tensor) throw Bad($"{g.Name} without a tensor");
            return tensor;
        }
        throw Bad($"REDUCE of '{g.Module} {g.Name}' is not allowed (refused; nothing was executed)");
    }

    private long[] Ints(object v, string what)
    {
        if (v is not PyTuple t) throw Bad($"_rebuild_tensor_v2 {what} is a {Describe(v)}, not a tuple");
        var r = new long[t.Items.Length];
        for (int i = 0; i < r.Length; i++) r[i] = t.Items[i] is long x ? x : throw Bad($"_rebuild_tensor_v2 {what}[{i}] is not an int");
        return r;
    }

    private object PersistentLoad(object pid)
    {
        if (pid is not PyTuple { Items: [string tag, PyGlobal type, string key, string location, long numel] } || tag != "storage")
            throw Bad($"persistent id {Describe(pid)} is not ('storage', type, key, location, numel)");
        if (type.Module != "torch" || !StorageTypes.TryGetValue(type.Name, out var st)) throw Bad($"persistent id names '{type}', not a torch storage type");
        if (numel < 0) throw Bad($"storage '{key}' has a negative size {numel}");
        if (_storages.TryGetValue(key, out var seen))
        {
            if (seen.Type != st || seen.Numel != numel)
                throw Bad($"storage '{key}' is referenced as {seen.TypeName}[{seen.Numel}] and as {type.Name}[{numel}]");
            return seen;
        }
        var r = new TorchStorageRef(st, type.Name, key, location, numel);
        _storages[key] = r;
        return r;
    }

    private void SetItem(object target, object key, object value)
    {
        if (target is not PyDict d) throw Bad($"SETITEM on a {Describe(target)}, not a dict");
        if (key is not (string or long or bool)) throw Bad($"dict key is a {Describe(key)} (only str/int keys are accepted)");
        d.Items[key] = value;
    }

    private List<object> AsList(object target) => target as List<object> ?? throw Bad($"APPEND on a {Describe(target)}, not a list");

    private static string Describe(object v) => v switch
    {
        PyGlobal g => $"global {g}",
        PyTuple t => $"tuple of {t.Items.Length}",
        PyDict => "dict",
        List<object> => "list",
        TorchTensorRef => "tensor",
        TorchStorageRef => "storage",
        null => "nothing",
        _ => v.GetType().Name,
    };

    private void Push(object v) => _stack.Add(v);

    private object Pop()
    {
        if (_stack.Count == 0 || _marks.Count > 0 && _stack.Count <= _marks.Peek()) throw Bad("stack underflow");
        var v = _stack[^1];
        _stack.RemoveAt(_stack.Count - 1);
        return v;
    }

    private object Peek() => _stack.Count > 0 && (_marks.Count == 0 || _stack.Count > _marks.Peek()) ? _stack[^1] : throw Bad("stack underflow");

    private object[] PopMark()
    {
        if (_marks.Count == 0) throw Bad("no MARK to pop to");
        int m = _marks.Pop();
        var items = _stack.GetRange(m, _stack.Count - m).ToArray();
        _stack.RemoveRange(m, _stack.Count - m);
        return items;
    }

    private void Memo(long index)
    {
        if (_memo.Count > 10_000_000) throw Bad("memo too large");
        _memo[index] = Peek();
    }

    private object Recall(long index) => _memo.TryGetValue(index, out var v) ? v : throw Bad($"memo entry {index} was never stored");

    private int U8() => Take(1)[0];

    private ReadOnlySpan<byte> Take(int n)
    {
        if (n < 0 || n > _data.Length - _pos) throw Bad($"needs {n} more bytes but the pickle has {_data.Length - _pos} (truncated?)");
        var s = _data.AsSpan(_pos, n);
        _pos += n;
        return s;
    }

    private int Length(ulong n) => n <= (ulong)(_data.Length - _pos) ? (int)n : throw Bad($"a string of {n} bytes runs past the end of the pickle");

    private string Utf8(int n)
    {
        try { return new UTF8Encoding(false, true).GetString(Take(n)); }
        catch (DecoderFallbackException) { throw Bad("a string is not valid UTF-8"); }
    }

    private long Long(int n)
    {
        if (n > 8) throw Bad($"an integer of {n} bytes does not fit in 64 bits");
        var b = Take(n);
        long v = 0;
        for (int i = n - 1; i >= 0; i--) v = (v << 8) | b[i];
        if (n is > 0 and < 8 && (b[n - 1] & 0x80) != 0) v -= 1L << (8 * n); // two's complement sign
        return v;
    }

    private string Line()
    {
        int end = Array.IndexOf(_data, (byte)'\n', _pos);
        if (end < 0 || end - _pos > 256) throw Bad("GLOBAL name is not a short newline-terminated line");
        string s = Encoding.ASCII.GetString(_data, _pos, end - _pos);
        _pos = end + 1;
        return s;
    }
}
