//! The request cache: one object per answered request under the cache prefix, named by the
//! SHA-256 of (model, full request payload). Written as each answer arrives, so an attempt
//! killed mid-shard loses only its requests in flight; read before every request, so a rerun,
//! a re-leased shard or a job with more documents sends only what was never answered.

use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::SynthError;

/// One answered request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Answer {
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finish_reason: Option<String>,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// Whether the server reported usage (else the counts are 0).
    #[serde(default)]
    pub usage_reported: bool,
    /// The base URL that answered.
    pub endpoint: String,
}

#[derive(Serialize, Deserialize)]
struct Entry {
    format: String,
    key: String,
    model: String,
    answer: Answer,
}

const ENTRY_FORMAT: &str = "lehr.synth.cache/v1";

/// The cache key of a request: hex SHA-256 of the model name, a newline and the payload JSON.
pub fn request_key(model: &str, payload: &str) -> String {
    let mut h = Sha256::new();
    h.update(model.as_bytes());
    h.update(b"\n");
    h.update(payload.as_bytes());
    hex::encode(h.finalize())
}

#[derive(Clone)]
pub struct Cache {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
    url: String,
}

/// What a lookup found.
pub enum Lookup {
    Hit(Answer),
    Miss,
    /// An entry that does not parse (counted, then answered again).
    Corrupt,
}

impl Cache {
    /// `url` is for messages only.
    pub fn new(store: Arc<dyn ObjectStore>, prefix: Path, url: String) -> Cache {
        Cache { store, prefix, url }
    }

    fn path(&self, key: &str) -> Path {
        self.prefix.child(&key[..2]).child(format!("{key}.json"))
    }

    pub async fn get(&self, key: &str) -> Result<Lookup, SynthError> {
        match self.store.get(&self.path(key)).await {
            Ok(r) => {
                let bytes = r.bytes().await.map_err(|e| self.err(key, e))?;
                Ok(match serde_json::from_slice::<Entry>(&bytes) {
                    Ok(e) if e.format == ENTRY_FORMAT && e.key == key => Lookup::Hit(e.answer),
                    _ => Lookup::Corrupt,
                })
            }
            Err(object_store::Error::NotFound { .. }) => Ok(Lookup::Miss),
            Err(e) => Err(self.err(key, e)),
        }
    }

    pub async fn put(&self, key: &str, model: &str, answer: &Answer) -> Result<(), SynthError> {
        let entry = Entry { format: ENTRY_FORMAT.into(), key: key.into(), model: model.into(), answer: answer.clone() };
        let bytes = serde_json::to_vec(&entry).expect("cache entry serializes");
        self.store.put(&self.path(key), PutPayload::from(bytes)).await.map_err(|e| self.err(key, e))?;
        Ok(())
    }

    fn err(&self, key: &str, e: object_store::Error) -> SynthError {
        SynthError::Cache(format!("{}/{}/{key}.json: {e}", self.url, &key[..2]))
    }
}
