//! Geo-blocking: the client's country from an RFC 8805 geofeed or a MaxMind-format database
//! (feature `geoip`), and [`GeoBlock`], the app-wide country policy.

use std::fmt;
use std::net::IpAddr;
use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use ipnet::IpNet;

use super::ipset::RangeMap;
use super::lists::ListError;
use crate::error::ConfigError;

/// An ISO 3166-1 alpha-2 country code, upper case (`FR`, `US`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Country([u8; 2]);

impl Country {
    /// The code's two letters.
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    /// The 27 member states of the European Union.
    pub fn eu() -> Vec<Country> {
        [
            "AT", "BE", "BG", "HR", "CY", "CZ", "DK", "EE", "FI", "FR", "DE", "GR", "HU", "IE",
            "IT", "LV", "LT", "LU", "MT", "NL", "PL", "PT", "RO", "SK", "SI", "ES", "SE",
        ]
        .iter()
        .filter_map(|c| c.parse().ok())
        .collect()
    }
}

impl FromStr for Country {
    type Err = ConfigError;

    /// Two ASCII letters, any case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().as_bytes() {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Ok(Country([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => Err(ConfigError::invalid(
                "country",
                format!("{s:?} is not a two-letter ISO 3166-1 country code"),
            )),
        }
    }
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Country({})", self.as_str())
    }
}

pub(crate) fn countries<I, T>(list: I) -> Result<Vec<Country>, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: AsRef<str>,
{
    let mut out: Vec<Country> = list
        .into_iter()
        .map(|c| c.as_ref().parse())
        .collect::<Result<_, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

enum Source {
    /// `None`: a prefix the feed lists without a country.
    Feed(RangeMap<Option<Country>>),
    #[cfg(feature = "geoip")]
    MaxMind(maxminddb::Reader<Vec<u8>>),
}

/// Where clients' countries come from: an RFC 8805 geofeed, or a MaxMind-format database
/// (GeoIP2/GeoLite2 Country or City, DB-IP; feature `geoip`). Read once, into memory.
///
/// # Examples
///
/// ```
/// use floodgate::{Floodgate, GeoBlock, GeoDb};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let db = GeoDb::geofeed("# prefix,country,region,city,postal\n192.0.2.0/24,FR,FR-75,Paris,\n2001:db8::/32,DE,,,\n")?;
/// assert_eq!(db.country("192.0.2.9".parse()?).map(|c| c.to_string()), Some("FR".into()));
/// let floodgate = Floodgate::new()
///     .geo_database(db)
///     .geo_block(GeoBlock::deny(["RU", "KP"])?);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct GeoDb {
    source: Arc<Source>,
}

impl fmt::Debug for GeoDb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &*self.source {
            Source::Feed(m) => write!(f, "GeoDb::Geofeed({} ranges)", m.ranges()),
            #[cfg(feature = "geoip")]
            Source::MaxMind(r) => write!(f, "GeoDb::MaxMind({})", r.metadata().database_type),
        }
    }
}

impl GeoDb {
    /// Parses an RFC 8805 geofeed: `prefix,country,region,city,postal` lines, `#` comments.
    /// A line with an empty country gives its prefix no country (unknown). A malformed line
    /// is an error naming its number.
    pub fn geofeed(text: &str) -> Result<Self, ListError> {
        Self::parse_feed(text, None)
    }

    /// Reads an RFC 8805 geofeed file.
    pub fn geofeed_file(path: impl AsRef<Path>) -> Result<Self, ListError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| ListError {
            path: Some(path.to_owned()),
            line: 0,
            message: format!("cannot read the geofeed: {e}"),
        })?;
        Self::parse_feed(&text, Some(path))
    }

    fn parse_feed(text: &str, path: Option<&Path>) -> Result<Self, ListError> {
        let mut entries: Vec<(IpNet, Option<Country>)> = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim_start_matches('\u{feff}').trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |message: String| ListError {
                path: path.map(Path::to_owned),
                line: i + 1,
                message,
            };
            let mut fields = line.split(',');
            let prefix = fields.next().unwrap_or_default().trim();
            let net = prefix
                .parse::<IpNet>()
                .map(|n| n.trunc())
                .or_else(|_| prefix.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| err(format!("`{prefix}` is not an IP prefix")))?;
            let code = fields.next().unwrap_or_default().trim();
            let country = if code.is_empty() {
                None
            } else {
                Some(
                    code.parse::<Country>()
                        .map_err(|_| err(format!("`{code}` is not a two-letter country code")))?,
                )
            };
            entries.push((net, country));
        }
        Ok(GeoDb {
            source: Arc::new(Source::Feed(RangeMap::build(entries))),
        })
    }

    /// Reads a MaxMind-format database file (`.mmdb`) whose records carry
    /// `country.iso_code` (GeoIP2/GeoLite2 Country or City, DB-IP Country Lite).
    #[cfg(feature = "geoip")]
    pub fn maxmind_file(path: impl AsRef<Path>) -> Result<Self, ListError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| ListError {
            path: Some(path.to_owned()),
            line: 0,
            message: format!("cannot read the database: {e}"),
        })?;
        Self::maxmind_bytes(bytes).map_err(|mut e| {
            e.path = Some(path.to_owned());
            e
        })
    }

    /// A MaxMind-format database held in memory.
    #[cfg(feature = "geoip")]
    pub fn maxmind_bytes(bytes: Vec<u8>) -> Result<Self, ListError> {
        let reader = maxminddb::Reader::from_source(bytes).map_err(|e| ListError {
            path: None,
            line: 0,
            message: format!("not a MaxMind DB: {e}"),
        })?;
        Ok(GeoDb {
            source: Arc::new(Source::MaxMind(reader)),
        })
    }

    /// The country of `ip`, `None` when unknown (not in the data, or reserved space).
    pub fn country(&self, ip: IpAddr) -> Option<Country> {
        match &*self.source {
            Source::Feed(m) => m.get(ip).copied().flatten(),
            #[cfg(feature = "geoip")]
            Source::MaxMind(r) => {
                use maxminddb::PathElement;
                let ip = match ip {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                    v4 => v4,
                };
                let found = r.lookup(ip).ok()?;
                let code: Option<&str> = found
                    .decode_path(&[PathElement::Key("country"), PathElement::Key("iso_code")])
                    .ok()
                    .flatten();
                code?.parse().ok()
            }
        }
    }
}

