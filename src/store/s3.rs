//! A repository in an S3 bucket (AWS or any S3-compatible server: Garage, Ceph RGW, MinIO).
//!
//! Keys are stored under the repository's prefix. Transient failures (5xx, SlowDown,
//! timeouts, connection resets) are retried by the SDK's standard retry strategy, with
//! exponential backoff and jitter, before an error reaches the caller.
//!
//! Conditional creation (`If-None-Match: *`) is used for `put_new` only where the server has
//! been seen to honour it: Garage answers 200 and overwrites. `conditional_writes` probes
//! once per process, against the repository's own probe object. Where it is not honoured,
//! `put_new` checks with HEAD and then writes, and two racing creators could both "win". Lock
//! and key names are random; manifest names carry the time, so two backups of a series in the
//! same second choose the same one, and manifests are created through
//! [`super::create_manifest`], which reads them back (see format-spec, "Write ordering").

use super::{RequestCounter, RequestKind, Requests, Store, StoreError};
use crate::layout;
use async_trait::async_trait;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Region, RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::StorageClass;
use std::time::Duration;
use tokio::sync::OnceCell;

/// Where and how to reach a bucket.
#[derive(Debug, Clone, Default)]
pub struct S3Options {
    pub bucket: String,
    /// Empty, or ending in `/`.
    pub prefix: String,
    /// For S3-compatible servers; path-style addressing is used whenever this is set.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Storage class for chunk objects; everything else is always STANDARD.
    pub chunk_storage_class: Option<String>,
}

/// Storage classes that S3 accepts for PUT. Chunks in GLACIER or DEEP_ARCHIVE cannot be read
/// without a restore request first; we allow them, since that is a deliberate choice.
pub const STORAGE_CLASSES: &[&str] = &[
    "STANDARD",
    "REDUCED_REDUNDANCY",
    "STANDARD_IA",
    "ONEZONE_IA",
    "INTELLIGENT_TIERING",
    "GLACIER_IR",
    "GLACIER",
    "DEEP_ARCHIVE",
];

/// Checks a storage class name against what S3 accepts.
pub fn storage_class(name: Option<&str>) -> Result<Option<StorageClass>, String> {
    match name {
        None => Ok(None),
        Some(c) if STORAGE_CLASSES.contains(&c) => Ok(Some(StorageClass::from(c))),
        Some(c) => Err(format!(
            "unknown storage class {c:?} (known: {})",
            STORAGE_CLASSES.join(", ")
        )),
    }
}

impl S3Options {
    /// Parses `s3://bucket[/prefix]`.
    pub fn from_url(url: &str) -> Result<S3Options, String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{url:?} is not an s3:// URL"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!(
                "{url:?} names no bucket (expected s3://bucket/prefix)"
            ));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.split('/').any(|s| s == "." || s == "..") {
            return Err(format!(
                "{url:?}: the prefix may not contain . or .. segments"
            ));
        }
        let prefix = if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        };
        Ok(S3Options {
            bucket: bucket.to_string(),
            prefix,
            ..S3Options::default()
        })
    }
}

pub struct S3 {
    client: Client,
    bucket: String,
    prefix: String,
    shown: String,
    chunk_class: std::sync::RwLock<Option<StorageClass>>,
    counter: RequestCounter,
    conditional: OnceCell<bool>,
    /// Whether the user was told that chunks go to an archive class.
    archive_noted: std::sync::atomic::AtomicBool,
}

/// A listing's range of keys: after the first (excluded), up to the second (included).
type Range = (Option<String>, Option<String>);

