//! Named limits on everything that can grow. Units come last in each name.
//!
//! A limit that is hit is backpressure or a clear error (see [`crate::ErrorCode`]), never a crash
//! or an unbounded allocation. These are fixed in protocol version 1; raising one past the value
//! here needs a protocol version bump, since peers size their buffers by them.

/// Largest WebSocket frame either side accepts. A bigger frame closes the connection.
pub const FRAME_BYTES_MAX: usize = 1024 * 1024;

/// Largest MLS application message (ciphertext) the server stores.
pub const MESSAGE_CIPHERTEXT_BYTES_MAX: usize = 256 * 1024;

/// Largest MLS commit or proposal the server stores. Commits grow with group size.
pub const HANDSHAKE_BYTES_MAX: usize = FRAME_BYTES_MAX - 64 * 1024;

/// Largest text a client puts in one message, in bytes of UTF-8.
pub const MESSAGE_TEXT_BYTES_MAX: usize = 64 * 1024;

/// Largest single key package.
pub const KEY_PACKAGE_BYTES_MAX: usize = 16 * 1024;

/// Most one-time key packages one upload may carry.
pub const KEY_PACKAGES_PER_UPLOAD_MAX: usize = 100;

/// Most one-time key packages a new device may bring with it (registration, recovery, a
/// linked device's first upload is an ordinary upload): a device that needs more uploads
/// them once logged in, charged to its account.
pub const KEY_PACKAGES_AT_REGISTER_MAX: usize = 32;

/// Most one-time key packages the server keeps for one device.
pub const KEY_PACKAGES_STORED_PER_DEVICE_MAX: usize = 200;

/// Most log entries or welcomes one sync page returns.
pub const SYNC_PAGE_ENTRIES_MAX: u32 = 500;

/// Most unused key-package claims the server remembers per claiming account (the oldest go
/// first): what its commits may add devices with. Claims are rate-limited well below this.
pub const CLAIMS_KEPT_PER_ACCOUNT_MAX: usize = 10_000;

/// Most archive heads a link approval carries (about 30 bytes each, within
/// `LINK_SEALED_BYTES_MAX` beside the account secrets): the restore of that many groups is
/// checked for a held-back tail.
pub const LINK_ARCHIVE_HEADS_MAX: usize = 1_000;

/// Most groups one `ListGroups` page returns (about 60 bytes each, far under a frame), so
/// a device in very many groups, junk ones included, can always list them.
pub const GROUP_LIST_PAGE_MAX: u32 = 1_000;

/// Most devices one commit may add or remove, and most welcome recipients it names.
pub const COMMIT_DEVICE_CHANGES_MAX: usize = 1024;

/// Most requests a connection may have in flight; further frames wait (TCP backpressure).
pub const REQUESTS_IN_FLIGHT_PER_CONNECTION_MAX: usize = 64;

/// Depth of a connection's outgoing queue. A client that falls this far behind on pushes is
/// told to resynchronise instead of being buffered without bound.
pub const PUSH_QUEUE_DEPTH_MAX: usize = 1024;

/// Longest group name, in bytes of UTF-8 (the name travels only inside MLS).
pub const GROUP_NAME_BYTES_MAX: usize = 256;

/// Most accounts seen for the first time whose keys a device looks up for one welcome or
/// commit (each is one request); leaves of accounts past it are refused as unknown.
pub const ACCOUNTS_LEARNT_PER_CHANGE_MAX: usize = 1_000;

// ---- Multi-device ----

/// Most active (not revoked) devices one account may have.
pub const DEVICES_PER_ACCOUNT_MAX: usize = 32;

/// Largest sealed device name the server stores (the name itself is encrypted by the account).
pub const DEVICE_NAME_SEALED_BYTES_MAX: usize = 512;

/// Longest device name, in bytes of UTF-8, before sealing.
pub const DEVICE_NAME_BYTES_MAX: usize = 64;

/// Largest sealed link approval (keys, certificate, key ring; no history).
pub const LINK_SEALED_BYTES_MAX: usize = 64 * 1024;

/// Largest sealed link request (a device id, two public keys and a name). Kept small because
/// anyone may file one without logging in.
pub const LINK_REQUEST_BYTES_MAX: usize = 1024;

/// How long a link request waits for approval before the server forgets it, in seconds.
pub const LINK_TTL_SECS: u64 = 10 * 60;

/// Most link requests the server holds at once, across all clients (anonymous requests must not
/// grow without bound).
pub const LINKS_PENDING_MAX: usize = 10_000;

/// Largest sealed recovery bundle (account key and archive key ring, sealed to the recovery key).
pub const RECOVERY_BUNDLE_BYTES_MAX: usize = 64 * 1024;

/// Largest history-archive segment, in bytes of ciphertext.
pub const ARCHIVE_SEGMENT_BYTES_MAX: usize = 512 * 1024;

/// Most devices `ListDevices` returns: every active one, then the most recently revoked.
pub const DEVICES_LISTED_MAX: usize = 256;

/// Most archive segments one fetch returns.
pub const ARCHIVE_PAGE_SEGMENTS_MAX: u32 = 500;

/// Most payload bytes one page of a log, welcome inbox or archive carries, so that a response
/// always fits in one frame. A page holds at least one item, and no item is larger than
/// [`HANDSHAKE_BYTES_MAX`], which leaves room for the frame around it.
pub const PAGE_BYTES_MAX: usize = 768 * 1024;