/// The app-wide country policy: allow only some countries, or deny some, with a stated
/// policy for addresses of unknown country. Per-route country rules are
/// [`Target`](crate::Target)s.
///
/// Addresses of unknown country (not in the database, private and loopback space) are
/// **allowed** by default, so that a gap in the data never locks users or health checks out;
/// [`deny_unknown`](Self::deny_unknown) refuses them instead.
#[derive(Clone, Debug)]
pub struct GeoBlock {
    pub(crate) allow_listed: bool,
    pub(crate) countries: Vec<Country>,
    pub(crate) unknown_allowed: bool,
}

impl GeoBlock {
    /// Only clients from these countries are served; the others get 403.
    pub fn allow_only<I, T>(countries: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        Ok(GeoBlock {
            allow_listed: true,
            countries: self::countries(countries).map_err(|e| e.in_field("geo_block"))?,
            unknown_allowed: true,
        })
    }

    /// Clients from these countries get 403.
    pub fn deny<I, T>(countries: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        Ok(GeoBlock {
            allow_listed: false,
            countries: self::countries(countries).map_err(|e| e.in_field("geo_block"))?,
            unknown_allowed: true,
        })
    }

    /// Whether clients of unknown country are refused too (default `false`: served).
    pub fn deny_unknown(mut self, yes: bool) -> Self {
        self.unknown_allowed = !yes;
        self
    }

    /// Whether a client of `country` is refused.
    pub(crate) fn refuses(&self, country: Option<Country>) -> bool {
        match country {
            None => !self.unknown_allowed,
            Some(c) => self.countries.binary_search(&c).is_ok() != self.allow_listed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geofeed_parses_and_reports_bad_lines() {
        let db = GeoDb::geofeed(
            "# comment\n192.0.2.0/24,fr,FR-75,Paris,\n192.0.2.128/25,DE,,,\n2001:db8::/32,US\n198.51.100.0/24,,,,\n",
        )
        .unwrap();
        let c = |s: &str| db.country(s.parse().unwrap()).map(|c| c.to_string());
        assert_eq!(c("192.0.2.1"), Some("FR".into()));
        assert_eq!(c("192.0.2.200"), Some("DE".into()));
        assert_eq!(c("2001:db8::1"), Some("US".into()));
        assert_eq!(c("198.51.100.1"), None);
        assert_eq!(c("203.0.113.1"), None);
        let err = GeoDb::geofeed("192.0.2.0/24,FR\nbad,FR\n").unwrap_err();
        assert_eq!(err.line, 2);
        let err = GeoDb::geofeed("192.0.2.0/24,FRA\n").unwrap_err();
        assert_eq!(err.line, 1);
    }

    #[test]
    fn geo_block_policies() {
        let fr: Country = "fr".parse().unwrap();
        let de: Country = "DE".parse().unwrap();
        let only = GeoBlock::allow_only(["FR"]).unwrap();
        assert!(!only.refuses(Some(fr)));
        assert!(only.refuses(Some(de)));
        assert!(!only.refuses(None));
        assert!(only.clone().deny_unknown(true).refuses(None));
        let deny = GeoBlock::deny(["DE"]).unwrap();
        assert!(deny.refuses(Some(de)));
        assert!(!deny.refuses(Some(fr)));
        assert!(GeoBlock::deny(["Germany"]).is_err());
        assert_eq!(Country::eu().len(), 27);
    }
}