/// Ranges that cover every key under `base` (the full `chunks/` prefix) after `after`, the
/// last key of a first page of `listed` keys: split evenly over the chunk ids still ahead
/// (ids are uniform, so the ranges hold about as many keys each), about a page each, 2 to 32
/// of them. One range, the rest of the listing, when `after` is not a chunk's name.
fn chunk_ranges(base: &str, after: &str, listed: usize) -> Vec<Range> {
    // chunks/<2 hex>/<64 hex>, the directory repeating the id's first byte: the id's first
    // 16 bits say how far the page got. Anything else (`chunks/ff/0000…`, a `+`) says
    // nothing, and bounds drawn from it could fall before `after`.
    let lower_hex = |t: &str| {
        t.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let reached = after
        .strip_prefix(base)
        .filter(|rest| {
            rest.len() == 67
                && rest.as_bytes()[2] == b'/'
                && rest[..2] == rest[3..5]
                && lower_hex(&rest[..2])
                && lower_hex(&rest[3..])
        })
        .and_then(|rest| u32::from_str_radix(&rest[3..7], 16).ok());
    let Some(reached) = reached.filter(|&r| r < 0xffff) else {
        return vec![(Some(after.to_string()), None)];
    };
    let ahead = 0xffff - reached;
    let estimated = listed as u64 * u64::from(ahead) / u64::from(reached + 1);
    // Aimed below a page (1,000 keys), so that most ranges end within one request.
    let count = (estimated.div_ceil(850).clamp(2, 32) as u32).min(ahead);
    let bound = |i: u32| {
        let v = reached + ahead * i / count;
        format!("{base}{:02x}/{v:04x}", v >> 8)
    };
    (0..count)
        .map(|i| {
            let from = if i == 0 { after.to_string() } else { bound(i) };
            (Some(from), (i + 1 < count).then(|| bound(i + 1)))
        })
        .collect()
}

/// Keys listed in one range, and whether keys are left after it.
struct Listed {
    keys: Vec<(String, u64)>,
    more: bool,
}

/// What the probe object holds; only its existence matters.
const PROBE_BODY: &[u8] = b"blockvault: probes whether this server honours If-None-Match\n";

/// How many times one request is tried before its failure is the run's failure. With the
/// standard strategy's backoff (up to 20 s between tries) this rides out a server restart.
const MAX_ATTEMPTS: u32 = 10;

impl S3 {
    pub async fn connect(opts: S3Options) -> Result<S3, StoreError> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest());
        if let Some(r) = &opts.region {
            loader = loader.region(Region::new(r.clone()));
        }
        if let Some(e) = &opts.endpoint {
            loader = loader.endpoint_url(e.clone());
        }
        let shared = loader.load().await;
        let endpoint = opts
            .endpoint
            .clone()
            .or_else(|| std::env::var("AWS_ENDPOINT_URL").ok());
        let shown = match &endpoint {
            Some(e) => format!("s3://{}/{} at {e}", opts.bucket, opts.prefix),
            None => format!("s3://{}/{}", opts.bucket, opts.prefix),
        };
        let mut b = aws_sdk_s3::config::Builder::from(&shared)
            // Garage rejects the SDK's default streaming checksums (S3-TESTING.md).
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(MAX_ATTEMPTS)
                    .with_initial_backoff(Duration::from_millis(200))
                    .with_max_backoff(Duration::from_secs(20)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(Duration::from_secs(300))
                    .build(),
            );
        if endpoint.is_some() {
            b = b.force_path_style(true);
        }
        if shared.region().is_none() {
            // Without a region the SDK cannot sign; us-east-1 is what S3-compatible servers
            // most often expect when they say nothing.
            b = b.region(Region::new("us-east-1"));
        }
        let chunk_class =
            storage_class(opts.chunk_storage_class.as_deref()).map_err(|message| {
                StoreError::Remote {
                    store: shown.clone(),
                    key: String::new(),
                    message,
                }
            })?;
        Ok(S3 {
            client: Client::from_conf(b.build()),
            bucket: opts.bucket,
            prefix: opts.prefix,
            shown,
            chunk_class: std::sync::RwLock::new(chunk_class),
            counter: RequestCounter::default(),
            conditional: OnceCell::new(),
            archive_noted: Default::default(),
        })
    }

    /// Sets the storage class for chunk objects written from now on (the repository's
    /// default, read from its config after opening, unless the command line chose one).
    pub fn set_chunk_storage_class(&self, class: Option<&str>) -> Result<(), String> {
        let c = storage_class(class)?;
        *self.chunk_class.write().unwrap_or_else(|p| p.into_inner()) = c;
        Ok(())
    }

    fn full(&self, key: &str) -> Result<String, StoreError> {
        if !super::valid_key(key) {
            return Err(StoreError::BadKey {
                store: self.describe(),
                key: key.into(),
            });
        }
        Ok(format!("{}{key}", self.prefix))
    }

    /// Turns an SDK error into one that says, in a user's words, what is wrong and where.
    fn error<E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static>(
        &self,
        key: &str,
        err: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StoreError {
        let status = err.raw_response().map(|r| r.status().as_u16());
        let code = err.code().map(str::to_string);
        if status == Some(404) && code.as_deref() != Some("NoSuchBucket") {
            return StoreError::NotFound {
                store: self.describe(),
                key: key.into(),
            };
        }
        // One line, short: the SDK's full context (`DisplayErrorContext`) spans several
        // lines for a credentials failure and ends in a Debug dump of the whole error.
        let why = reason(&err);
        let denied = |message| StoreError::Denied {
            store: self.describe(),
            key: key.into(),
            message,
        };
        let message = match (code.as_deref(), status) {
            (Some("NoSuchBucket"), _) => format!("bucket {:?} does not exist", self.bucket),
            // A 403 too, but about the object's storage class, not about permission.
            (Some("InvalidObjectState"), _) => format!(
                "the object is in an archive storage class or tier (GLACIER, DEEP_ARCHIVE, an Intelligent-Tiering archive tier): restore (thaw) it through S3 first, then run this again: {why}"
            ),
            // Credentials the server does not accept: no answer about what they may do.
            (Some("InvalidAccessKeyId") | Some("SignatureDoesNotMatch"), _) => {
                format!(
                    "access denied to bucket {:?} (check the credentials and the bucket policy): {why}",
                    self.bucket
                )
            }
            // A 403 without a code is a HEAD's (no body): permission is what it is about.
            (Some("AccessDenied"), _) | (None, Some(403)) => {
                return denied(format!(
                    "access denied to bucket {:?} (check the credentials and the bucket policy): {why}",
                    self.bucket
                ));
            }
            // Refused for another reason (a skewed clock, an expired token): not a lack of
            // permission, which a reader may go on without a lock for.
            (_, Some(403)) => {
                format!(
                    "access denied to bucket {:?} (check the credentials, their expiry and this machine's clock): {why}",
                    self.bucket
                )
            }
            (
                Some("AuthorizationHeaderMalformed")
                | Some("PermanentRedirect")
                | Some("IllegalLocationConstraintException"),
                _,
            )
            | (_, Some(301)) => {
                format!(
                    "wrong region for bucket {:?} (set --s3-region or AWS_REGION): {why}",
                    self.bucket
                )
            }
            _ if code.is_none() && why.contains("credential") => {
                "no usable AWS credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or an instance role)".to_string()
            }
            _ if matches!(
                err,
                SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)
            ) =>
            {
                format!("the endpoint is unreachable after {MAX_ATTEMPTS} tries: {why}")
            }
            (_, Some(status)) => format!("{why} (HTTP {status})"),
            _ => why,
        };
        StoreError::Remote {
            store: self.describe(),
            key: key.into(),
            message,
        }
    }

    /// The whole body of a GET; a connection lost midway is this key's error.
    async fn read_body(&self, key: &str, body: ByteStream) -> Result<Vec<u8>, StoreError> {
        match body.collect().await {
            Ok(b) => Ok(b.into_bytes().to_vec()),
            Err(e) => Err(StoreError::Remote {
                store: self.describe(),
                key: key.into(),
                message: format!("reading the object failed midway: {e}"),
            }),
        }
    }

    /// Whether the server refuses a conditional create of an existing key, as AWS S3 does
    /// and Garage does not. Asked once per process of the server itself, with the
    /// repository's probe object ([`layout::PROBE`]): a refusal proves conditional writes are
    /// honoured; two acceptances in a row prove they are not. A repository that already holds
    /// the probe costs AWS one request. Nothing is cached across processes: an answer keyed by
    /// endpoint goes stale when another server comes up on the same address, and a stale
    /// "honoured" would let a manifest be overwritten.
    pub async fn conditional_writes(&self) -> Result<bool, StoreError> {
        self.conditional
            .get_or_try_init(|| async {
                for _ in 0..2 {
                    if !self
                        .create_if_absent(layout::PROBE, PROBE_BODY.to_vec())
                        .await?
                    {
                        return Ok(true);
                    }
                }
                Ok(false)
            })
            .await
            .copied()
    }

    /// PUT with `If-None-Match: *`: Ok(false) when the server says the key exists. Tried
    /// again on `409 ConditionalRequestConflict`, AWS's answer while another conditional
    /// write of the key is in flight, which it asks clients to retry (the SDK does not).
    async fn create_if_absent(&self, key: &str, data: Vec<u8>) -> Result<bool, StoreError> {
        let full = self.full(key)?;
        let mut conflicts = 0u64;
        loop {
            self.counter.count(RequestKind::Put);
            let res = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(&full)
                .if_none_match("*")
                .body(ByteStream::from(data.clone()))
                .send()
                .await;
            match res {
                Ok(_) => return Ok(true),
                Err(e) => match e.raw_response().map(|r| r.status().as_u16()) {
                    Some(412) => return Ok(false),
                    Some(409) if conflicts < 5 => {
                        conflicts += 1;
                        tokio::time::sleep(Duration::from_millis(100 * conflicts)).await;
                    }
                    _ => return Err(self.error(key, e)),
                },
            }
        }
    }

    /// Lists the keys under `prefix` after `from` and up to `to` (both full keys; `from`
    /// excluded, `to` included), with their sizes: every page, or only the first when
    /// `one_page` (then `more` says whether keys are left).
    async fn list_range(
        &self,
        prefix: &str,
        from: Option<String>,
        to: Option<String>,
        one_page: bool,
    ) -> Result<Listed, StoreError> {
        let full_prefix = format!("{}{prefix}", self.prefix);
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            self.counter.count(RequestKind::List);
            let page = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&full_prefix)
                .set_start_after(from.clone())
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| self.error(&format!("{prefix}*"), e))?;
            for obj in page.contents() {
                let Some(full) = obj.key() else { continue };
                if to.as_deref().is_some_and(|to| full > to) {
                    return Ok(Listed { keys, more: false });
                }
                if let Some(k) = full.strip_prefix(&self.prefix)
                    && super::valid_key(k)
                {
                    keys.push((k.to_string(), obj.size().unwrap_or(0).max(0) as u64));
                }
            }
            match page.next_continuation_token() {
                Some(t) if page.is_truncated() == Some(true) => {
                    if one_page {
                        return Ok(Listed { keys, more: true });
                    }
                    token = Some(t.to_string());
                }
                _ => return Ok(Listed { keys, more: false }),
            }
        }
    }

    /// The bucket exists and we may use it: one cheap request, for clear errors up front.
    pub async fn check_bucket(&self) -> Result<(), StoreError> {
        self.counter.count(RequestKind::Head);
        match self.client.head_bucket().bucket(&self.bucket).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(404) => {
                Err(StoreError::Remote {
                    store: self.describe(),
                    key: String::new(),
                    message: format!("bucket {:?} does not exist", self.bucket),
                })
            }
            Err(e) => Err(self.error("", e)),
        }
    }
}

