//! Error types: configuration mistakes apart from store failures.

use std::fmt;

/// A configuration mistake, reported where it is made: a malformed rule string, an invalid
/// setting, a file that cannot be used. The message names the field.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConfigError {
    field: String,
    message: String,
}

impl ConfigError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn in_field(mut self, field: &str) -> Self {
        if self.field != field {
            self.message = format!("{}: {}", self.field, self.message);
            self.field = field.to_owned();
        }
        self
    }

    /// The setting that is wrong.
    pub fn field(&self) -> &str {
        &self.field
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid {}: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Lets `?` stop an actix-web `main() -> std::io::Result<()>` on a configuration mistake
/// (kind [`InvalidInput`](std::io::ErrorKind::InvalidInput), same message):
///
/// ```no_run
/// # #[cfg(feature = "sqlite")]
/// #[actix_web::main]
/// async fn main() -> std::io::Result<()> {
///     let store = floodgate::SqliteStore::open("ip-data.db")?;
///     let floodgate = floodgate::Floodgate::new().store(store);
///     // HttpServer::new(move || App::new().wrap(floodgate.clone()) ..) ..
///     Ok(())
/// }
/// # #[cfg(not(feature = "sqlite"))]
/// # fn main() {}
/// ```
impl From<ConfigError> for std::io::Error {
    fn from(err: ConfigError) -> Self {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, err)
    }
}

/// A store that could not answer: the database is unreachable, locked, corrupt, or full.
///
/// At request time such a failure never reaches the client as a 500: the middleware follows
/// the configured [`StoreFailure`](crate::StoreFailure) policy.
#[derive(Debug)]
#[non_exhaustive]
pub struct StoreError {
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    /// A store error with a message.
    pub fn new(message: impl Into<String>) -> Self {
        StoreError {
            message: message.into(),
            source: None,
        }
    }

    /// A store error caused by `source`.
    pub fn with_source(
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        StoreError {
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.message),
            None => f.write_str(&self.message),
        }
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Bytes that are not a [`ClientState`](crate::ClientState) encoded by
/// [`ClientState::encode`](crate::ClientState::encode): truncated, corrupt, or written by a
/// newer format version.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DecodeError {
    message: String,
}

impl DecodeError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        DecodeError {
            message: message.into(),
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "corrupt client state: {}", self.message)
    }
}

impl std::error::Error for DecodeError {}
