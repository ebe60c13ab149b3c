//! The guest's root file system: an initramfs (a `newc` cpio archive the
//! kernel unpacks into RAM) assembled in memory from host files, and the
//! kernel-module bookkeeping it needs (finding `.ko` files, their load order
//! from the `depends=` field of each module's `.modinfo`, decompression).
//!
//! The archive is written here, not by the `cpio` tool: the format is a
//! fixed 110-byte ASCII header per entry, the name, the data, each padded to
//! four bytes, and a `TRAILER!!!` entry.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use super::VmError;

/// One entry of the archive.
#[derive(Debug, Clone)]
enum Entry {
    Dir,
    File { data: Vec<u8>, mode: u32 },
    Symlink(String),
    CharDevice { major: u32, minor: u32 },
}

/// An initramfs being assembled: guest path → entry. Parent directories
/// are added automatically; paths sort parents first, which is the order
/// the kernel's unpacker needs.
#[derive(Debug, Default)]
pub(crate) struct Initramfs {
    entries: BTreeMap<PathBuf, Entry>,
}

/// A guest path as a relative archive name (`bin/sh`), or an error naming it.
fn archive_name(guest: &Path) -> Result<PathBuf, VmError> {
    let mut out = PathBuf::new();
    for c in guest.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(p) => out.push(p),
            _ => {
                return Err(VmError::Invalid {
                    field: "guest path",
                    reason: format!("{} must be absolute, without `.` or `..`", guest.display()),
                });
            }
        }
    }
    if out.as_os_str().is_empty() {
        return Err(VmError::Invalid {
            field: "guest path",
            reason: format!("{} names the root directory", guest.display()),
        });
    }
    Ok(out)
}

impl Initramfs {
    fn parents(&mut self, name: &Path) {
        let mut p = name.parent();
        while let Some(dir) = p {
            if dir.as_os_str().is_empty() {
                break;
            }
            self.entries.entry(dir.to_path_buf()).or_insert(Entry::Dir);
            p = dir.parent();
        }
    }

    /// Adds an (empty) directory.
    pub(crate) fn dir(&mut self, guest: &str) -> Result<(), VmError> {
        let name = archive_name(Path::new(guest))?;
        self.parents(&name);
        self.entries.entry(name).or_insert(Entry::Dir);
        Ok(())
    }

    /// Adds a file with the given contents and permission bits.
    pub(crate) fn bytes(&mut self, guest: &Path, data: Vec<u8>, mode: u32) -> Result<(), VmError> {
        let name = archive_name(guest)?;
        self.parents(&name);
        self.entries.insert(name, Entry::File { data, mode });
        Ok(())
    }

    /// Copies a host file (symlinks followed), keeping its permission bits.
    pub(crate) fn copy(&mut self, host: &Path, guest: &Path) -> Result<(), VmError> {
        use std::os::unix::fs::PermissionsExt;
        let read = |e| VmError::Io {
            what: format!("read {}", host.display()),
            source: e,
        };
        let data = std::fs::read(host).map_err(read)?;
        let mode = std::fs::metadata(host).map_err(read)?.permissions().mode() & 0o7777;
        self.bytes(guest, data, mode)
    }

    /// Adds a symlink unless something is already at `guest`.
    pub(crate) fn symlink_if_free(&mut self, guest: &Path, target: &str) -> Result<(), VmError> {
        let name = archive_name(guest)?;
        if self.entries.contains_key(&name) {
            return Ok(());
        }
        self.parents(&name);
        self.entries.insert(name, Entry::Symlink(target.to_owned()));
        Ok(())
    }

    /// Adds a character device node.
    pub(crate) fn char_device(
        &mut self,
        guest: &str,
        major: u32,
        minor: u32,
    ) -> Result<(), VmError> {
        let name = archive_name(Path::new(guest))?;
        self.parents(&name);
        self.entries
            .insert(name, Entry::CharDevice { major, minor });
        Ok(())
    }

    /// True if something is at `guest`.
    pub(crate) fn contains(&self, guest: &Path) -> bool {
        archive_name(guest).is_ok_and(|n| self.entries.contains_key(&n))
    }

    /// Total size of the file contents, for the report.
    pub(crate) fn content_bytes(&self) -> usize {
        self.entries
            .values()
            .map(|e| match e {
                Entry::File { data, .. } => data.len(),
                _ => 0,
            })
            .sum()
    }

    /// Writes the archive in `newc` format.
    pub(crate) fn write(&self, out: &mut impl Write) -> std::io::Result<()> {
        for (ino, (name, entry)) in (1u32..).zip(&self.entries) {
            let name = name.to_string_lossy();
            let (mode, data, nlink, rdev): (u32, &[u8], u32, (u32, u32)) = match entry {
                Entry::Dir => (0o040_755, &[], 2, (0, 0)),
                Entry::File { data, mode } => (0o100_000 | mode, data, 1, (0, 0)),
                Entry::Symlink(t) => (0o120_777, t.as_bytes(), 1, (0, 0)),
                Entry::CharDevice { major, minor } => (0o020_600, &[], 1, (*major, *minor)),
            };
            write_entry(out, ino, mode, nlink, rdev, &name, data)?;
        }
        write_entry(out, 0, 0, 1, (0, 0), "TRAILER!!!", &[])
    }
}

