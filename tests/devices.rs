//! Block devices and image files that something else is using: a device with a mounted
//! filesystem is backed up from the disk, not from pages an earlier read left in its cache;
//! an in-place restore refuses a device mounted under another name, held by another program
//! or read-only, and an image file a loop device reads, and writes nothing; a version smaller
//! than its device leaves (and names) the rest, and one larger than its image file grows it.

use crate::util::*;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

/// `backup --json --name SERIES ARGS...` with the key file.
fn backup(v: &Vault, series: &str, args: &[&str]) -> Run {
    let mut all = vec!["backup", "--json", "--name", series];
    all.extend_from_slice(args);
    key_file_run(v, None, &all)
}

/// `len` bytes of `word` repeated: data that says which write it came from.
fn pattern(word: &[u8; 16], len: usize) -> Vec<u8> {
    word.iter().copied().cycle().take(len).collect()
}

/// A filesystem frozen for a test (`fsfreeze -f`), thawed when dropped, even on a panic.
struct Frozen<'a>(&'a Path);

impl<'a> Frozen<'a> {
    fn new(at: &'a Path) -> Frozen<'a> {
        tool("fsfreeze", &["-f", s(at)]);
        Frozen(at)
    }
}

impl Drop for Frozen<'_> {
    fn drop(&mut self) {
        let _ = std::process::Command::new("fsfreeze")
            .args(["-u", s(self.0)])
            .status();
    }
}

/// A device a filesystem is mounted on holds in its page cache what a first backup read. The
/// filesystem writes its files around that cache, so a second backup that read through it
/// stored the file's old contents (exit 0, nothing said). It must store what is on the disk,
/// and say that the device is mounted read-write.
#[test]
fn a_backup_of_a_mounted_device_holds_what_is_on_the_disk() {
    let v = key_file_vault();
    let tree = v.path("tree");
    fs::create_dir(&tree).expect("creating the tree");
    let img = v.path("fs.img");
    make_ext4(&tree, &img, 64);
    let dev = LoopDevice::attach(&img);
    let mnt = Mount::device(dev.path(), v.path("mnt"));
    let file = mnt.path.join("a.bin");
    let old = pattern(b"old contents ...", 8 << 20);
    let new = pattern(b"NEW CONTENTS !!!", 8 << 20);
    fs::write(&file, &old).expect("writing the file");
    tool("sync", &[] as &[&str]);

    let first = backup(&v, "dev", &[dev.path()]).ok();
    assert!(
        first.stderr.contains("is mounted read-write at") && first.stderr.contains(s(&mnt.path)),
        "no warning that the source is mounted: {}",
        first.stderr
    );
    // Another program (dd, or a backup by an older blockvault) reads the device through its
    // page cache.
    let cached = fs::read(dev.path()).expect("reading the device");
    assert_eq!(cached.len(), 64 << 20);
    // Rewritten in place, through the filesystem, and on the disk before the backup.
    let f = OpenOptions::new()
        .write(true)
        .open(&file)
        .expect("opening the file");
    f.write_all_at(&new, 0).expect("rewriting the file");
    f.sync_all().expect("flushing the file");
    drop(f);
    {
        let _frozen = Frozen::new(&mnt.path);
        backup(&v, "dev", &[dev.path()]).ok();
    }
    drop(mnt);
    drop(dev);

    let out = v.path("restored.img");
    key_file_run(&v, None, &["restore", "--name", "dev", s(&out)]).ok();
    fsck(&out);
    let got = v.path("a.bin.out");
    ext4_extract(&out, Path::new("a.bin"), &got);
    assert!(
        fs::read(&got).expect("the restored file") == new,
        "the backup holds the file's old contents, read from the device's cache"
    );
}

