"""cutfs: a test filesystem for power cuts (FUSE, through mfusepy and Debian's fuse3).

    python -m cutfs BACKING MOUNTPOINT [--seed N] [--keep 0.0..1.0]

Everything written through MOUNTPOINT lands in BACKING only when it is fsynced (fsync or
fdatasync of the file): until then it lives in this process's memory, page by page, as a
disk's volatile cache and the kernel's page cache would hold it. A power cut is this
process dying: SIGKILL loses every unsynced write; SIGUSR1 first lets a random share
(`--keep`, seeded) of the unsynced pages reach the disk, in no particular order, and tears
one of them at a 512-byte sector (what a disk may do as the power fails), then exits. The
processes above must be SIGKILLed at the same moment (they would not outlive the power);
then `fusermount3 -u -z MOUNTPOINT` and a new cutfs on the same BACKING is the reboot.

Metadata (create, unlink, rename, mkdir, chmod) reaches BACKING at once, as a journaling
filesystem commits it; a file's size is data (an unsynced append is lost with the cut). The
model is LazyFS's (Jepsen's), written here for the store's and the sensor's files: SQLite's
database, its WAL and -shm, the sensor's journal.

    mount = CutMount(backing, mountpoint).start()    # scripts/cutfs/mount.py
    ...                                              # run things on mountpoint
    mount.cut(keep=0.5)                              # the power fails; then mount.start() again
"""
