"""ext2: a reader and writer of the ext2 file system, as a library.

Python has readers of ext2 but no writer; this is both, for the format host
`mke2fs -t ext2` makes (layout.py says which features). The personality mounts it over the
DDE block server (device.BlockClientDevice); tests and tools over an image file
(device.ImageDevice), with host e2fsck and debugfs as judges.

Modules, one mechanism each:
- layout.py   the on-disk structures and the feature check; FsError, FormatError
- device.py   the block devices and the write-back buffer cache
- volume.py   superblock, group descriptors, bitmaps and free counts, the inode table
- blockmap.py an inode's direct/indirect block map, file bytes, truncate
- dirs.py     directory entries: lookup, add, remove
- rename.py   rename(2)
- api.py      the records the API answers, name conversion, the read-only guard
- fs.py       Ext2: the operations by inode and name (the public surface)
- bench.py    a task: the engine's sequential rate against the block server's (l4run bench linux)

ext2 has no journal: after a crash (kill -9 of the writer, power loss) the image is
consistent only after `e2fsck -fy`; the engine refuses nothing because of that, but
`Ext2.vol.was_clean` says whether the last unmount was clean.
"""
from .device import BlockClientDevice, BufferCache, Device, ImageDevice
from .api import Stat, StatFs
from .fs import Ext2
from .layout import ROOT_INO, FormatError, FsError

__all__ = ["Ext2", "Stat", "StatFs", "Device", "ImageDevice", "BlockClientDevice",
           "BufferCache", "FsError", "FormatError", "ROOT_INO"]
