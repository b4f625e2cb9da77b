//! [`IpList`]: allow and deny lists of addresses and CIDR ranges, given in code or read from
//! files, reloadable while the server runs.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use ipnet::IpNet;

use super::ipset::IpSet;

/// A list file or entry that cannot be used: the file cannot be read, or a line is not an
/// address or CIDR range. Names the file and the line.
#[derive(Debug)]
#[non_exhaustive]
pub struct ListError {
    /// The file, `None` for entries given in code.
    pub path: Option<PathBuf>,
    /// The 1-based line (or entry) number; 0 when the file could not be read.
    pub line: usize,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ListError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.path {
            Some(p) if self.line > 0 => {
                write!(f, "{}:{}: {}", p.display(), self.line, self.message)
            }
            Some(p) => write!(f, "{}: {}", p.display(), self.message),
            None => write!(f, "entry {}: {}", self.line, self.message),
        }
    }
}

impl std::error::Error for ListError {}

/// Parses one line of a list: `# comment` lines, blank lines and trailing comments
/// (`203.0.113.0/24 ; SBL123`, `10.0.0.1 # office`) are allowed; `Ok(None)` for no entry.
pub(crate) fn parse_line(line: &str) -> Result<Option<IpNet>, String> {
    let entry = line
        .split(['#', ';'])
        .next()
        .unwrap_or_default()
        .trim_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
    if entry.is_empty() {
        return Ok(None);
    }
    if let Ok(net) = entry.parse::<IpNet>() {
        return Ok(Some(net.trunc()));
    }
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Ok(Some(IpNet::from(ip)));
    }
    let shown: String = entry.chars().take(60).collect();
    Err(format!("`{shown}` is not an IP address or CIDR range"))
}

/// A file's contents, and their fingerprint (to tell whether it changed).
fn read_text(path: &Path) -> Result<(String, u64), ListError> {
    let text = std::fs::read_to_string(path).map_err(|e| ListError {
        path: Some(path.to_owned()),
        line: 0,
        message: format!("cannot read the list: {e}"),
    })?;
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(&text, &mut h);
    Ok((text, std::hash::Hasher::finish(&h)))
}

/// Reads a list file into `out`; returns its fingerprint.
fn read_file(path: &Path, out: &mut Vec<IpNet>) -> Result<u64, ListError> {
    let (text, fingerprint) = read_text(path)?;
    for (i, line) in text.lines().enumerate() {
        match parse_line(line) {
            Ok(Some(net)) => out.push(net),
            Ok(None) => {}
            Err(message) => {
                return Err(ListError {
                    path: Some(path.to_owned()),
                    line: i + 1,
                    message,
                })
            }
        }
    }
    Ok(fingerprint)
}

struct Inner {
    name: String,
    entries: Vec<IpNet>,
    files: Vec<PathBuf>,
    current: ArcSwap<IpSet>,
    /// The files' fingerprints at the last load, to reload only what changed.
    fingerprints: std::sync::Mutex<Vec<u64>>,
}

/// A list of IP addresses and CIDR ranges, IPv4 and IPv6, given in code or read from files.
///
/// Files hold one entry per line: an address (`192.0.2.7`, `2001:db8::1`) or a range
/// (`198.51.100.0/24`, `2001:db8::/32`). `#` starts a comment, and so does `;`, the form of
/// published lists such as Spamhaus DROP (`1.10.16.0/20 ; SBL256894`); FireHOL netsets read
/// as they are.
///
/// The list is a cheap handle: clones share one list. [`reload`](Self::reload) re-reads its
/// files and swaps the new list in atomically: a request sees either the old or the new list,
/// never a mix, and none waits. Lookups bisect sorted ranges: a list of 100,000 ranges costs
/// well under a microsecond per request.
///
/// Lists match the client's full address as floodgate reads it (the peer, or the
/// configured header or forwarding chain), not its IPv6 /64 key; IPv4-mapped IPv6
/// addresses match IPv4 entries.
///
/// # Examples
///
/// ```no_run
/// use floodgate::{Floodgate, IpList};
///
/// # fn main() -> Result<(), floodgate::ListError> {
/// let office = IpList::new("office").entries(["203.0.113.0/24", "2001:db8:1::/48"])?;
/// let drop = IpList::new("spamhaus-drop").file("/etc/floodgate/drop.txt")?;
/// let floodgate = Floodgate::new().allow_list(office).deny_list(drop.clone());
/// // Later, after the file changed (or use `reload_every`):
/// drop.reload()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct IpList {
    inner: Arc<Inner>,
}

impl fmt::Debug for IpList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IpList")
            .field("name", &self.inner.name)
            .field("files", &self.inner.files)
            .field("ranges", &self.inner.current.load().ranges())
            .finish()
    }
}

impl IpList {
    /// An empty list called `name` (the name shows in logs and refusals).
    pub fn new(name: impl Into<String>) -> Self {
        IpList::build(
            name.into(),
            Vec::new(),
            Vec::new(),
            (IpSet::build([]), Vec::new()),
        )
    }

    fn build(
        name: String,
        entries: Vec<IpNet>,
        files: Vec<PathBuf>,
        (set, fingerprints): (IpSet, Vec<u64>),
    ) -> Self {
        IpList {
            inner: Arc::new(Inner {
                name,
                entries,
                files,
                current: ArcSwap::from_pointee(set),
                fingerprints: std::sync::Mutex::new(fingerprints),
            }),
        }
    }

