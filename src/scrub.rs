//! Keeps session ids out of the log. A Streamable HTTP session id is a
//! credential: with the shared bearer token (or on a host with none) it
//! lets anyone act in that session. rmcp quotes session ids in several
//! messages (its warnings and errors, which the log keeps), so every line
//! written for an rmcp event has UUID-shaped words masked.

use std::io::{self, Write};

use tracing_subscriber::fmt::MakeWriter;

/// What replaces a session id in a log line.
pub const MASK: &str = "[session id]";

/// Writes log lines to `W`, masking UUIDs in the lines of rmcp's events.
#[derive(Debug, Clone, Copy)]
pub struct MaskSessionIds<W>(pub W);

impl<'a, W: MakeWriter<'a>> MakeWriter<'a> for MaskSessionIds<W> {
    type Writer = Masking<W::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        Masking {
            inner: self.0.make_writer(),
            mask: true,
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        Masking {
            inner: self.0.make_writer_for(meta),
            // The server's own lines never carry a session id (they name
            // none); masking them would only hide BigID's request ids.
            mask: meta.target().starts_with("rmcp"),
        }
    }
}

/// One log line's writer.
#[derive(Debug)]
pub struct Masking<W> {
    inner: W,
    mask: bool,
}

impl<W: Write> Write for Masking<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.mask {
            return self.inner.write(buf);
        }
        // tracing-subscriber formats a whole line, then writes it at once.
        let line = String::from_utf8_lossy(buf);
        self.inner.write_all(mask_uuids(&line).as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// `text` with every hyphenated UUID replaced by [`MASK`].
pub fn mask_uuids(text: &str) -> String {
    const GROUPS: [usize; 5] = [8, 4, 4, 4, 12];
    const LEN: usize = 36;
    let bytes = text.as_bytes();
    let is_uuid_at = |at: usize| {
        if at + LEN > bytes.len() {
            return false;
        }
        let mut i = at;
        for (n, group) in GROUPS.iter().enumerate() {
            if !bytes[i..i + group].iter().all(u8::is_ascii_hexdigit) {
                return false;
            }
            i += group;
            if n < GROUPS.len() - 1 {
                if bytes[i] != b'-' {
                    return false;
                }
                i += 1;
            }
        }
        true
    };
    let mut out = String::with_capacity(text.len());
    let mut start = 0;
    let mut i = 0;
    while i < bytes.len() {
        if is_uuid_at(i) {
            out.push_str(&text[start..i]);
            out.push_str(MASK);
            i += LEN;
            start = i;
        } else {
            i += 1;
        }
    }
    out.push_str(&text[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_every_uuid_and_keeps_the_rest() {
        let id = "0b6f4c1e-9d2a-4f7e-8a11-3c5d7e9f0a2b";
        let line = format!("Failed to close session {id}: gone; again \"{id}\" é");
        assert_eq!(
            mask_uuids(&line),
            format!("Failed to close session {MASK}: gone; again \"{MASK}\" é")
        );
        assert_eq!(mask_uuids("no ids here"), "no ids here");
        assert_eq!(mask_uuids("0b6f4c1e-9d2a"), "0b6f4c1e-9d2a");
    }
}
