"""The ext2 on-disk format: superblock, group descriptors, inodes, directory entries.

Mechanism. Each structure is kept as the bytes it has on disk plus a table of the fields
this engine uses (name -> struct format, offset), so fields it does not know survive a
read-modify-write unchanged. `Superblock` and `GroupDesc` wrap a bytearray; `Inode` decodes
the 128 bytes of the original inode and keeps what follows (`extra`: i_extra_isize and the
extended fields of 256-byte inodes) as it was.

Contract: `check_features` is the one place that decides whether an image is supported.
Supported is revision 1 ext2 as host `mke2fs -t ext2` makes it: incompat `filetype` only;
ro_compat `sparse_super` and `large_file`; compat flags are allowed by definition (a
`dir_index` directory is written as a linear one: its index flag is cleared on change, as
the format allows; `resize_inode` and `ext_attr` blocks are left alone, an inode's xattr
block reference is dropped when the inode is freed). Anything else is refused, naming the
flag. Little-endian throughout.

Pure data: no I/O, no state beyond the objects themselves.
"""
from __future__ import annotations

import errno
import struct
from typing import NamedTuple

MAGIC = 0xEF53
SUPER_OFFSET = 1024          # the superblock's byte offset on the device, any block size
SUPER_SIZE = 1024
ROOT_INO = 2
N_DIRECT = 12
IND, DIND, TIND = 12, 13, 14
VALID_FS = 1                 # s_state: cleanly unmounted
INDEX_FL = 0x1000            # i_flags: the directory has an htree index
FAST_LINK_MAX = 59           # a symlink target of at most this many bytes lives in i_block

COMPAT = {0x1: "dir_prealloc", 0x2: "imagic_inodes", 0x4: "has_journal", 0x8: "ext_attr",
          0x10: "resize_inode", 0x20: "dir_index", 0x200: "sparse_super2"}
INCOMPAT = {0x1: "compression", 0x2: "filetype", 0x4: "needs_recovery", 0x8: "journal_dev",
            0x10: "meta_bg", 0x40: "extent", 0x80: "64bit", 0x100: "mmp", 0x200: "flex_bg",
            0x400: "ea_inode", 0x1000: "dirdata", 0x2000: "metadata_csum_seed",
            0x4000: "large_dir", 0x8000: "inline_data", 0x10000: "encrypt",
            0x20000: "casefold"}
RO_COMPAT = {0x1: "sparse_super", 0x2: "large_file", 0x4: "btree_dir", 0x8: "huge_file",
             0x10: "uninit_bg", 0x20: "dir_nlink", 0x40: "extra_isize", 0x100: "quota",
             0x200: "bigalloc", 0x400: "metadata_csum", 0x1000: "readonly",
             0x2000: "project", 0x8000: "verity", 0x10000: "orphan_present"}
INCOMPAT_OK = 0x2
RO_COMPAT_OK = 0x1 | 0x2
FILETYPE = 0x2
SPARSE_SUPER = 0x1
LARGE_FILE = 0x2

# directory entry file types (incompat filetype)
FT_UNKNOWN, FT_REG, FT_DIR, FT_CHR, FT_BLK, FT_FIFO, FT_SOCK, FT_SYMLINK = range(8)


class FsError(OSError):
    """A file system operation failed; `errno` says how (ENOENT, ENOSPC, ENOTEMPTY…)."""

    def __init__(self, err: int, what: str = "") -> None:
        super().__init__(err, f"{errno.errorcode.get(err, err)}: {what}")


class FormatError(FsError):
    """The image is not ext2 this engine can use (bad magic, unsupported feature flag,
    inconsistent geometry): the image's fault or the caller's choice of image, never a bug."""

    def __init__(self, what: str) -> None:
        super().__init__(errno.EINVAL, what)