    /// Adds entries given in code; an entry that is not an address or range is an error
    /// naming it.
    pub fn entries<I, T>(self, entries: I) -> Result<Self, ListError>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let mut nets = self.inner.entries.clone();
        for (i, e) in entries.into_iter().enumerate() {
            match parse_line(e.as_ref()) {
                Ok(Some(net)) => nets.push(net),
                Ok(None) => {}
                Err(message) => {
                    return Err(ListError {
                        path: None,
                        line: i + 1,
                        message,
                    })
                }
            }
        }
        self.rebuilt(nets, self.inner.files.clone())
    }

    /// Adds a file, read now: a missing file or a malformed line is an error naming the file
    /// and line. [`reload`](Self::reload) reads it again.
    pub fn file(self, path: impl AsRef<Path>) -> Result<Self, ListError> {
        let mut files = self.inner.files.clone();
        files.push(path.as_ref().to_owned());
        self.rebuilt(self.inner.entries.clone(), files)
    }

    fn rebuilt(&self, entries: Vec<IpNet>, files: Vec<PathBuf>) -> Result<Self, ListError> {
        let loaded = load(&entries, &files)?;
        Ok(IpList::build(
            self.inner.name.clone(),
            entries,
            files,
            loaded,
        ))
    }

    /// Re-reads the list's files and swaps the new list in atomically, without blocking or
    /// dropping any request. On an error (a missing file, a malformed line) the current list
    /// is kept, the error is logged, and returned. Returns the number of ranges loaded.
    pub fn reload(&self) -> Result<usize, ListError> {
        match load(&self.inner.entries, &self.inner.files) {
            Ok((set, fingerprints)) => {
                let n = set.ranges();
                if let Ok(mut f) = self.inner.fingerprints.lock() {
                    *f = fingerprints;
                }
                self.inner.current.store(Arc::new(set));
                log::info!("floodgate: list {} reloaded: {n} ranges", self.inner.name);
                Ok(n)
            }
            Err(err) => {
                log::error!(
                    "floodgate: list {} not reloaded, keeping the previous one: {err}",
                    self.inner.name
                );
                Err(err)
            }
        }
    }

    /// Reloads the list when one of its files changed since the last load (by content):
    /// `Ok(true)` when it reloaded, `Ok(false)` when nothing changed. An error keeps the
    /// current list, as with [`reload`](Self::reload).
    pub fn reload_if_changed(&self) -> Result<bool, ListError> {
        let mut now = Vec::with_capacity(self.inner.files.len());
        for f in &self.inner.files {
            match read_text(f) {
                Ok((_, fingerprint)) => now.push(fingerprint),
                Err(err) => {
                    log::error!(
                        "floodgate: list {} not reloaded, keeping the previous one: {err}",
                        self.inner.name
                    );
                    return Err(err);
                }
            }
        }
        let unchanged = self.inner.fingerprints.lock().is_ok_and(|f| *f == now);
        if unchanged {
            return Ok(false);
        }
        self.reload().map(|_| true)
    }

    /// Calls [`reload_if_changed`](Self::reload_if_changed) every `interval`, on a
    /// background thread that ends when the last handle on this list is dropped. Errors are
    /// logged and the previous list kept.
    pub fn reload_every(self, interval: Duration) -> Self {
        if self.inner.files.is_empty() {
            return self;
        }
        let weak: Weak<Inner> = Arc::downgrade(&self.inner);
        let name = format!("floodgate-list-{}", self.inner.name);
        let spawned = std::thread::Builder::new().name(name).spawn(move || loop {
            std::thread::sleep(interval);
            let Some(inner) = weak.upgrade() else { return };
            let _ = IpList { inner }.reload_if_changed();
        });
        if let Err(err) = spawned {
            log::error!(
                "floodgate: list {}: cannot start the reload thread: {err}",
                self.inner.name
            );
        }
        self
    }

    /// Whether `ip` is in the list (IPv4-mapped IPv6 addresses match their IPv4 entries).
    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.inner.current.load().get(ip).is_some()
    }

    /// The list's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// How many disjoint ranges the list holds (overlapping and adjacent entries merged).
    pub fn ranges(&self) -> usize {
        self.inner.current.load().ranges()
    }
}

fn load(entries: &[IpNet], files: &[PathBuf]) -> Result<(IpSet, Vec<u64>), ListError> {
    let mut nets = entries.to_vec();
    let mut fingerprints = Vec::with_capacity(files.len());
    for f in files {
        fingerprints.push(read_file(f, &mut nets)?);
    }
    Ok((
        IpSet::build(nets.into_iter().map(|n| (n, ()))),
        fingerprints,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_with_comments_and_published_forms() {
        let ok = |l: &str| parse_line(l).unwrap().map(|n| n.to_string());
        assert_eq!(ok("  # a comment"), None);
        assert_eq!(ok(""), None);
        assert_eq!(ok("1.10.16.0/20 ; SBL256894"), Some("1.10.16.0/20".into()));
        assert_eq!(ok("10.0.0.1 # office"), Some("10.0.0.1/32".into()));
        assert_eq!(ok("10.1.2.3/8"), Some("10.0.0.0/8".into()));
        assert_eq!(ok("2001:db8::/32"), Some("2001:db8::/32".into()));
        assert_eq!(ok("\u{feff}2001:db8::1"), Some("2001:db8::1/128".into()));
        assert!(parse_line("10.0.0.0/33").is_err());
        assert!(parse_line("example.com").is_err());
    }

    #[test]
    fn entries_report_their_number() {
        let err = IpList::new("t")
            .entries(["10.0.0.0/8", "nope"])
            .unwrap_err();
        assert_eq!(err.line, 2);
        assert!(err.to_string().contains("`nope`"), "{err}");
        let list = IpList::new("t").entries(["10.0.0.0/8", "# c"]).unwrap();
        assert!(list.contains("10.9.9.9".parse().unwrap()));
        assert!(!list.contains("11.0.0.0".parse().unwrap()));
    }
}
