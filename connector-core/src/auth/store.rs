//! Durable storage of rotated credentials.

use async_trait::async_trait;
use secrecy::SecretString;
use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;

use crate::Error;

/// Where a provider keeps credentials that change at run time (rotated OAuth2
/// refresh tokens). The daemon's implementation is a Postgres table.
///
/// # Contract
/// - `save` returns only once the value is durable: a process killed right
///   after `save` returns finds the value with `load` on restart. Providers
///   call it before they use the access token that came with the new value.
/// - `key` names the connection and the config value the credential
///   descends from (see [`AuthContext`](super::AuthContext)); it is not secret.
/// - Implementations never log or echo the value.
#[async_trait]
pub trait CredentialStore: Send + Sync + fmt::Debug {
    async fn load(&self, key: &str) -> Result<Option<SecretString>, Error>;
    async fn save(&self, key: &str, value: &SecretString) -> Result<(), Error>;
}

/// A store that lives as long as the process: for tests and one-off runs.
#[derive(Default)]
pub struct MemoryCredentialStore(Mutex<HashMap<String, SecretString>>);

impl fmt::Debug for MemoryCredentialStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MemoryCredentialStore")
    }
}

#[async_trait]
impl CredentialStore for MemoryCredentialStore {
    async fn load(&self, key: &str) -> Result<Option<SecretString>, Error> {
        Ok(self.0.lock().ok().and_then(|m| m.get(key).cloned()))
    }
    async fn save(&self, key: &str, value: &SecretString) -> Result<(), Error> {
        self.0
            .lock()
            .map_err(|_| Error::Storage("credential store lock poisoned".into()))?
            .insert(key.to_owned(), value.clone());
        Ok(())
    }
}
