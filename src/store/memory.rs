//! An in-memory store for unit tests of the layers above the store. Never a stand-in for a
//! real backend in end-to-end tests.

use super::{Store, StoreError, valid_key};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Default)]
pub struct Memory {
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
}

impl Memory {
    pub fn new() -> Memory {
        Memory::default()
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
        // A panic while holding the lock cannot leave the map half-updated (every operation is
        // a single insert, remove or read), so a poisoned lock is still consistent.
        self.objects.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check(&self, key: &str) -> Result<(), StoreError> {
        if valid_key(key) {
            Ok(())
        } else {
            Err(StoreError::BadKey {
                store: self.describe(),
                key: key.into(),
            })
        }
    }

    fn not_found(&self, key: &str) -> StoreError {
        StoreError::NotFound {
            store: self.describe(),
            key: key.into(),
        }
    }
}

#[async_trait]
impl Store for Memory {
    fn is_local(&self) -> bool {
        true
    }

    fn describe(&self) -> String {
        "memory store".into()
    }

    async fn put(&self, key: &str, data: Vec<u8>) -> Result<(), StoreError> {
        self.check(key)?;
        self.map().insert(key.to_string(), data);
        Ok(())
    }

    async fn put_new(&self, key: &str, data: Vec<u8>) -> Result<bool, StoreError> {
        self.check(key)?;
        let mut map = self.map();
        if map.contains_key(key) {
            return Ok(false);
        }
        map.insert(key.to_string(), data);
        Ok(true)
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.check(key)?;
        self.map()
            .get(key)
            .cloned()
            .ok_or_else(|| self.not_found(key))
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        let all = self.get(key).await?;
        let start = (offset as usize).min(all.len());
        let end = start.saturating_add(len as usize).min(all.len());
        Ok(all[start..end].to_vec())
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.check(key)?;
        Ok(self.map().contains_key(key))
    }

    async fn list_sizes(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        Ok(self
            .map()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.len() as u64))
            .collect())
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        Ok(self
            .map()
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect())
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.check(key)?;
        self.map().remove(key);
        Ok(())
    }
}
