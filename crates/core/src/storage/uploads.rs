//! Uploads in progress, so a transfer resumes after an interruption (tables `uploads` and
//! `upload_chunks`), and installed sticker packs (table `sticker_packs`).

use rusqlite::{OptionalExtension, params};

use super::{Tx, to_i64};
use crate::CoreError;

/// What is kept about one upload.
#[derive(Debug, Clone)]
pub struct KeptUpload {
    /// The file key's bytes.
    pub file_key: Vec<u8>,
    /// The upload's URL, once the server created it.
    pub url: Option<String>,
}

impl Tx<'_> {
    /// The upload kept under `key`.
    pub fn upload(&self, key: &str) -> Result<Option<KeptUpload>, CoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT file_key, upload_url FROM uploads WHERE upload_key = ?1")?
            .query_row([key], |r| {
                Ok(KeptUpload {
                    file_key: r.get(0)?,
                    url: r.get(1)?,
                })
            })
            .optional()?)
    }

    /// Starts an upload afresh under `key` with `file_key`: no URL, no chunk hashes.
    pub fn start_upload(&self, key: &str, file_key: &[u8], now_ms: u64) -> Result<(), CoreError> {
        self.forget_upload(key)?;
        self.conn
            .prepare_cached(
                "INSERT INTO uploads (upload_key, file_key, created_ms) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![key, file_key, to_i64(now_ms)])?;
        Ok(())
    }

    /// Records the URL the server gave the upload kept under `key`.
    pub fn set_upload_url(&self, key: &str, url: &str) -> Result<(), CoreError> {
        self.conn
            .prepare_cached("UPDATE uploads SET upload_url = ?2 WHERE upload_key = ?1")?
            .execute(params![key, url])?;
        Ok(())
    }

    /// Forgets an upload (its key, URL and chunk hashes), once its file was sent or given up.
    pub fn forget_upload(&self, key: &str) -> Result<(), CoreError> {
        self.conn
            .prepare_cached("DELETE FROM uploads WHERE upload_key = ?1")?
            .execute([key])?;
        self.conn
            .prepare_cached("DELETE FROM upload_chunks WHERE upload_key = ?1")?
            .execute([key])?;
        Ok(())
    }

    /// Records the SHA-256 of chunks about to be sent.
    pub fn record_upload_chunks(
        &self,
        key: &str,
        hashes: &[(u64, [u8; 32])],
    ) -> Result<(), CoreError> {
        let mut insert = self.conn.prepare_cached(
            "INSERT OR REPLACE INTO upload_chunks (upload_key, chunk, sha256) VALUES (?1, ?2, ?3)",
        )?;
        for (chunk, hash) in hashes {
            insert.execute(params![key, to_i64(*chunk), hash.as_slice()])?;
        }
        Ok(())
    }

    /// The SHA-256 recorded for chunk `chunk` of the upload kept under `key`.
    pub fn upload_chunk(&self, key: &str, chunk: u64) -> Result<Option<Vec<u8>>, CoreError> {
        Ok(self
            .conn
            .prepare_cached(
                "SELECT sha256 FROM upload_chunks WHERE upload_key = ?1 AND chunk = ?2",
            )?
            .query_row(params![key, to_i64(chunk)], |r| r.get(0))
            .optional()?)
    }

    /// Uploads kept under keys that start with `prefix` other than `key` (earlier versions of
    /// the same file to the same chat), with their URLs.
    pub fn uploads_like(
        &self,
        prefix: &str,
        key: &str,
    ) -> Result<Vec<(String, Option<String>)>, CoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT upload_key, upload_url FROM uploads WHERE upload_key != ?1")?;
        let rows = stmt.query_map([key], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (other, url) = row?;
            if other.starts_with(prefix) {
                out.push((other, url));
            }
        }
        Ok(out)
    }

    /// Installs (or updates) a sticker pack, given its id and encoding.
    pub fn store_sticker_pack(&self, id: &[u8], pack: &[u8], now_ms: u64) -> Result<(), CoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO sticker_packs (pack_id, pack, installed_ms) VALUES (?1, ?2, ?3)
                 ON CONFLICT (pack_id) DO UPDATE SET pack = ?2",
            )?
            .execute(params![id, pack, to_i64(now_ms)])?;
        Ok(())
    }

    /// An installed sticker pack's encoding.
    pub fn sticker_pack(&self, id: &[u8]) -> Result<Option<Vec<u8>>, CoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT pack FROM sticker_packs WHERE pack_id = ?1")?
            .query_row([id], |r| r.get(0))
            .optional()?)
    }

    /// Every installed sticker pack's encoding, in the order they were installed.
    pub fn sticker_packs(&self) -> Result<Vec<Vec<u8>>, CoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT pack FROM sticker_packs ORDER BY installed_ms, pack_id")?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