/// An in-place restore writes nothing onto a device in use, however it is in use: mounted
/// under another device node, held exclusively by another program, or read-only; nor onto an
/// image file a loop device reads. Each is refused with what uses it.
#[test]
fn an_in_place_restore_refuses_a_device_or_image_in_use() {
    let v = key_file_vault();
    let src = v.path("src.img");
    write_random_file(&src, 3, 8 * MIB);
    backup(&v, "img", &[s(&src)]).ok();
    let restore = |target: &str| {
        key_file_run(
            &v,
            None,
            &["restore", "--name", "img", "--in-place", target],
        )
    };

    // Mounted through another node for the same device.
    let tree = v.path("tree");
    fs::create_dir(&tree).expect("creating the tree");
    fs::write(tree.join("precious"), b"keep me").expect("writing a file");
    let fs_img = v.path("fs.img");
    make_ext4(&tree, &fs_img, 16);
    let dev = LoopDevice::attach(&fs_img);
    let rdev = fs::metadata(dev.path()).expect("the device").rdev();
    let alias = v.path("alias");
    tool(
        "mknod",
        &[
            s(&alias),
            "b",
            &libc::major(rdev).to_string(),
            &libc::minor(rdev).to_string(),
        ],
    );
    {
        let mnt = Mount::device(s(&alias), v.path("mnt"));
        restore(dev.path()).error(
            1,
            &[
                dev.path(),
                "is mounted at",
                s(&mnt.path),
                s(&alias),
                "nothing was written",
            ],
        );
    }

    // Held exclusively by another program (as a swap area or a RAID member would be).
    {
        let _held = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_EXCL)
            .open(dev.path())
            .expect("opening the device exclusively");
        restore(dev.path()).error(1, &[dev.path(), "is in use", "nothing was written"]);
    }

    // The image file behind the loop device.
    restore(s(&fs_img)).error(
        1,
        &[
            s(&fs_img),
            "in use by loop device",
            dev.path(),
            "nothing was written",
        ],
    );
    drop(dev);
    // Mounting changed the superblock; what must be as it was is the filesystem and its file.
    let whole = |img: &Path| {
        fsck(img);
        let out = v.path("precious.out");
        ext4_extract(img, Path::new("precious"), &out);
        assert_eq!(fs::read(&out).expect("the file"), b"keep me");
    };
    whole(&fs_img);
    let before = fs::read(&fs_img).expect("the filesystem image");

    // Read-only.
    let ro = LoopDevice::attach_with(&fs_img, &["-r"]);
    restore(ro.path()).error(1, &[ro.path(), "read-only device", "nothing was written"]);
    drop(ro);
    assert!(
        fs::read(&fs_img).expect("the filesystem image") == before,
        "a refused restore changed the filesystem"
    );
}

/// A version smaller than the device it is restored onto leaves the device's last bytes as
/// they were, and says so; a version larger than the image file it is restored onto grows the
/// file (a device cannot grow, and is refused).
#[test]
fn in_place_sizes_a_smaller_version_and_a_smaller_file() {
    let v = key_file_vault();
    let src = v.path("src.img");
    write_random_file(&src, 5, 6 * MIB);
    backup(&v, "img", &[s(&src)]).ok();

    let big = v.path("big.img");
    write_random_file(&big, 6, 10 * MIB);
    let tail = fs::read(&big).expect("the image")[6 << 20..].to_vec();
    let dev = LoopDevice::attach(&big);
    let run = key_file_run(
        &v,
        None,
        &["restore", "--name", "img", "--in-place", dev.path()],
    )
    .ok();
    assert!(
        run.stderr.contains("larger than version") && run.stderr.contains(&(4 * MIB).to_string()),
        "nothing said about the device's last 4 MiB: {}",
        run.stderr
    );
    drop(dev);
    let now = fs::read(&big).expect("the image");
    assert!(now[..6 << 20] == fs::read(&src).expect("the source")[..]);
    assert!(now[6 << 20..] == tail[..], "the rest of the device changed");

    let small = v.path("small.img");
    write_random_file(&small, 7, 2 * MIB);
    let small_dev = LoopDevice::attach(&small);
    key_file_run(
        &v,
        None,
        &["restore", "--name", "img", "--in-place", small_dev.path()],
    )
    .error(
        1,
        &[
            small_dev.path(),
            "smaller than version",
            "nothing was written",
        ],
    );
    drop(small_dev);
    key_file_run(
        &v,
        None,
        &["restore", "--name", "img", "--in-place", s(&small)],
    )
    .ok();
    assert_same_contents(&src, &small);
}
