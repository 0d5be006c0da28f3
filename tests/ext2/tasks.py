"""Tasks for the booted ext2 test: the engine over the DDE block server (a block client).

    session(l4, phase)   phase "write": mount the disk (BlockClientDevice), make a tree (a
                         1.5 MiB file, a sparse file, a 220-entry directory, links, symlinks,
                         a rename across directories, an unlinked open file), fsync, unmount.
                                              Then, through the personality's own layers (servers/l4linux/rootdisk.py:
                         the disk as the root file system of an fs.FileSystem), a file made
                         with an open description, a directory, a rename.
                         phase "read": mount again and report what is there.
Each logs one line "EXT2 {json}" (or "EXT2 {"error": ...}") and exits 0.
"""
from __future__ import annotations

import hashlib
import json
import traceback

from kernel.user.client import L4
from servers.block.client import BlockClient
from servers.ext2 import ROOT_INO, BlockClientDevice, Ext2

BIG = 1536 * 1024 + 5


def _blob() -> bytes:
    seed = hashlib.sha256(b"ext2 over block").digest()
    return (seed * (BIG // 32 + 1))[:BIG]


def _write(fs: Ext2) -> dict[str, object]:
    d = fs.mkdir(ROOT_INO, "data")
    big = fs.create(d, "big")
    fs.write(big, 0, _blob())
    sp = fs.create(ROOT_INO, "sparse")
    fs.write(sp, 8 << 20, b"end")
    many = fs.mkdir(ROOT_INO, "many")
    for i in range(220):
        fs.write(fs.create(many, f"f{i:03d}"), 0, b"%d" % i)
    fs.link(big, ROOT_INO, "big-link")
    fs.symlink(ROOT_INO, "fast", "data/big")
    fs.symlink(ROOT_INO, "slow", "/" + "s" * 100)
    fs.rename(many, "f000", d, "moved")
    tmp = fs.create(ROOT_INO, "open-unlinked")
    fs.write(tmp, 0, b"x" * 10000)
    fs.open(tmp)
    fs.unlink(ROOT_INO, "open-unlinked")
    fs.fsync(big)
    fs.close(tmp)
    return {"statfs": list(fs.statfs())}


def _read(fs: Ext2) -> dict[str, object]:
    big = fs.resolve("/data/big")
    return {"big_ok": fs.read(big, 0, BIG + 10) == _blob(),
            "link_same": fs.resolve("/big-link") == big == fs.resolve("/fast"),
            "nlink": fs.stat(big).nlink,
            "many": len(fs.listdir(fs.resolve("/many"))),
            "moved": fs.read(fs.resolve("/data/moved"), 0, 10).decode(),
            "sparse_tail": fs.read(fs.resolve("/sparse"), 8 << 20, 10).decode(),
            "slow": fs.readlink(fs.resolve("/slow", follow=False)).decode(),
            "hello": fs.read(fs.resolve("/data/hello"), 0, 100).decode(),
            "statfs": list(fs.statfs())}


def _personality_layers(l4: L4, bc: BlockClient) -> dict[str, object]:
    from servers.l4linux import files, fs
    from servers.l4linux.rootdisk import Disk
    disk = Disk.open(l4, client=bc)
    tree = fs.FileSystem()
    disk.mount(tree, b"/")
    files.make_devices(tree)
    try:
        tree.mkdir(b"/vfs", tree.root, 0o755)
        o = files.open_node(tree.create(b"/vfs/hello", tree.root, 0o644, True), files.O_WRONLY)
        o.refs = 1
        o.write(b"hello from the personality's layers\n")
        o.release()
        tree.rename(b"/vfs/hello", b"/data/hello", tree.root)
        tree.sync()
        return {"vfs_root": sorted(n.decode() for _, _, n in tree.listing(tree.root))}
    finally:
        disk.close()


def session(l4: L4, phase: str = "write") -> int:
    bc = BlockClient(l4, buffer=256 * 1024)
    try:
        fs = Ext2(BlockClientDevice(bc))
        res = _write(fs) if phase == "write" else _read(fs)
        res["was_clean"] = fs.vol.was_clean
        res["device_writes"] = fs.vol.cache.writes
        fs.unmount()
        if phase == "write":
            res.update(_personality_layers(l4, bc))
    except Exception as e:                     # reported to the test, which fails on it
        res = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}
    finally:
        bc.close()
    print("EXT2 " + json.dumps(res), flush=True)
    return 0


def _round_data(i: int) -> bytes:
    seed = hashlib.sha256(b"round %d" % i).digest()
    return seed * (256 * 1024 // 32)


def rounds(l4: L4, count: str = "40", pause_ms: str = "100") -> int:
    """Write /round-N (256 KiB) and fsync, `count` times; "ACK N" after each fsync
    returned (the test kills the block server meanwhile), then "EXT2 {json}"."""
    import time
    bc = BlockClient(l4, buffer=256 * 1024)
    dev = BlockClientDevice(bc)
    res: dict[str, object] = {}
    try:
        fs = Ext2(dev, cache_blocks=256)
        for i in range(int(count)):
            f = fs.create(ROOT_INO, f"round-{i}")
            fs.write(f, 0, _round_data(i))
            fs.fsync(f)
            print(f"ACK {i}", flush=True)
            time.sleep(int(pause_ms) / 1000)
        fs.unmount()
        res = {"retried": dev.retried, "reopens": bc.reopens}
    except Exception as e:
        res = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()}
    finally:
        bc.close()
    print("EXT2 " + json.dumps(res), flush=True)
    return 0


# The sequential-rate bench that was here is servers/ext2/bench.py (l4run bench linux).
