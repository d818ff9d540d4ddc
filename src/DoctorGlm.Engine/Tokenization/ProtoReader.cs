using System.Buffers.Binary;
using System.Text;

namespace DoctorGlm.Engine.Tokenization;

/// <summary>
/// A minimal protobuf wire-format reader: just enough for SentencePiece's ModelProto (varints, fixed32,
/// length-delimited fields; unknown fields skipped). Every error throws <see cref="InvalidDataException"/>
/// naming the source and the absolute byte offset, so a truncated or foreign file is diagnosable.
/// </summary>
internal ref struct ProtoReader
{
    private readonly ReadOnlySpan<byte> _data;
    private readonly string _source;
    private readonly int _base; // absolute offset of _data[0] in the file, for messages
    private readonly string _context;
    private int _pos;

    public ProtoReader(ReadOnlySpan<byte> data, string source, int baseOffset, string context)
    {
        _data = data;
        _source = source;
        _base = baseOffset;
        _context = context;
        _pos = 0;
    }

    public readonly bool End => _pos >= _data.Length;

    /// <summary>Absolute offset of the next byte.</summary>
    public readonly int Offset => _base + _pos;

    public readonly InvalidDataException Error(string what) =>
        new($"{_source}: malformed SentencePiece model at byte {Offset} ({_context}): {what}");

    /// <summary>Reads a field key; returns the field number and wire type.</summary>
    public (int Field, int WireType) ReadKey()
    {
        int at = _pos;
        ulong key = ReadVarint();
        int field = (int)(key >> 3);
        int wire = (int)(key & 7);
        if (field == 0 || key >> 3 > int.MaxValue)
        {
            _pos = at;
            throw Error($"invalid field number {key >> 3}");
        }
        return (field, wire);
    }

    public ulong ReadVarint()
    {
        ulong result = 0;
        for (int shift = 0; shift < 64; shift += 7)
        {
            if (_pos >= _data.Length) throw Error("truncated varint");
            byte b = _data[_pos++];
            result |= (ulong)(b & 0x7F) << shift;
            if ((b & 0x80) == 0) return result;
        }
        throw Error("varint longer than 10 bytes");
    }

    /// <summary>An int32 field (negative values are sign-extended 10-byte varints on the wire).</summary>
    public int ReadInt32() => unchecked((int)ReadVarint());

    public bool ReadBool() => ReadVarint() != 0;

    public float ReadFloat()
    {
        if (_pos + 4 > _data.Length) throw Error("truncated fixed32");
        float v = BinaryPrimitives.ReadSingleLittleEndian(_data.Slice(_pos, 4));
        _pos += 4;
        return v;
    }

    /// <summary>Reads a length-delimited payload; <paramref name="offset"/> is its absolute start.</summary>
    public ReadOnlySpan<byte> ReadBytes(out int offset)
    {
        ulong len = ReadVarint();
        if (len > (ulong)(_data.Length - _pos)) throw Error($"length-delimited field of {len} bytes runs past the end ({_data.Length - _pos} left)");
        offset = _base + _pos;
        var s = _data.Slice(_pos, (int)len);
        _pos += (int)len;
        return s;
    }

    public string ReadString()
    {
        int at = _pos;
        var bytes = ReadBytes(out _);
        try { return new UTF8Encoding(false, true).GetString(bytes); }
        catch (DecoderFallbackException)
        {
            _pos = at;
            throw Error("string field is not valid UTF-8");
        }
    }

    /// <summary>Checks the wire type of a known field (a mismatch means a foreign or corrupt file).</summary>
    public readonly void Expect(int field, int wire, int expected)
    {
        if (wire != expected) throw Error($"field {field} has wire type {wire}, expected {expected}");
    }

    public void Skip(int field, int wire)
    {
        switch (wire)
        {
            case 0: ReadVarint(); break;
            case 1:
                if (_pos + 8 > _data.Length) throw Error($"truncated fixed64 field {field}");
                _pos += 8;
                break;
            case 2: ReadBytes(out _); break;
            case 5:
                if (_pos + 4 > _data.Length) throw Error($"truncated fixed32 field {field}");
                _pos += 4;
                break;
            default: throw Error($"unsupported wire type {wire} for field {field}");
        }
    }
}
