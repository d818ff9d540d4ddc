using System.Buffers.Binary;
using System.Text;

namespace DoctorGlm.Engine.Tests.Cuda;

/// <summary>
/// Reads what ptxas recorded about each kernel of a CUBIN (an ELF image): the registers a thread uses, from the
/// EIATTR_REGCOUNT attributes of the <c>.nv.info</c> sections. Enough to check, without a GPU, that every kernel fits
/// the register file at the block size it is launched with.
/// </summary>
internal static class CubinInfo
{
    private const byte EifmtSval = 0x04, EifmtHval = 0x03, EifmtBval = 0x02, EiattrRegcount = 0x2f;

    /// <summary>Kernel name → registers per thread.</summary>
    public static Dictionary<string, int> RegisterCounts(byte[] image)
    {
        var d = image.AsSpan();
        long shoff = BinaryPrimitives.ReadInt64LittleEndian(d[0x28..]);
        int shentsize = BinaryPrimitives.ReadUInt16LittleEndian(d[0x3A..]), shnum = BinaryPrimitives.ReadUInt16LittleEndian(d[0x3C..]);
        int shstrndx = BinaryPrimitives.ReadUInt16LittleEndian(d[0x3E..]);
        var sections = Enumerable.Range(0, shnum).Select(i =>
        {
            var h = image.AsSpan((int)(shoff + (long)i * shentsize));
            return (Name: BinaryPrimitives.ReadUInt32LittleEndian(h), Offset: BinaryPrimitives.ReadInt64LittleEndian(h[0x18..]),
                Size: BinaryPrimitives.ReadInt64LittleEndian(h[0x20..]), Link: BinaryPrimitives.ReadUInt32LittleEndian(h[0x28..]));
        }).ToArray();
        string Str(long table, long at)
        {
            int start = (int)(table + at), end = Array.IndexOf(image, (byte)0, start);
            return Encoding.ASCII.GetString(image, start, end - start);
        }
        var names = sections.Select(s => Str(sections[shstrndx].Offset, s.Name)).ToArray();
        var symtab = sections[Array.IndexOf(names, ".symtab")];
        var symbols = Enumerable.Range(0, (int)(symtab.Size / 24))
            .Select(i => Str(sections[symtab.Link].Offset, BinaryPrimitives.ReadUInt32LittleEndian(image.AsSpan((int)(symtab.Offset + i * 24L))))).ToArray();
        var regs = new Dictionary<string, int>();
        for (int s = 0; s < sections.Length; s++)
        {
            if (!names[s].StartsWith(".nv.info", StringComparison.Ordinal)) continue;
            long p = sections[s].Offset, end = p + sections[s].Size;
            while (p < end)
            {
                byte format = image[p], attribute = image[p + 1];
                if (format == EifmtSval)
                {
                    int size = BinaryPrimitives.ReadUInt16LittleEndian(d[(int)(p + 2)..]);
                    if (attribute == EiattrRegcount)
                        regs[symbols[BinaryPrimitives.ReadInt32LittleEndian(d[(int)(p + 4)..])]] = BinaryPrimitives.ReadInt32LittleEndian(d[(int)(p + 8)..]);
                    p += 4 + size;
                }
                else p += format == EifmtHval ? 4 : format == EifmtBval ? 3 : 2;
            }
        }
        return regs;
    }
}
