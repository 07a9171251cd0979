use std::fmt;

/// Errors of the data library. Messages are lowercase and name the file, key or column at fault.
#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// The pipeline spec is invalid; `key` is the dotted path of the bad key.
    #[error("invalid pipeline spec: `{key}`: {message}")]
    Spec { key: String, message: String },
    /// The TOML could not be parsed (syntax, unknown key, wrong type); toml names the key.
    #[error("invalid pipeline spec: {0}")]
    SpecSyntax(String),
    /// A whole input file cannot be used (wrong schema, not JSONL, unreadable compression).
    #[error("unreadable input {file}: {message}")]
    UnreadableFile { file: String, message: String },
    /// Object store or local I/O failed; usually transient.
    #[error("i/o error on {location}: {source}")]
    Io {
        location: String,
        #[source]
        source: std::io::Error,
    },
    #[error("object store error on {location}: {source}")]
    Store {
        location: String,
        #[source]
        source: object_store::Error,
    },
    #[error("invalid location `{0}`: {1}")]
    Location(String, String),
    #[error("parquet error on {location}: {message}")]
    Parquet { location: String, message: String },
    #[error("{0}")]
    Other(String),
}

impl PipelineError {
    pub fn spec(key: impl fmt::Display, message: impl fmt::Display) -> Self {
        PipelineError::Spec { key: key.to_string(), message: message.to_string() }
    }

    /// Whether retrying the same task can succeed. Spec and schema errors recur on every attempt.
    pub fn is_retryable(&self) -> bool {
        matches!(self, PipelineError::Io { .. } | PipelineError::Store { .. } | PipelineError::Other(_))
    }
}

pub type PipelineResult<T> = Result<T, PipelineError>;
