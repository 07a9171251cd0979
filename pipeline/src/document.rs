//! The document every stage sees: an id, the text, its provenance and any other fields of the
//! input record, kept as they were so that nothing the user had is lost on the way out.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Document {
    pub id: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lang: Option<String>,
    /// Every other field of the input record, in key order.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl Document {
    pub fn new(id: impl Into<String>, text: impl Into<String>) -> Self {
        Document { id: id.into(), text: text.into(), source: None, lang: None, extra: Map::new() }
    }
}