/// Why a request failed, in one line: the server's error code and message when it sent
/// them, else the innermost cause ("Connection refused (os error 111)").
fn reason<E: ProvideErrorMetadata + std::error::Error + 'static>(
    err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> String {
    let text = match (err.code(), err.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => {
            let mut cause: &dyn std::error::Error = err;
            while let Some(next) = cause.source() {
                cause = next;
            }
            cause.to_string()
        }
    };
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The requests themselves; the [`Store`] methods race each against a stop signal.
impl S3 {
    async fn put_raw(&self, key: &str, data: Vec<u8>) -> Result<(), StoreError> {
        let full = self.full(key)?;
        let mut req = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(&full)
            .body(ByteStream::from(data));
        // Only chunk data goes to colder storage: listing and planning read manifests,
        // pointers and locks, which must stay instantly readable.
        if key.starts_with(layout::CHUNKS) {
            let class = self
                .chunk_class
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            // Said once, when it first matters: the class may be the repository's default,
            // set at init or by whoever rewrote the config (format-spec 13), and a restore
            // will fail on these chunks until they are thawed.
            if let Some(c @ (StorageClass::Glacier | StorageClass::DeepArchive)) = &class
                && !self
                    .archive_noted
                    .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                eprintln!(
                    "note: new chunks are stored in S3 storage class {}: no restore can read them until they are restored (thawed) through S3",
                    c.as_str()
                );
            }
            req = req.set_storage_class(class);
        }
        self.counter.count(RequestKind::Put);
        req.send().await.map(drop).map_err(|e| self.error(key, e))
    }

    async fn put_new_raw(&self, key: &str, data: Vec<u8>) -> Result<bool, StoreError> {
        if self.conditional_writes().await? {
            return self.create_if_absent(key, data).await;
        }
        if self.exists(key).await? {
            return Ok(false);
        }
        self.put(key, data).await.map(|()| true)
    }

    async fn creates_atomically_raw(&self) -> Result<bool, StoreError> {
        self.conditional_writes().await
    }

    async fn get_raw(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        let full = self.full(key)?;
        self.counter.count(RequestKind::Get);
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
            .map_err(|e| self.error(key, e))?;
        self.read_body(key, out.body).await
    }

    async fn get_range_raw(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        let full = self.full(key)?;
        if len == 0 {
            // A zero-length range cannot be expressed; the object must still exist.
            return if self.exists(key).await? {
                Ok(Vec::new())
            } else {
                Err(StoreError::NotFound {
                    store: self.describe(),
                    key: key.into(),
                })
            };
        }
        let last = offset.saturating_add(len - 1);
        self.counter.count(RequestKind::Get);
        let res = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(&full)
            .range(format!("bytes={offset}-{last}"))
            .send()
            .await;
        let out = match res {
            Ok(o) => o,
            // 416: the range starts at or past the end of an existing object.
            Err(e) if e.raw_response().map(|r| r.status().as_u16()) == Some(416) => {
                return Ok(Vec::new());
            }
            Err(e) => return Err(self.error(key, e)),
        };
        // A server that ignores Range answers 200 with the whole object and no Content-Range.
        let whole_object = out.content_range().is_none();
        let mut bytes = self.read_body(key, out.body).await?;
        if whole_object {
            let start = (offset as usize).min(bytes.len());
            let end = start.saturating_add(len as usize).min(bytes.len());
            bytes = bytes[start..end].to_vec();
        }
        Ok(bytes)
    }

    async fn exists_raw(&self, key: &str) -> Result<bool, StoreError> {
        let full = self.full(key)?;
        self.counter.count(RequestKind::Head);
        match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e) => match self.error(key, e) {
                StoreError::NotFound { .. } => Ok(false),
                other => Err(other),
            },
        }
    }

    async fn list_sizes_raw(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let first = self.list_range(prefix, None, None, true).await?;
        let mut out = first.keys;
        if first.more {
            // Past one page, `chunks/` is listed in ranges at once: S3 pages one listing
            // 1,000 keys at a time, one request after the other, which is minutes for a
            // repository of millions of chunks.
            let after = out.last().map(|(k, _)| format!("{}{k}", self.prefix));
            let ranges = after
                .as_deref()
                .filter(|_| prefix == layout::CHUNKS)
                .map(|a| chunk_ranges(&format!("{}{}", self.prefix, layout::CHUNKS), a, out.len()))
                .unwrap_or_else(|| vec![(after.clone(), None)]);
            let rest = futures_util::future::try_join_all(
                ranges
                    .into_iter()
                    .map(|(from, to)| self.list_range(prefix, from, to, false)),
            )
            .await?;
            out.extend(rest.into_iter().flat_map(|r| r.keys));
        }
        out.sort();
        // The ranges meet without overlapping; this only guards the count gc reports.
        out.dedup();
        Ok(out)
    }

    async fn delete_raw(&self, key: &str) -> Result<(), StoreError> {
        let full = self.full(key)?;
        self.counter.count(RequestKind::Delete);
        match self
            .client
            .delete_object()
            .bucket(&self.bucket)
            .key(&full)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match self.error(key, e) {
                StoreError::NotFound { .. } => Ok(()),
                other => Err(other),
            },
        }
    }
}

