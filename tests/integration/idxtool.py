#!/usr/bin/env python3
"""Read, change and write ocifs's layer index files (OCIFSLX2, as the man
page documents them), to make forgeries of a genuine published index.

    idxtool.py IN OUT MODE [ARG...]

IN and OUT are decompressed index files. MODE:
  setuid PATH          PATH becomes 04755, owner 0:0, with a security.capability xattr
  remove PATH          the entry PATH is left out (hidden file, removed whiteout)
  add-whiteout PATH    an entry PATH (e.g. etc/.wh.passwd) added at the last entry's bytes
  devices              a char device dev/mem1 (1,1) 0666 and a FIFO dev/fifo added
  symlinks             symlinks etc/sh -> /etc/shadow and up -> ../../../.. added
  long-name TARGET     a 0644 file with a 120-character name at TARGET's bytes
  hard-link TARGET     a hard link pub/alias to TARGET, 0644
  rename-long PATH     PATH renamed in place to its directory and 120 's', 0644
  window               a byte of every gzip checkpoint's window after the first changed
  opaque DIR           an opaque marker DIR/.wh..wh..opq added
  dump                 print the entries (type mode uid:gid size offset path [-> link])
"""
import struct
import sys
import zlib


class Reader:
    def __init__(self, b):
        self.b, self.p = b, 0

    def take(self, n):
        v = self.b[self.p : self.p + n]
        assert len(v) == n, "index cut short"
        self.p += n
        return v

    def u8(self):
        return self.take(1)[0]

    def u32(self):
        return struct.unpack("<I", self.take(4))[0]

    def i64(self):
        return struct.unpack("<q", self.take(8))[0]

    def s(self):
        n = self.u32()
        return None if n == 0xFFFFFFFF else bytes(self.take(n))


def decode(b):
    r = Reader(b)
    assert r.take(8) == b"OCIFSLX2", "not an OCIFSLX2 index"
    x = {"codec": r.u32(), "zero": r.u32(), "digest": r.s(), "blob_size": r.i64(),
         "tar_size": r.i64(), "tar_digest": r.take(72), "span": r.u32()}
    x["spans"] = [r.take(32) for _ in range(r.u32())]
    x["cps"] = []
    for _ in range(r.u32()):
        out, inp, bits = r.i64(), r.i64(), r.u32()
        x["cps"].append([out, inp, bits, bytearray(r.take(r.u32()))])
    x["entries"] = []
    for _ in range(r.u32()):
        e = {"type": r.u8(), "mode": r.u32(), "uid": r.u32(), "gid": r.u32(),
             "mtime": r.i64(), "size": r.i64(), "offset": r.i64(), "major": r.u32(),
             "minor": r.u32(), "path": r.s(), "link": r.s()}
        e["xattrs"] = [(r.s(), r.s()) for _ in range(r.u32())]
        x["entries"].append(e)
    crc = r.u32()
    assert crc == zlib.crc32(b[: r.p - 4]) & 0xFFFFFFFF, "bad CRC"
    assert r.p == len(b), "bytes after the CRC"
    return x


def encode(x):
    o = bytearray(b"OCIFSLX2")
    u32 = lambda v: o.extend(struct.pack("<I", v))
    i64 = lambda v: o.extend(struct.pack("<q", v))

    def s(v):
        if v is None:
            u32(0xFFFFFFFF)
        else:
            u32(len(v))
            o.extend(v)

    u32(x["codec"]); u32(x["zero"]); s(x["digest"]); i64(x["blob_size"]); i64(x["tar_size"])
    o.extend(x["tar_digest"]); u32(x["span"]); u32(len(x["spans"]))
    for sp in x["spans"]:
        o.extend(sp)
    u32(len(x["cps"]))
    for out, inp, bits, win in x["cps"]:
        i64(out); i64(inp); u32(bits); u32(len(win)); o.extend(win)
    u32(len(x["entries"]))
    for e in x["entries"]:
        o.append(e["type"])
        u32(e["mode"]); u32(e["uid"]); u32(e["gid"]); i64(e["mtime"]); i64(e["size"])
        i64(e["offset"]); u32(e["major"]); u32(e["minor"]); s(e["path"]); s(e["link"])
        u32(len(e["xattrs"]))
        for k, v in e["xattrs"]:
            s(k); s(v)
    u32(zlib.crc32(bytes(o)) & 0xFFFFFFFF)
    return bytes(o)


def clean(p):
    p = p.decode()
    while p.startswith("./"):
        p = p[2:]
    return p.strip("/")


def find(x, path):
    for e in x["entries"]:
        if clean(e["path"]) == path:
            return e
    sys.exit("idxtool: no entry " + path)


def new_entry(x, path, typ, mode, size=0, offset=None, link=None, major=0, minor=0):
    last = x["entries"][-1]
    return {"type": ord(typ), "mode": mode, "uid": 0, "gid": 0, "mtime": last["mtime"],
            "size": size, "offset": last["offset"] if offset is None else offset,
            "major": major, "minor": minor, "path": path.encode(),
            "link": link.encode() if link else None, "xattrs": []}


def main():
    src, out, mode, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    x = decode(open(src, "rb").read())
    ents = x["entries"]
    if mode == "dump":
        for e in ents:
            print(chr(e["type"]), oct(e["mode"]), "%d:%d" % (e["uid"], e["gid"]), e["size"],
                  e["offset"], e["path"].decode(), "->", (e["link"] or b"").decode())
        return
    if mode == "setuid":
        e = find(x, args[0])
        e["mode"], e["uid"], e["gid"] = 0o4755, 0, 0
        # cap_setuid, cap_net_raw, cap_dac_override: VFS_CAP_REVISION_2
        e["xattrs"].append((b"security.capability",
                            struct.pack("<IIIII", 0x02000001, 0x86, 0, 0, 0)))
    elif mode == "remove":
        e = find(x, args[0])
        ents.remove(e)
    elif mode == "add-whiteout":
        ents.append(new_entry(x, args[0], "0", 0o644))
    elif mode == "devices":
        ents.append(new_entry(x, "dev/mem1", "3", 0o666, major=1, minor=1))
        ents.append(new_entry(x, "dev/fifo", "6", 0o666))
    elif mode == "symlinks":
        ents.append(new_entry(x, "etc/sh", "2", 0o777, link="/etc/shadow"))
        ents.append(new_entry(x, "up", "2", 0o777, link="../../../.."))
    elif mode == "long-name":
        t = find(x, args[0])
        ents.append(new_entry(x, "pub/" + "l" * 116, "0", 0o644, t["size"], t["offset"]))
    elif mode == "hard-link":
        ents.append(new_entry(x, "pub/alias", "1", 0o644, link=args[0]))
    elif mode == "rename-long":
        e = find(x, args[0])
        e["path"] = (args[0].rsplit("/", 1)[0] + "/" + "s" * 120).encode()
        e["mode"] = 0o644
    elif mode == "window":
        assert len(x["cps"]) > 1, "one checkpoint only"
        for cp in x["cps"][1:]:
            w = cp[3]
            for i in range(len(w) - 4096, len(w), 7):
                w[i] ^= 0x20
    elif mode == "opaque":
        ents.append(new_entry(x, args[0] + "/.wh..wh..opq", "0", 0o644))
    else:
        sys.exit("idxtool: unknown mode " + mode)
    open(out, "wb").write(encode(x))


if __name__ == "__main__":
    main()
