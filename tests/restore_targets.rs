//! What a restore does with its target when that is not simply a new file or an existing
//! regular file: device nodes, FIFOs, sockets and directories are refused before the
//! repository is read and are left as they were; a target in a missing directory is named
//! with that directory; any name the filesystem takes works, however long; an in-place restore
//! that fails after it may have written says that the target is part old, part new.

use crate::util::*;
use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

/// The chunk size of [`key_file_vault`].
const CHUNK_64K: usize = 64 << 10;

/// A repository with series "img" (1 MiB, 16 chunks), and its source, which lies outside the
/// scratch directory so that the scratch directory holds only what the test puts there.
fn vault_with_image() -> (Vault, PathBuf) {
    let v = key_file_vault();
    let src = v.root.path().join("src.img");
    fs::write(&src, random_bytes(1, 16 * CHUNK_64K)).expect("writing the source");
    backup(&v, "img", &src);
    (v, src)
}

fn backup(v: &Vault, series: &str, source: &Path) {
    key_file_run(v, None, &["backup", "--name", series, s(source)]).ok();
}

/// `restore --name img ARGS...` with the key file.
fn restore(v: &Vault, args: &[&str]) -> Run {
    let mut all = vec!["restore", "--name", "img"];
    all.extend_from_slice(args);
    key_file_run(v, None, &all)
}

/// Whether a file type is of one kind.
type IsKind = fn(&fs::FileType) -> bool;

#[test]
fn force_replaces_only_a_regular_file_never_a_device_fifo_or_socket() {
    let (v, src) = vault_with_image();
    let null = v.path("mynull");
    tool("mknod", &[s(&null), "c", "1", "3"]);
    let fifo = v.path("fifo");
    tool("mkfifo", &[s(&fifo)]);
    let sock = v.path("sock");
    let _listening = UnixListener::bind(&sock).expect("binding a socket");
    let targets: [(&Path, &str, IsKind); 3] = [
        (&null, "a character device", FileTypeExt::is_char_device),
        (&fifo, "a FIFO", FileTypeExt::is_fifo),
        (&sock, "a socket", FileTypeExt::is_socket),
    ];
    for (path, kind, still) in targets {
        for how in [&["--force"][..], &[], &["--in-place"]] {
            let mut args = how.to_vec();
            args.push(s(path));
            let r = restore(&v, &args).error(1, &[s(path), &format!("is {kind}")]);
            if kind != "a socket" {
                // What the user may have meant: the bytes written into the device or pipe.
                assert!(
                    r.stderr.contains(&format!("- > {}", s(path))),
                    "{how:?}: no hint at standard output: {}",
                    r.stderr
                );
            }
            let meta = fs::symlink_metadata(path).expect("the target is still there");
            assert!(
                still(&meta.file_type()),
                "{how:?}: {} is no longer {kind}",
                path.display()
            );
        }
    }
    assert_eq!(
        fs::metadata(&null).unwrap().rdev(),
        fs::metadata("/dev/null").unwrap().rdev(),
        "the device node points elsewhere"
    );
    assert_eq!(
        dir_names(&v.work),
        ["fifo", "mynull", "sock"],
        "a refused restore left a file behind"
    );
    // What --force is for.
    let file = v.path("old.img");
    fs::write(&file, b"an older copy").unwrap();
    restore(&v, &["--force", s(&file)]).ok();
    assert_same_contents(&src, &file);
}

#[test]
fn restore_onto_a_directory_is_refused_up_front_without_suggesting_force() {
    let (v, _) = vault_with_image();
    let dir = v.path("dd");
    fs::create_dir(&dir).unwrap();
    fs::write(dir.join("keep"), b"mine").unwrap();
    for how in [&[][..], &["--force"], &["--in-place"]] {
        let mut args = how.to_vec();
        args.push(s(&dir));
        let r = restore(&v, &args).error(1, &[s(&dir), "is a directory"]);
        assert!(
            !r.stderr.contains("--force"),
            "{how:?}: --force cannot help here: {}",
            r.stderr
        );
    }
    assert_eq!(dir_names(&v.work), ["dd"], "a partial file was left behind");
    assert_eq!(fs::read(dir.join("keep")).unwrap(), b"mine");
    // Before the repository is opened: a passphrase that opens nothing (this repository has
    // a key file) is not even tried.
    v.run(&["restore", "--name", "img", s(&dir)])
        .error(1, &[s(&dir), "is a directory"]);
}