#[async_trait]
impl Store for S3 {
    fn describe(&self) -> String {
        self.shown.clone()
    }

    fn requests(&self) -> Requests {
        self.counter.snapshot()
    }

    async fn put(&self, key: &str, data: Vec<u8>) -> Result<(), StoreError> {
        self.guarded(key, self.put_raw(key, data)).await
    }

    async fn put_new(&self, key: &str, data: Vec<u8>) -> Result<bool, StoreError> {
        self.guarded(key, self.put_new_raw(key, data)).await
    }

    async fn creates_atomically(&self) -> Result<bool, StoreError> {
        self.guarded(layout::PROBE, self.creates_atomically_raw())
            .await
    }

    async fn get(&self, key: &str) -> Result<Vec<u8>, StoreError> {
        self.guarded(key, self.get_raw(key)).await
    }

    async fn get_range(&self, key: &str, offset: u64, len: u64) -> Result<Vec<u8>, StoreError> {
        self.guarded(key, self.get_range_raw(key, offset, len))
            .await
    }

    async fn exists(&self, key: &str) -> Result<bool, StoreError> {
        self.guarded(key, self.exists_raw(key)).await
    }

    async fn list_sizes(&self, prefix: &str) -> Result<Vec<(String, u64)>, StoreError> {
        self.guarded(&format!("{prefix}*"), self.list_sizes_raw(prefix))
            .await
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.guarded(key, self.delete_raw(key)).await
    }
}

