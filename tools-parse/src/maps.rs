//! `/proc/PID/maps`: which files a process maps.

use std::{
    collections::HashSet,
    path::{Path, PathBuf},
};

/// A file mapped into a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mapped {
    /// The file's device (as `st_dev`) and inode: one file, whatever its names.
    pub dev: u64,
    pub ino: u64,
    /// Its path in the process's mount namespace.
    pub path: String,
    pub pid: u32,
}

impl Mapped {
    /// The path that reaches it from here, through the process's root in
    /// `proc` (a container's files are in its own mount namespace).
    pub fn reachable(&self, proc: &Path) -> PathBuf {
        PathBuf::from(format!("{}/{}/root{}", proc.display(), self.pid, self.path))
    }
}

/// `/proc/PID/maps`: `start-end perms offset major:minor inode path`.
pub fn parse_maps(maps: &str, pid: u32, wanted: impl Fn(&str) -> bool) -> Vec<Mapped> {
    let mut files: Vec<Mapped> = Vec::new();
    let mut seen = HashSet::new();
    for line in maps.lines() {
        let mut fields = line.splitn(6, ' ');
        let (Some(_), Some(_), Some(_), Some(dev), Some(ino), Some(path)) =
            (fields.next(), fields.next(), fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let path = path.trim_start();
        let Ok(ino) = ino.parse::<u64>() else { continue };
        // Anonymous and special mappings, and files replaced since mapped.
        if ino == 0 || !path.starts_with('/') || path.ends_with(" (deleted)") || !wanted(path) {
            continue;
        }
        let Some((major, minor)) = dev.split_once(':') else { continue };
        let (Ok(major), Ok(minor)) = (u32::from_str_radix(major, 16), u32::from_str_radix(minor, 16)) else {
            continue;
        };
        let dev = libc::makedev(major, minor);
        if seen.insert((dev, ino)) {
            files.push(Mapped { dev, ino, path: path.to_owned(), pid });
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_lines_are_skipped() {
        let maps = "7f00-7f01 r-xp 00000000 fe:00 42 /lib/libc.so.6\n\
                    garbage\n\
                    7f01-7f02 rw-p 00000000 00:00 0 \n\
                    7f02-7f03 r-xp 00000000 fe:00 43 /tmp/libc.so.6 (deleted)\n\
                    7f03-7f04 r-xp 00000000 zz:00 44 /x/libc.so\n\
                    7f04-7f05 r--p 00001000 fe:00 42 /lib/libc.so.6\n";
        let files = parse_maps(maps, 1, |_| true);
        assert_eq!(files.len(), 1);
        assert_eq!(
            (files[0].ino, files[0].dev, files[0].path.as_str()),
            (42, libc::makedev(0xfe, 0), "/lib/libc.so.6")
        );
    }
}
