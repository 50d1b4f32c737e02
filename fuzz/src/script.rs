//! An input read as a script: bytes, big-endian integers and chunks (a 2-byte big-endian
//! length, then that many bytes). Past the end everything reads as absent, and a chunk whose
//! length runs past the end takes what is left, so every input is a valid script.
//! [`Writer`] builds scripts for the seed corpus.

/// Reads a fuzz input as a script.
pub struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        Self { data }
    }

    /// Whether everything was read.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The next `n` bytes, or fewer at the end.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, tail) = self.data.split_at(n.min(self.data.len()));
        self.data = tail;
        head
    }

    /// The next byte.
    pub fn u8(&mut self) -> Option<u8> {
        self.bytes(1).first().copied()
    }

    /// The next two bytes, big-endian.
    pub fn u16(&mut self) -> Option<u16> {
        match self.bytes(2) {
            [a, b] => Some(u16::from_be_bytes([*a, *b])),
            _ => None,
        }
    }

    /// The next four bytes, big-endian.
    pub fn u32(&mut self) -> Option<u32> {
        match self.bytes(4) {
            [a, b, c, d] => Some(u32::from_be_bytes([*a, *b, *c, *d])),
            _ => None,
        }
    }

    /// The next chunk: a 2-byte length, then up to that many bytes.
    pub fn chunk(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        Some(self.bytes(usize::from(n)))
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        self.bytes(self.data.len())
    }
}

/// Builds a script (for seeds).
#[derive(Default)]
pub struct Writer {
    out: Vec<u8>,
}

impl Writer {
    /// An empty script.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a byte.
    pub fn u8(&mut self, b: u8) -> &mut Self {
        self.out.push(b);
        self
    }

    /// Appends two bytes, big-endian.
    pub fn u16(&mut self, v: u16) -> &mut Self {
        self.out.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends four bytes, big-endian.
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.out.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Appends a chunk (at most 65535 bytes: longer ones are cut, as a reader would).
    pub fn chunk(&mut self, bytes: &[u8]) -> &mut Self {
        let n = bytes.len().min(usize::from(u16::MAX));
        self.u16(n as u16);
        self.out.extend_from_slice(&bytes[..n]);
        self
    }

    /// Appends raw bytes.
    pub fn raw(&mut self, bytes: &[u8]) -> &mut Self {
        self.out.extend_from_slice(bytes);
        self
    }

    /// The script.
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }
}