// ---- Files ----

/// Largest plaintext file a client may send, before encryption.
pub const FILE_PLAINTEXT_BYTES_MAX: u64 = 4 * 1024 * 1024 * 1024;

/// What client-side encryption may add to a file at most. The client's construction adds a
/// 16-byte tag per 1 MiB chunk and nothing else (nonces are derived, there is no header), so
/// 4 GiB grows by 64 KiB; this leaves room for any chunk size of 64 KiB or more.
pub const FILE_ENCRYPTION_OVERHEAD_BYTES_MAX: u64 = 1024 * 1024;

/// Default largest upload (ciphertext) a server accepts; a server may be configured otherwise
/// and announces its own value in `Tus-Max-Size`.
pub const FILE_CIPHERTEXT_BYTES_MAX_DEFAULT: u64 =
    FILE_PLAINTEXT_BYTES_MAX + FILE_ENCRYPTION_OVERHEAD_BYTES_MAX;

/// Default storage one account may use: its completed blobs plus the declared lengths of its
/// unfinished uploads.
pub const FILE_QUOTA_BYTES_PER_ACCOUNT_DEFAULT: u64 = 20 * 1024 * 1024 * 1024;

/// Default time an unfinished upload is kept after its last activity, in seconds.
pub const FILE_UPLOAD_EXPIRY_SECS_DEFAULT: u64 = 24 * 60 * 60;

/// Default time a completed blob that no message references is kept, in seconds: long enough
/// for its uploader to send the message that references it.
pub const FILE_UNREFERENCED_GRACE_SECS_DEFAULT: u64 = 24 * 60 * 60;

/// Default time between two garbage collections of blobs and expired uploads, in seconds.
pub const FILE_GC_INTERVAL_SECS_DEFAULT: u64 = 10 * 60;

/// Lifetime of a file access token, in seconds.
pub const FILE_TOKEN_TTL_SECS: u64 = 24 * 60 * 60;

/// Most blobs one message may reference (and most references one message may drop).
pub const BLOBS_PER_MESSAGE_MAX: usize = 32;

/// Least one blob or upload counts against its account's quota, whatever its length: an empty
/// or tiny file still costs a row, a file on disk and its metadata, so it must not be free.
/// An account holds at most its quota divided by this many blobs.
pub const FILE_QUOTA_CHARGE_MIN_BYTES: u64 = 4 * 1024;

/// Most unfinished uploads one account may have at once (each holds a row and a partial file
/// until it completes, is terminated or expires). Uploads are sent one after another; this
/// leaves room for many devices resuming at once, not for hoarding.
pub const FILE_UNFINISHED_UPLOADS_PER_ACCOUNT_MAX: u64 = 64;

/// Largest encoded message a client encrypts (text, file message with its thumbnail, sticker
/// pack): room is left under [`MESSAGE_CIPHERTEXT_BYTES_MAX`] for MLS's own framing.
pub const APP_MESSAGE_BYTES_MAX: usize = 192 * 1024;

/// Most file transfers the server runs at once, across all clients: PATCH bodies being
/// written (each holds a write buffer and a body frame) and GET bodies being read (each holds
/// a read chunk). Past it a transfer is refused with `unavailable` (HTTP 503, Retry-After), so
/// memory stays bounded however many clients come.
pub const FILE_TRANSFERS_IN_FLIGHT_MAX: usize = 256;

/// Most file transfers one device runs at once (HTTP 429 `too_many_transfers` past it), so one
/// device cannot take every server-wide slot. A client needs one or two.
pub const FILE_TRANSFERS_PER_DEVICE_MAX: usize = 8;

/// Most file transfers the devices of one account run at once (HTTP 429 past it): below
/// [`FILE_TRANSFERS_IN_FLIGHT_MAX`], so one account's 32 devices cannot take every slot.
pub const FILE_TRANSFERS_PER_ACCOUNT_MAX: usize = 16;

/// How long a download waits for its client to take the next bytes before it is cut off,
/// in seconds: a client reading slowly on purpose must not hold a transfer slot forever.
pub const FILE_DOWNLOAD_IDLE_SECS_DEFAULT: u64 = 60;

/// Shortest time a server may keep an unfinished upload after its last chunk, in seconds: less
/// and a client on a slow or interrupted link could never resume.
pub const FILE_UPLOAD_EXPIRY_SECS_MIN: u64 = 60;

/// Longest time a server may keep an unfinished upload after its last chunk, in seconds. A
/// bound keeps expiry times (now plus this) far from overflowing, from HTTP dates past year
/// 9999 and from negative numbers in SQL.
pub const FILE_UPLOAD_EXPIRY_SECS_MAX: u64 = 365 * 24 * 60 * 60;

/// Shortest time a server may keep a complete blob that no message references, in seconds:
/// less and an uploader could lose a file between uploading it and sending its message.
pub const FILE_UNREFERENCED_GRACE_SECS_MIN: u64 = 60;

/// Longest time a server may keep a complete blob that no message references, in seconds
/// (bounded for the same reasons as [`FILE_UPLOAD_EXPIRY_SECS_MAX`]).
pub const FILE_UNREFERENCED_GRACE_SECS_MAX: u64 = 365 * 24 * 60 * 60;

/// Longest time between two garbage collections, in seconds.
pub const FILE_GC_INTERVAL_SECS_MAX: u64 = 365 * 24 * 60 * 60;