/// How long a request begun after a stop signal (releasing the lock) may take before the run
/// ends without it: a stopped run must end well within what a service manager waits before it
/// kills (systemd: 90 s), and a lock left behind goes stale.
const STOPPING_LIMIT: Duration = Duration::from_secs(10);

impl S3 {
    /// Runs one request (with its retries), abandoned when a stop signal comes: a server that
    /// hangs, or an endpoint that cannot be reached, would otherwise hold a stopped run for the
    /// SDK's timeouts and retries, minutes on end. A request begun after the stop (the lock's
    /// release) runs, for at most [`STOPPING_LIMIT`].
    async fn guarded<T>(
        &self,
        key: &str,
        request: impl std::future::Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        let remote = |message: &str| StoreError::Remote {
            store: self.shown.clone(),
            key: key.to_string(),
            message: message.to_string(),
        };
        if crate::sys::stop_asked().is_some() {
            return tokio::time::timeout(STOPPING_LIMIT, request)
                .await
                .unwrap_or_else(|_| Err(remote("no answer while stopping")));
        }
        tokio::pin!(request);
        tokio::select! {
            r = &mut request => return r,
            _ = crate::interrupt::asked() => {}
        }
        // A version's commit (its manifest, then the pointer) may reach the server all the
        // same: it gets its chance to answer, so that the run can say what it recorded.
        if key.starts_with(layout::MANIFESTS) || key.starts_with(layout::CURRENT) {
            return tokio::time::timeout(STOPPING_LIMIT, request)
                .await
                .unwrap_or_else(|_| {
                    Err(remote(
                        "no answer within 10 s of a stop: it may have been stored all the same (list shows whether the version was recorded)",
                    ))
                });
        }
        Err(remote("abandoned: a stop was asked"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_listings_split_into_ranges_that_meet() {
        let base = "vault/chunks/";
        let id = |v: u32| format!("{base}{:02x}/{v:04x}{}", v >> 8, "0".repeat(60));
        for (reached, listed, want) in [
            (0x0fff, 1000, 18..=18),
            (0x00ff, 1000, 32..=32),
            (0x7fff, 1000, 2..=2),
            (0xfffe, 1000, 1..=1),
            (0x1000, 1, 2..=2),
        ] {
            let after = id(reached);
            let ranges = chunk_ranges(base, &after, listed);
            assert!(want.contains(&ranges.len()), "{reached:x}: {ranges:?}");
            assert_eq!(ranges[0].0.as_deref(), Some(after.as_str()));
            assert_eq!(ranges.last().and_then(|r| r.1.clone()), None);
            // Each range starts where the one before ends, and the bounds rise.
            for w in ranges.windows(2) {
                assert_eq!(w[0].1, w[1].0, "{ranges:?}");
                assert!(w[0].0 < w[1].0, "{ranges:?}");
            }
        }
        // After a name that is not a chunk's, the rest in one listing.
        let misfiled = format!("{base}ff/0000{}", "0".repeat(60));
        let upper = format!("{base}AB/AB00{}", "0".repeat(60));
        for after in [
            "vault/chunks/ab/big",
            "vault/chunks/zz",
            "vault/other/ab/abcd",
            &misfiled,
            &upper,
        ] {
            assert_eq!(
                chunk_ranges(base, after, 1000),
                [(Some(after.to_string()), None)]
            );
        }
    }

    #[test]
    fn urls() {
        let o = S3Options::from_url("s3://bucket/a/b/").unwrap();
        assert_eq!((o.bucket.as_str(), o.prefix.as_str()), ("bucket", "a/b/"));
        let o = S3Options::from_url("s3://bucket").unwrap();
        assert_eq!((o.bucket.as_str(), o.prefix.as_str()), ("bucket", ""));
        assert!(S3Options::from_url("s3:///x").is_err());
        assert!(S3Options::from_url("s3://b/../x").is_err());
        assert!(S3Options::from_url("http://b").is_err());
    }
}