class _Fields:
    """A bytearray with named little-endian fields at fixed offsets."""
    FIELDS: dict[str, tuple[str, int]] = {}

    def __init__(self, raw: bytes | bytearray) -> None:
        self.raw = bytearray(raw)

    def get(self, name: str) -> int:
        fmt, off = self.FIELDS[name]
        return int(struct.unpack_from("<" + fmt, self.raw, off)[0])

    def set(self, name: str, value: int) -> None:
        fmt, off = self.FIELDS[name]
        struct.pack_into("<" + fmt, self.raw, off, value)


class Superblock(_Fields):
    FIELDS = {
        "inodes_count": ("I", 0), "blocks_count": ("I", 4), "r_blocks_count": ("I", 8),
        "free_blocks_count": ("I", 12), "free_inodes_count": ("I", 16),
        "first_data_block": ("I", 20), "log_block_size": ("I", 24),
        "blocks_per_group": ("I", 32), "inodes_per_group": ("I", 40), "mtime": ("I", 44),
        "wtime": ("I", 48), "mnt_count": ("H", 52), "magic": ("H", 56), "state": ("H", 58),
        "rev_level": ("I", 76), "first_ino": ("I", 84), "inode_size": ("H", 88),
        "feature_compat": ("I", 92), "feature_incompat": ("I", 96),
        "feature_ro_compat": ("I", 100), "desc_size": ("H", 254),
    }

    @property
    def block_size(self) -> int:
        return 1024 << self.get("log_block_size")

    @property
    def groups(self) -> int:
        data = self.get("blocks_count") - self.get("first_data_block")
        return -(-data // self.get("blocks_per_group"))


def _names(bits: int, table: dict[int, str]) -> list[str]:
    return [table.get(1 << i, f"unknown bit 0x{1 << i:x}") for i in range(32) if bits >> i & 1]


def check_features(sb: Superblock) -> None:
    """Raise FormatError unless this engine can read and write the image (module docstring)."""
    if sb.get("magic") != MAGIC:
        raise FormatError(f"not an ext2 file system (magic 0x{sb.get('magic'):04x}, "
                          f"want 0x{MAGIC:04x})")
    if sb.get("rev_level") != 1:
        raise FormatError(f"revision {sb.get('rev_level')} is not supported (only revision 1, "
                          f"as mke2fs makes)")
    bad = _names(sb.get("feature_incompat") & ~INCOMPAT_OK, INCOMPAT)
    bad += _names(sb.get("feature_ro_compat") & ~RO_COMPAT_OK, RO_COMPAT)
    if bad:
        raise FormatError(f"unsupported feature flag(s): {', '.join(bad)} (this engine "
                          f"writes plain ext2: filetype, sparse_super, large_file)")
    if sb.get("log_block_size") > 6:
        raise FormatError(f"block size 1024<<{sb.get('log_block_size')} is not supported")
    isz = sb.get("inode_size")
    if isz < 128 or isz & (isz - 1) or isz > sb.block_size:
        raise FormatError(f"inode size {isz} is not supported")
    if sb.get("blocks_per_group") == 0 or sb.get("inodes_per_group") == 0:
        raise FormatError("zero blocks or inodes per group")


class GroupDesc(_Fields):
    SIZE = 32
    FIELDS = {
        "block_bitmap": ("I", 0), "inode_bitmap": ("I", 4), "inode_table": ("I", 8),
        "free_blocks_count": ("H", 12), "free_inodes_count": ("H", 14),
        "used_dirs_count": ("H", 16), "flags": ("H", 18),
    }


_INODE = struct.Struct("<HHIIIIIHHIII15IIIIIHHHH4x")
_INODE_KEYS = ("mode", "uid", "size", "atime", "ctime", "mtime", "dtime", "gid", "links",
               "sectors", "flags", "osd1")


class Inode:
    """One inode, decoded; `pack()` gives its bytes (the first 128 bytes re-encoded, the
    rest kept). `size` combines i_size and i_size_high; uid/gid their high halves; `sectors`
    is i_blocks (512-byte units, data and indirect blocks both)."""

    __slots__ = ("ino", "mode", "uid", "size", "atime", "ctime", "mtime", "dtime", "gid",
                 "links", "sectors", "flags", "osd1", "block", "generation", "file_acl",
                 "faddr", "blocks_hi", "acl_hi", "extra")

    def __init__(self, ino: int, raw: bytes | bytearray) -> None:
        v = _INODE.unpack_from(raw, 0)
        self.ino = ino
        (self.mode, uid, size, self.atime, self.ctime, self.mtime, self.dtime, gid,
         self.links, self.sectors, self.flags, self.osd1) = v[:12]
        self.block: list[int] = list(v[12:27])
        self.generation, self.file_acl, size_high, self.faddr = v[27:31]
        self.blocks_hi, self.acl_hi, uid_hi, gid_hi = v[31:35]
        self.uid = uid | uid_hi << 16
        self.gid = gid | gid_hi << 16
        self.size = size | size_high << 32 if self.mode & 0o170000 != 0o040000 else size
        self.extra = bytes(raw[128:])

    def pack(self) -> bytes:
        high = self.size >> 32 if self.mode & 0o170000 != 0o040000 else 0
        return _INODE.pack(self.mode, self.uid & 0xFFFF, self.size & 0xFFFF_FFFF, self.atime,
                           self.ctime, self.mtime, self.dtime, self.gid & 0xFFFF, self.links,
                           self.sectors, self.flags, self.osd1, *self.block, self.generation,
                           self.file_acl, high, self.faddr, self.blocks_hi, self.acl_hi,
                           self.uid >> 16, self.gid >> 16) + self.extra

    @classmethod
    def fresh(cls, ino: int, size: int) -> "Inode":
        """A zeroed inode of `size` bytes; a large inode gets i_extra_isize 32 (mke2fs's)."""
        raw = bytearray(size)
        if size > 128:
            struct.pack_into("<H", raw, 128, min(32, size - 128))
        return cls(ino, raw)


class DirEntry(NamedTuple):
    offset: int       # byte offset of the entry in its block
    ino: int          # 0: an unused entry
    rec_len: int
    name: bytes
    ftype: int


def rec_len_for(name_len: int) -> int:
    """The smallest record for a name: 8 header bytes, the name, padded to 4."""
    return (8 + name_len + 3) & ~3


def parse_block(data: bytes | bytearray, filetype: bool) -> list[DirEntry]:
    """The entries of one directory block, in order. FormatError on a broken chain."""
    out, pos, size = [], 0, len(data)
    while pos < size:
        ino, rec, nlen, ft = struct.unpack_from("<IHBB", data, pos)
        if not filetype:
            nlen, ft = nlen | ft << 8, FT_UNKNOWN
        if rec < 8 or rec % 4 or pos + rec > size or (ino and 8 + nlen > rec):
            raise FormatError(f"corrupt directory entry at offset {pos} (rec_len {rec}, "
                              f"name_len {nlen})")
        out.append(DirEntry(pos, ino, rec, bytes(data[pos + 8:pos + 8 + nlen]), ft))
        pos += rec
    return out


def pack_entry(ino: int, rec_len: int, name: bytes, ftype: int, filetype: bool) -> bytes:
    """One entry's header and name (the caller places it and owns the rest of rec_len)."""
    if filetype:
        return struct.pack("<IHBB", ino, rec_len, len(name), ftype) + name
    return struct.pack("<IHH", ino, rec_len, len(name)) + name


def ftype_of(mode: int) -> int:
    return {0o100000: FT_REG, 0o040000: FT_DIR, 0o020000: FT_CHR, 0o060000: FT_BLK,
            0o010000: FT_FIFO, 0o140000: FT_SOCK, 0o120000: FT_SYMLINK}.get(mode & 0o170000,
                                                                            FT_UNKNOWN)


def has_super_backup(group: int, sparse: bool) -> bool:
    """Whether `group` holds a superblock copy (sparse_super: 0, 1, powers of 3, 5, 7)."""
    if not sparse or group <= 1:
        return True
    for p in (3, 5, 7):
        n = p
        while n < group:
            n *= p
        if n == group:
            return True
    return False
