//! Probe bans: requests for paths only scanners ask for (`/wp-login.php`, `/.env`) ban the
//! client at once or count as reported offences; optionally a 404 counts as one too.

use std::time::Duration;

/// A path pattern: `*` matches any run of characters (`/` included); everything else matches
/// itself. Matching is linear in the path (one backtrack point, the last `*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Glob {
    pattern: Box<str>,
    ignore_case: bool,
}

impl Glob {
    pub(crate) fn new(pattern: &str, ignore_case: bool) -> Self {
        Glob {
            pattern: pattern.trim().into(),
            ignore_case,
        }
    }

    pub(crate) fn matches(&self, text: &str) -> bool {
        let (p, t) = (self.pattern.as_bytes(), text.as_bytes());
        let eq = |a: u8, b: u8| {
            if self.ignore_case {
                a.eq_ignore_ascii_case(&b)
            } else {
                a == b
            }
        };
        let (mut pi, mut ti) = (0, 0);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            if pi < p.len() && p[pi] == b'*' {
                star = Some((pi, ti));
                pi += 1;
            } else if pi < p.len() && eq(p[pi], t[ti]) {
                pi += 1;
                ti += 1;
            } else if let Some((sp, st)) = star {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&b| b == b'*')
    }
}

/// What a probe does to its client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProbeAction {
    /// Ban the client at once, for this long (`None`: blacklisted until an operator unbans).
    Ban(Option<Duration>),
    /// Count as one reported offence under the app's [`BanRule`](crate::BanRule).
    Report,
}

/// Bans clients that probe for paths only scanners ask for.
///
/// A request is a probe when its path matches one of the patterns (ASCII case ignored; `*`
/// matches anything, `/` included) **and no route of the app matches the path**: the app's
/// own routes can never ban by accident, even one whose path is also a probe pattern. "No
/// route" is actix-web's resource map (`HttpRequest::match_pattern`), which holds every
/// resource and scope registered on the `App`, annotated or not, whatever the method; a path
/// served by a catch-all (a `Files` service mounted at `/`) is a route, so it never bans.
///
/// The probe itself is then refused with 403 when it bans (or when its report completes a
/// ban), and otherwise gets the app's own answer (usually 404). Bans and reports count
/// against the client's IP address, whatever key its limits use.
///
/// # Security
///
/// A probe bans the address floodgate reads for the client: with
/// [`Floodgate::ip_header`](crate::Floodgate::ip_header) and clients that can reach the app
/// directly, anyone can get any address banned by probing with a forged header. Put an
/// operator's own addresses on an [allow list](crate::Floodgate::allow_list).
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use floodgate::{Floodgate, ProbeBan};
///
/// let floodgate = Floodgate::new().probe_ban(
///     ProbeBan::new(["/wp-login.php", "/.env", "/.git/*", "*.php"])
///         .ban_for(Duration::from_secs(24 * 3600))
///         .not_found_reports(true), // flask-ipban: every 404 is an offence too
/// );
/// ```
#[derive(Clone, Debug)]
pub struct ProbeBan {
    pub(crate) patterns: Vec<Glob>,
    pub(crate) action: ProbeAction,
    pub(crate) not_found: bool,
}

impl ProbeBan {
    /// Probes for these paths ban for a day (see [`ban_for`](Self::ban_for)).
    pub fn new<I, T>(paths: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        ProbeBan {
            patterns: paths
                .into_iter()
                .map(|p| Glob::new(p.as_ref(), true))
                .filter(|g| !g.pattern.is_empty())
                .collect(),
            action: ProbeAction::Ban(Some(Duration::from_secs(24 * 3600))),
            not_found: false,
        }
    }

    /// Paths that the common scanners ask for: WordPress and PHP admin pages, leaked
    /// configuration and version-control files.
    pub fn common() -> Self {
        ProbeBan::new([
            "/wp-login.php",
            "/wp-admin*",
            "/xmlrpc.php",
            "/.env*",
            "/.git/*",
            "/.svn/*",
            "/.aws/*",
            "/.DS_Store",
            "/phpmyadmin*",
            "/pma/*",
            "/config.php",
            "/server-status",
            "/cgi-bin/*",
            "/vendor/phpunit/*",
            "/boaform/*",
        ])
    }

    /// A probe bans its client for `duration` from the probe.
    pub fn ban_for(mut self, duration: Duration) -> Self {
        self.action = ProbeAction::Ban(Some(duration));
        self
    }

    /// A probe blacklists its client until an operator unbans it.
    pub fn ban_forever(mut self) -> Self {
        self.action = ProbeAction::Ban(None);
        self
    }

    /// A probe counts as one reported offence under the app's
    /// [`BanRule`](crate::BanRule) instead of banning at once.
    pub fn report(mut self) -> Self {
        self.action = ProbeAction::Report;
        self
    }

    /// Whether a 404 for a path no route matches counts as one reported offence (default
    /// `false`). 404s that the app's own handlers return (an unknown user id) never count.
    pub fn not_found_reports(mut self, yes: bool) -> Self {
        self.not_found = yes;
        self
    }

    pub(crate) fn is_probe(&self, path: &str) -> bool {
        self.patterns.iter().any(|g| g.matches(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matching() {
        let g = |p: &str, t: &str| Glob::new(p, true).matches(t);
        assert!(g("/.env", "/.env"));
        assert!(g("/.env", "/.ENV"));
        assert!(!g("/.env", "/.env.bak"));
        assert!(g("/.env*", "/.env.bak"));
        assert!(g("/.git/*", "/.git/config"));
        assert!(!g("/.git/*", "/.gitignore"));
        assert!(g("*.php", "/a/b/c.php"));
        assert!(!g("*.php", "/a.php/x"));
        assert!(g("/a*b*c", "/aXXbYYbZc"));
        assert!(!g("/a*b*c", "/aXXbYYbZ"));
        assert!(g("*", ""));
        assert!(!Glob::new("/Login", false).matches("/login"));
    }

    #[test]
    fn common_list_matches_scanners_only() {
        let p = ProbeBan::common();
        for yes in [
            "/wp-login.php",
            "/.env",
            "/.git/config",
            "/wp-admin/setup.php",
        ] {
            assert!(p.is_probe(yes), "{yes}");
        }
        for no in ["/", "/login", "/api/env", "/git/config"] {
            assert!(!p.is_probe(no), "{no}");
        }
    }
}
