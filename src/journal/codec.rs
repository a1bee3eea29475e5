//! How a journaled actor's events and snapshots become bytes.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// Turns values into bytes and back, through serde. The journal stores each event's type name and
/// schema version beside its bytes, so a codec encodes only the value.
pub trait Codec: Send + Sync + 'static {
    /// The value's bytes.
    fn encode<T: Serialize>(&self, value: &T) -> Result<Vec<u8>, String>;
    /// A value from its bytes. Bytes left over are an error: they mean the bytes were written
    /// for a different type.
    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, String>;
}

/// bincode 2 with its standard configuration: compact, and the default.
#[derive(Debug, Clone, Copy, Default)]
pub struct Bincode;

impl Codec for Bincode {
    fn encode<T: Serialize>(&self, value: &T) -> Result<Vec<u8>, String> {
        bincode::serde::encode_to_vec(value, bincode::config::standard()).map_err(|e| e.to_string())
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, String> {
        let (value, read) = bincode::serde::decode_from_slice(bytes, bincode::config::standard())
            .map_err(|e| e.to_string())?;
        if read != bytes.len() {
            return Err(format!(
                "{} of {} bytes left over after decoding",
                bytes.len() - read,
                bytes.len()
            ));
        }
        Ok(value)
    }
}

/// JSON through serde_json (feature `json`): readable by other tools, larger and slower.
#[cfg(feature = "json")]
#[cfg_attr(docsrs, doc(cfg(feature = "json")))]
#[derive(Debug, Clone, Copy, Default)]
pub struct Json;

#[cfg(feature = "json")]
#[cfg_attr(docsrs, doc(cfg(feature = "json")))]
impl Codec for Json {
    fn encode<T: Serialize>(&self, value: &T) -> Result<Vec<u8>, String> {
        serde_json::to_vec(value).map_err(|e| e.to_string())
    }

    fn decode<T: DeserializeOwned>(&self, bytes: &[u8]) -> Result<T, String> {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    }
}