#[test]
fn restore_into_a_missing_directory_names_the_target_and_its_directory() {
    let (v, _) = vault_with_image();
    let target = v.path("nodir/x/out.bin");
    let r = restore(&v, &[s(&target)]).error(
        1,
        &[
            s(&target),
            &format!("its directory {} does not exist", s(&v.path("nodir/x"))),
        ],
    );
    assert!(
        !r.stderr.contains("blockvault-partial"),
        "the hidden partial file is no business of the user's: {}",
        r.stderr
    );
    // A regular file where the directory should be.
    let file = v.path("file");
    fs::write(&file, b"x").unwrap();
    let target = file.join("out.bin");
    restore(&v, &[s(&target)]).error(
        1,
        &[
            s(&target),
            &format!("{} is a regular file, not a directory", s(&file)),
        ],
    );
    assert_eq!(dir_names(&v.work), ["file"]);
}

#[test]
fn a_target_name_as_long_as_the_filesystem_allows_restores() {
    let (v, src) = vault_with_image();
    // 250 and 255 bytes (Linux's limit), and 254 bytes of two-byte characters.
    for name in ["y".repeat(250), "y".repeat(255), "é".repeat(127)] {
        let target = v.path(&name);
        restore(&v, &[s(&target)]).ok();
        assert_same_contents(&src, &target);
        fs::write(&target, b"older").unwrap();
        restore(&v, &["--force", s(&target)]).ok();
        assert_same_contents(&src, &target);
        assert_eq!(
            dir_names(&v.work),
            std::slice::from_ref(&name),
            "a partial file was left"
        );
        fs::remove_file(&target).unwrap();
    }
    // One byte more than the filesystem takes: said so, naming the target.
    let target = v.path(&"z".repeat(256));
    restore(&v, &[s(&target)]).error(1, &[s(&target), "its name is 256 bytes"]);

    // A restore under a long name that fails deletes its (shortened) partial file.
    let chunk = v.chunk_objects()[3].clone();
    scribble(&chunk, 100, 16, 9);
    let target = v.path(&"y".repeat(250));
    restore(&v, &[s(&target)]).error(3, &["is damaged"]);
    assert!(
        dir_names(&v.work).is_empty(),
        "a failed restore left {:?}",
        dir_names(&v.work)
    );
}

#[test]
fn a_failed_in_place_restore_says_the_target_is_part_old_part_new() {
    let v = key_file_vault();
    let data = random_bytes(2, 16 * CHUNK_64K);
    let src = v.root.path().join("src.img");
    fs::write(&src, &data).unwrap();
    // The last chunk alone first, so that its object is the only one there: the damage goes
    // where the restore comes last, after the others were written.
    let tail = v.root.path().join("tail.img");
    fs::write(&tail, &data[15 * CHUNK_64K..]).unwrap();
    backup(&v, "tail", &tail);
    let last = v.chunk_objects();
    assert_eq!(last.len(), 1);
    let last = &last[0];
    backup(&v, "img", &src);
    let key = last.strip_prefix(&v.repo).unwrap().display().to_string();
    let good = fs::read(last).unwrap();
    scribble(last, good.len() as u64 / 2, 16, 3);

    let target = v.path("disk.img");
    write_random_file(&target, 4, data.len() as u64);
    let before = digest(&target);
    let r = restore(&v, &["--in-flight", "2", "--in-place", s(&target)]);
    r.error(
        3,
        &[
            &key,
            "is damaged",
            &format!(
                "{} holds some chunks of the version and the rest as it was",
                s(&target)
            ),
            "restore in place again to finish",
        ],
    );
    assert_ne!(digest(&target), before, "no chunk was written");
    assert_ne!(digest(&target), digest(&src), "the restore finished");

    // --allow-damage finishes the restore, zeros for the damaged chunk: not a part-way one.
    let r = restore(&v, &["--allow-damage", "--in-place", s(&target)]).code(3);
    assert!(
        r.stderr.contains("holds zeros in") && !r.stderr.contains("part-way"),
        "{}",
        r.stderr
    );
    let mut want = data.clone();
    want[15 * CHUNK_64K..].fill(0);
    assert!(fs::read(&target).unwrap() == want, "wrong bytes in place");

    // With the chunk repaired, restoring in place again finishes, as the message said.
    fs::write(last, &good).unwrap();
    restore(&v, &["--in-place", s(&target)]).ok();
    assert_same_contents(&src, &target);
}

