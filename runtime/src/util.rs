//! Small helpers with no place of their own: durable directories, owner-only files, tasks
//! tied to their owner, hex and file digests, sizes in binary units.

use tokio::task::JoinHandle;

/// Makes the entries of directory `dir` (files created, renamed or removed in it) durable.
pub(crate) fn sync_dir(dir: &std::path::Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Makes `path` readable and writable by its owner only (0600): a node's databases, snapshots
/// and backups hold all of the service's data.
pub(crate) fn owner_only(path: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
}

/// Creates `path` anew as a file only its owner can read and write (0600). Whatever was there is
/// removed first (a symbolic link itself, never its target) and the file is created exclusively,
/// so the data never goes through a link or into a file someone else opened.
pub(crate) fn create_owner_only(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Aborts the task when dropped, so a task's lifetime can be tied to its owner's.
pub(crate) struct AbortOnDrop<T>(pub(crate) JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// 128 random bits from the OS, hex encoded: secrets and tokens.
pub(crate) fn random_hex128() -> std::io::Result<String> {
    use std::io::Read as _;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(hex(&bytes))
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The length and SHA-256 of the file at `path`, read a chunk at a time.
pub(crate) async fn file_sha256(path: &std::path::Path) -> std::io::Result<(u64, [u8; 32])> {
    use sha2::Digest as _;
    use tokio::io::AsyncReadExt as _;
    let mut file = tokio::fs::File::open(path).await?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut len = 0u64;
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        len += n as u64;
    }
    Ok((len, hasher.finalize().into()))
}

/// The binary units sizes are written in, largest first.
const UNITS: [(&str, u64); 4] = [
    ("TiB", 1 << 40),
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
];

/// `bytes` for a person, in one word (a table's cell): `1.5GiB`, `12.0MiB`, `512B`.
pub(crate) fn bytes_text(bytes: u64) -> String {
    match UNITS.iter().find(|(_, size)| bytes >= *size) {
        Some((unit, size)) => format!("{:.1}{unit}", bytes as f64 / *size as f64),
        None => format!("{bytes}B"),
    }
}

/// Reads a size: a number of bytes, or a whole number with a binary unit (`64MiB`, `8 GiB`).
pub(crate) fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (number, scale) = UNITS
        .iter()
        .find_map(|(unit, size)| Some((text.strip_suffix(unit)?.trim_end(), *size)))
        .unwrap_or((text, 1));
    number
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(scale))
        .ok_or_else(|| format!("`{text}`: expected a number of bytes, such as 1073741824 or 8GiB"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_read_and_written_in_binary_units() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("8GiB"), Ok(8 << 30));
        assert_eq!(parse_bytes("64 MiB"), Ok(64 << 20));
        assert!(parse_bytes("8GB").is_err());
        assert!(parse_bytes("-1").is_err());
        assert!(parse_bytes("99999999999TiB").is_err());
        assert_eq!(bytes_text(512), "512B");
        assert_eq!(bytes_text(3 << 19), "1.5MiB");
        assert_eq!(bytes_text(8 << 30), "8.0GiB");
    }
}
