//! Who else is using a block device or an image file, from /proc and /sys: the filesystems
//! mounted on a device (found by device number, so another name for the same device, one of
//! its partitions or a device-mapper device built on it counts too), and the loop devices an
//! image file backs. A backup warns about the first; an in-place restore refuses both, since
//! it would write under a filesystem in use.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// A filesystem mounted on a device or on something built on it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountOn {
    /// Where it is mounted.
    pub at: String,
    /// The device it is mounted from, as the mount table names it.
    pub source: String,
    pub read_only: bool,
}

/// The filesystems mounted from the block device with number `rdev`, from any of its
/// partitions, or from a device stacked on one of them (LVM, dm-crypt, md).
pub fn mounts_on(rdev: u64) -> Vec<MountOn> {
    let devices = with_stacked(rdev);
    let Ok(table) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    table
        .lines()
        .filter_map(parse_mountinfo)
        .filter(|(dev, m)| devices.contains(dev) || source_is_one_of(&m.source, &devices))
        .map(|(_, m)| m)
        .collect()
}

/// Whether a mount's source names one of `devices`: btrfs and bcachefs give mountinfo an
/// anonymous device number of their own, and only the source says which disk it is.
fn source_is_one_of(source: &str, devices: &[(u32, u32)]) -> bool {
    use std::os::unix::fs::FileTypeExt;
    source.starts_with('/')
        && fs::metadata(source).is_ok_and(|m| {
            m.file_type().is_block_device()
                && devices.contains(&(libc::major(m.rdev()), libc::minor(m.rdev())))
        })
}

/// `rdev`, its partitions and the devices that hold any of them, transitively (`holders/` in
/// sysfs), as (major, minor).
fn with_stacked(rdev: u64) -> Vec<(u32, u32)> {
    let mut found = vec![(libc::major(rdev), libc::minor(rdev))];
    let mut i = 0;
    // Bounded: a cycle in sysfs (there is none) cannot loop for ever.
    while i < found.len() && found.len() < 4096 {
        let (major, minor) = found[i];
        let dir = PathBuf::from(format!("/sys/dev/block/{major}:{minor}"));
        let mut next = Vec::new();
        if let Ok(entries) = fs::read_dir(&dir) {
            for e in entries.flatten() {
                // A partition is a subdirectory with a `partition` file.
                if e.path().join("partition").exists()
                    && let Some(d) = read_dev(&e.path())
                {
                    next.push(d);
                }
            }
        }
        if let Ok(entries) = fs::read_dir(dir.join("holders")) {
            for e in entries.flatten() {
                if let Some(d) = read_dev(&e.path()) {
                    next.push(d);
                }
            }
        }
        for d in next {
            if !found.contains(&d) {
                found.push(d);
            }
        }
        i += 1;
    }
    found
}

/// The `dev` file of a sysfs block directory: "major:minor".
fn read_dev(dir: &Path) -> Option<(u32, u32)> {
    parse_dev(fs::read_to_string(dir.join("dev")).ok()?.trim())
}

fn parse_dev(s: &str) -> Option<(u32, u32)> {
    let (major, minor) = s.split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// One line of /proc/self/mountinfo: the device number, and where and how it is mounted.
/// `36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue`
fn parse_mountinfo(line: &str) -> Option<((u32, u32), MountOn)> {
    let (head, tail) = line.split_once(" - ")?;
    let mut head = head.split(' ');
    let dev = parse_dev(head.nth(2)?)?;
    let at = unescape(head.nth(1)?);
    let options = head.next()?;
    let mut tail = tail.split(' ');
    let source = unescape(tail.nth(1)?);
    let super_options = tail.next().unwrap_or("");
    let read_only =
        options.split(',').any(|o| o == "ro") || super_options.split(',').any(|o| o == "ro");
    Some((
        dev,
        MountOn {
            at,
            source,
            read_only,
        },
    ))
}

/// The kernel writes a space, tab, newline or backslash in a path as `\` and three octal
/// digits.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let digits = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        if b[i] == b'\\'
            && let Some(d) = digits
        {
            out.push(
                d.iter()
                    .fold(0u8, |v, c| v.wrapping_mul(8).wrapping_add(c - b'0')),
            );
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The loop devices (`/dev/loopN`) whose backing file is `file`'s inode, asked of each
/// device (`LOOP_GET_STATUS64`: the file's device and inode, whatever name or mount namespace
/// it was attached by); by the path sysfs gives where a device cannot be opened.
pub fn loop_devices_backed_by(file: &fs::Metadata) -> Vec<String> {
    let Ok(entries) = fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    let mut found: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.starts_with("loop") {
                return None;
            }
            let dev = format!("/dev/{name}");
            let asked = fs::File::open(&dev)
                .ok()
                .and_then(|f| crate::sys::loop_backing(&f).ok());
            let matches = match asked {
                Some(Some((device, inode))) => inode == file.ino() && same_dev(device, file.dev()),
                Some(None) => false,
                None => fs::read_to_string(e.path().join("loop/backing_file"))
                    .ok()
                    .and_then(|p| fs::metadata(p.trim()).ok())
                    .is_some_and(|m| m.ino() == file.ino() && m.dev() == file.dev()),
            };
            matches.then_some(dev)
        })
        .collect();
    found.sort();
    found
}

/// Whether the kernel's encoding of a device number (`huge_encode_dev`: minor's low byte,
/// major, then minor's high bits) names the same device as `st_dev`.
fn same_dev(kernel: u64, st_dev: u64) -> bool {
    let major = ((kernel >> 8) & 0xfff) as u32;
    let minor = ((kernel & 0xff) | ((kernel >> 12) & 0xfff00)) as u32;
    libc::major(st_dev) == major && libc::minor(st_dev) == minor
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_lines_are_read() {
        let (dev, m) = parse_mountinfo(
            "36 35 7:3 / /mnt/my\\040disk rw,noatime shared:1 - ext4 /dev/loop3 rw,errors=remount-ro",
        )
        .expect("a valid line");
        assert_eq!(dev, (7, 3));
        assert_eq!(m.at, "/mnt/my disk");
        assert_eq!(m.source, "/dev/loop3");
        assert!(!m.read_only);
        let (_, m) = parse_mountinfo("1 2 8:1 / /boot ro,relatime - vfat /dev/sda1 rw")
            .expect("a valid line");
        assert!(m.read_only);
        // Optional fields before the separator are skipped.
        let (dev, m) =
            parse_mountinfo("1 2 259:5 / /data rw shared:7 master:2 - xfs /dev/nvme0n1p5 rw,attr2")
                .expect("a valid line");
        assert_eq!(dev, (259, 5));
        assert_eq!(m.at, "/data");
        assert!(parse_mountinfo("garbage").is_none());
    }

    #[test]
    fn kernel_device_numbers_are_decoded() {
        // 259:65536 (an NVMe partition with a large minor) and 8:1.
        let big = libc::makedev(259, 65_536);
        // The low byte of 65536 is 0; its high bits go above the major.
        let kernel = (259u64 << 8) | (65_536u64 << 12);
        assert!(same_dev(kernel, big));
        assert!(same_dev(0x801, libc::makedev(8, 1)));
        assert!(!same_dev(0x801, libc::makedev(8, 2)));
    }

    #[test]
    fn escapes_are_undone() {
        assert_eq!(unescape("a\\040b\\011c\\134d"), "a b\tc\\d");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
    }
}