/// A symbolic link to nothing is not replaced unasked: the restore would put a file where the
/// link was. With --force the link goes, and the version is there.
#[test]
fn a_dangling_symlink_target_is_replaced_only_with_force() {
    let (v, src) = vault_with_image();
    let link = v.path("link.img");
    std::os::unix::fs::symlink(v.path("nowhere.img"), &link).expect("making a symlink");
    restore(&v, &[s(&link)]).error(1, &[s(&link), "symbolic link", "--force"]);
    assert!(
        fs::symlink_metadata(&link)
            .expect("the link")
            .file_type()
            .is_symlink(),
        "the link was replaced"
    );
    restore(&v, &["--force", s(&link)]).ok();
    assert_same_contents(&src, &link);
}

/// A restore of "img" to `out`, slowed by store latency, once it has created its partial
/// file; and that file's name.
fn slow_restore_begun(v: &Vault, out: &Path) -> (std::process::Child, PathBuf) {
    let mut cmd = key_file_cmd(
        v,
        Some("latency-ms=100"),
        &["restore", "--name", "img", s(out)],
    );
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let child = cmd.spawn().expect("starting blockvault");
    let name = out.file_name().expect("a file name").to_string_lossy();
    let partial = out.with_file_name(format!(".{name}.blockvault-partial"));
    let started = std::time::Instant::now();
    while !partial.exists() {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the restore never created its partial file"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    (child, partial)
}

/// A file that appears at the target while the version is being restored (another program,
/// another restore) is not replaced without --force: the rename refuses, the file stays as it
/// is, and the restored version is kept under the name the error gives.
#[test]
fn a_target_that_appears_during_the_restore_is_left_alone() {
    let (v, src) = vault_with_image();
    let out = v.path("out.img");
    let (child, partial) = slow_restore_begun(&v, &out);
    fs::write(&out, b"someone else's").expect("writing the target meanwhile");
    let done = child.wait_with_output().expect("waiting for blockvault");
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert_eq!(done.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("appeared while the version was being restored")
            && stderr.contains(s(&partial)),
        "{stderr}"
    );
    assert_eq!(fs::read(&out).expect("the target"), b"someone else's");
    assert_same_contents(&src, &partial);
}

/// Two restores to one target at once: the second finds the first's partial file locked and
/// stops, naming it, instead of taking it for a crashed restore's leftover and removing it
/// (which made the first fail); the first finishes and the target is the version.
#[test]
fn a_second_restore_of_the_same_target_stops_and_leaves_the_first_alone() {
    let (v, src) = vault_with_image();
    let out = v.path("out.img");
    let (first, partial) = slow_restore_begun(&v, &out);
    let second = restore(&v, &[s(&out)]);
    assert_eq!(second.code, 1, "{}", second.stderr);
    assert!(
        second.stderr.contains("another restore is writing target")
            && second.stderr.contains(s(&partial)),
        "{}",
        second.stderr
    );
    let done = first.wait_with_output().expect("waiting for blockvault");
    assert!(
        done.status.success(),
        "the first restore failed: {}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_same_contents(&src, &out);
    assert!(!partial.exists(), "the partial file was left behind");
}