fn pad4(out: &mut impl Write, len: usize) -> std::io::Result<()> {
    let pad = (4 - len % 4) % 4;
    out.write_all(&[0u8; 3][..pad])
}

fn write_entry(
    out: &mut impl Write,
    ino: u32,
    mode: u32,
    nlink: u32,
    rdev: (u32, u32),
    name: &str,
    data: &[u8],
) -> std::io::Result<()> {
    let size = u32::try_from(data.len())
        .map_err(|_| std::io::Error::other(format!("{name}: file larger than 4 GiB")))?;
    let namesize =
        u32::try_from(name.len() + 1).map_err(|_| std::io::Error::other("file name too long"))?;
    // magic, ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
    // devminor, rdevmajor, rdevminor, namesize, check.
    let header = format!(
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{nlink:08x}{:08x}{size:08x}{:08x}{:08x}{:08x}{:08x}{namesize:08x}{:08x}",
        0, 0, 0, 0, 0, rdev.0, rdev.1, 0
    );
    out.write_all(header.as_bytes())?;
    out.write_all(name.as_bytes())?;
    out.write_all(&[0])?;
    pad4(out, header.len() + name.len() + 1)?;
    out.write_all(data)?;
    pad4(out, data.len())
}

/// Module name as the kernel spells it (`-` and `_` are the same).
fn canonical(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a file (`ip_tunnel.ko.xz` → `ip_tunnel`).
fn module_name(file: &str) -> Option<String> {
    let (stem, _) = file.split_once(".ko")?;
    Some(canonical(stem))
}

/// Every module file under `dir`, by module name.
pub(crate) fn index_modules(dir: &Path) -> Result<HashMap<String, PathBuf>, VmError> {
    let mut out = HashMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|source| VmError::Io {
            what: format!("list {}", d.display()),
            source,
        })?;
        for e in entries.flatten() {
            let path = e.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(name) = e.file_name().to_str().and_then(module_name) {
                out.insert(name, path);
            }
        }
    }
    Ok(out)
}

/// A module file's contents, decompressed if it is `.ko.xz`/`.ko.zst`/`.ko.gz`
/// (busybox `insmod` loads only plain ELF).
pub(crate) fn module_bytes(path: &Path) -> Result<Vec<u8>, VmError> {
    let s = path.to_string_lossy();
    let tool = if s.ends_with(".ko.xz") {
        Some("xz")
    } else if s.ends_with(".ko.zst") {
        Some("zstd")
    } else if s.ends_with(".ko.gz") {
        Some("gzip")
    } else {
        None
    };
    let Some(tool) = tool else {
        return std::fs::read(path).map_err(|source| VmError::Io {
            what: format!("read {}", path.display()),
            source,
        });
    };
    let out = Command::new(tool)
        .args(["-d", "-c"])
        .arg(path)
        .output()
        .map_err(|source| VmError::Io {
            what: format!("run `{tool} -d -c {}`", path.display()),
            source,
        })?;
    if !out.status.success() {
        return Err(VmError::Module {
            name: s.into_owned(),
            reason: format!(
                "`{tool} -d -c` failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(out.stdout)
}

/// The `depends=` list of a module image's `.modinfo` (names, canonical).
pub(crate) fn module_depends(image: &[u8]) -> Vec<String> {
    const KEY: &[u8] = b"\0depends=";
    let Some(at) = image.windows(KEY.len()).position(|w| w == KEY) else {
        return Vec::new();
    };
    let rest = &image[at + KEY.len()..];
    let end = rest.iter().position(|b| *b == 0).unwrap_or(rest.len());
    String::from_utf8_lossy(&rest[..end])
        .split(',')
        .filter(|s| !s.is_empty())
        .map(canonical)
        .collect()
}

/// The modules to load for `wanted`, dependencies first, each once, with
/// their (decompressed) images.
pub(crate) fn load_order(
    index: &HashMap<String, PathBuf>,
    wanted: &[String],
) -> Result<Vec<(String, Vec<u8>)>, VmError> {
    fn visit(
        name: &str,
        index: &HashMap<String, PathBuf>,
        done: &mut Vec<(String, Vec<u8>)>,
        path: &mut Vec<String>,
    ) -> Result<(), VmError> {
        if done.iter().any(|(n, _)| n == name) {
            return Ok(());
        }
        if path.iter().any(|n| n == name) {
            return Err(VmError::Module {
                name: name.to_owned(),
                reason: format!("dependency cycle {} -> {name}", path.join(" -> ")),
            });
        }
        let file = index.get(name).ok_or_else(|| VmError::Module {
            name: name.to_owned(),
            reason: match path.last() {
                Some(by) => {
                    format!("needed by {by}, but no such module in the kernel package (built in?)")
                }
                None => {
                    "no such module in the kernel package (built in, or not configured?)".into()
                }
            },
        })?;
        let image = module_bytes(file)?;
        path.push(name.to_owned());
        for dep in module_depends(&image) {
            visit(&dep, index, done, path)?;
        }
        path.pop();
        done.push((name.to_owned(), image));
        Ok(())
    }
    let mut done = Vec::new();
    for w in wanted {
        visit(&canonical(w), index, &mut done, &mut Vec::new())?;
    }
    Ok(done)
}

/// Shared libraries (and the dynamic loader) `ldd` lists for `program`;
/// empty for a static binary.
pub(crate) fn shared_libraries(program: &Path) -> Result<Vec<PathBuf>, VmError> {
    let out = Command::new("ldd")
        .arg(program)
        .output()
        .map_err(|source| VmError::Io {
            what: format!("run `ldd {}`", program.display()),
            source,
        })?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if text.contains("not a dynamic executable") || err.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        return Err(VmError::Invalid {
            field: "program",
            reason: format!("`ldd {}` failed: {}", program.display(), err.trim()),
        });
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.contains("statically linked") {
            return Ok(Vec::new());
        }
        if line.contains("=> not found") {
            return Err(VmError::Invalid {
                field: "program",
                reason: format!("{}: library {line}", program.display()),
            });
        }
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or
        // `/lib64/ld-linux-x86-64.so.2 (0x...)`; the vDSO has no file.
        let path = match line.split_once("=>") {
            Some((_, right)) => right.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.push(PathBuf::from(p));
        }
    }
    Ok(libs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_entries_are_padded_and_parents_come_first() {
        let mut fs = Initramfs::default();
        fs.bytes(Path::new("/usr/bin/x"), b"hello".to_vec(), 0o755)
            .expect("file");
        fs.symlink_if_free(Path::new("/bin/sh"), "/bin/busybox")
            .expect("link");
        fs.symlink_if_free(Path::new("/usr/bin/x"), "/elsewhere")
            .expect("occupied: kept");
        let mut out = Vec::new();
        fs.write(&mut out).expect("write");
        assert_eq!(out.len() % 4, 0);
        let text = String::from_utf8_lossy(&out);
        let order: Vec<usize> = [
            "bin\0",
            "bin/sh\0",
            "usr\0",
            "usr/bin\0",
            "usr/bin/x\0",
            "TRAILER!!!\0",
        ]
        .iter()
        .map(|n| text.find(n).unwrap_or_else(|| panic!("{n:?} missing")))
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}");
        assert!(text.contains("hello") && !text.contains("/elsewhere"));
        // The file's header: mode 0100755, size 5, name size 10.
        let fields = [0o100_755, 0, 0, 1, 0, 5, 0, 0, 0, 0, 10, 0];
        let header: String = fields.iter().map(|f: &u32| format!("{f:08x}")).collect();
        assert!(text.contains(&format!("{header}usr/bin/x\0")), "{text}");
        assert!(archive_name(Path::new("/a/../b")).is_err());
        assert!(archive_name(Path::new("/")).is_err());
    }

    #[test]
    fn depends_come_from_modinfo_and_load_first() {
        let image = b"\x7fELF...\0license=GPL\0depends=tunnel4,ip-tunnel\0vermagic=6.1\0";
        assert_eq!(module_depends(image), ["tunnel4", "ip_tunnel"]);
        assert!(module_depends(b"\0depends=\0").is_empty());
        assert!(module_depends(b"nothing").is_empty());
        assert_eq!(module_name("ip_tunnel.ko.xz").as_deref(), Some("ip_tunnel"));
        assert_eq!(module_name("README"), None);

        let dir = tempfile::tempdir().expect("tmp");
        let write = |n: &str, body: &[u8]| std::fs::write(dir.path().join(n), body).expect("w");
        write("ipip.ko", b"\0depends=tunnel4,ip_tunnel\0");
        write("ip_tunnel.ko", b"\0depends=\0");
        write("tunnel4.ko", b"\0depends=\0");
        write("loop_a.ko", b"\0depends=loop_b\0");
        write("loop_b.ko", b"\0depends=loop_a\0");
        let index = index_modules(dir.path()).expect("index");
        let order: Vec<String> = load_order(&index, &["ipip".into(), "tunnel4".into()])
            .expect("order")
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        assert_eq!(order, ["tunnel4", "ip_tunnel", "ipip"]);
        let err = load_order(&index, &["nope".into()]).expect_err("missing");
        assert!(err.to_string().contains("nope"), "{err}");
        let err = load_order(&index, &["loop_a".into()]).expect_err("cycle");
        assert!(err.to_string().contains("cycle"), "{err}");
    }
}
