//! Newline-delimited JSON-RPC on a byte stream (stdio), read the way rmcp's
//! `AsyncRwTransport` reads it, with one difference: a `tools/call` request
//! is decoded straight into its type.
//!
//! rmcp decodes every incoming line into its untagged `ClientRequest` enum,
//! which tries the request types one after the other; a `tools/call` fails
//! thirteen of them (a serde error built and dropped for each) before it
//! matches, most of the cost of reading a message. [`decode_fast`] takes the
//! canonical shape of a `tools/call` directly and hands rmcp the same value
//! its own decoding gives; every other line, malformed ones included, goes
//! through rmcp's own codec, so what is answered, ignored or refused stays
//! exactly as before. Writing is rmcp's transport, unchanged.

use std::{future::Future, pin::Pin};

use bytes::{BufMut, BytesMut};
use rmcp::{
    RoleServer,
    model::{
        CallToolRequest, CallToolRequestMethod, ClientJsonRpcMessage, ClientRequest, ErrorData,
        JsonRpcMessage, JsonRpcRequest, JsonRpcVersion2_0, RequestId,
    },
    service::{RxJsonRpcMessage, TxJsonRpcMessage},
    transport::{
        Transport,
        async_rw::{
            AsyncRwTransport, DEFAULT_MAX_LINE_LENGTH, JsonRpcMessageCodec,
            JsonRpcMessageCodecError,
        },
    },
};
use serde::{Deserialize, de::IgnoredAny};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, BufReader};
use tokio_util::codec::Decoder;

/// What one line of input amounts to.
#[derive(Debug)]
// Returned by value once per line and unpacked at once: boxing the message
// would only add an allocation to every call.
#[allow(clippy::large_enum_variant)]
pub enum Decoded {
    /// A message for the server.
    Message(ClientJsonRpcMessage),
    /// Nothing to act on: a blank line, unparsable bytes, or a notification
    /// rmcp ignores for compatibility.
    Skip,
    /// Well-formed JSON that is no JSON-RPC message: answered with an
    /// Invalid Request error.
    Invalid,
}

/// The top level of a canonical `tools/call` request: these four keys, each
/// once, and nothing else (a stray `result` or `error` makes rmcp refuse
/// the message, so such a line is left to rmcp).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
#[allow(dead_code)] // Read only to check the shape.
struct CallShape {
    jsonrpc: IgnoredAny,
    id: IgnoredAny,
    method: CallToolRequestMethod,
    params: IgnoredAny,
}

/// A `tools/call` request in its canonical shape, decoded straight into the
/// value rmcp's own decoding gives for it; `None` for any other line.
pub fn decode_fast(line: &[u8]) -> Option<ClientJsonRpcMessage> {
    // A BOM or leading space is rare; rmcp's own path handles it.
    if line.first() != Some(&b'{') {
        return None;
    }
    serde_json::from_slice::<CallShape>(line).ok()?;
    let request: JsonRpcRequest<CallToolRequest> = serde_json::from_slice(line).ok()?;
    Some(JsonRpcMessage::Request(JsonRpcRequest {
        jsonrpc: JsonRpcVersion2_0,
        id: request.id,
        request: ClientRequest::CallToolRequest(request.request),
    }))
}

/// Decodes one line (without its `\n`) as rmcp's stdio transport would.
pub fn decode_line(line: &[u8]) -> Decoded {
    let bare = line.strip_suffix(b"\r").unwrap_or(line);
    if bare.is_empty() {
        return Decoded::Skip;
    }
    if let Some(message) = decode_fast(bare) {
        return Decoded::Message(message);
    }
    decode_with_rmcp(line)
}

/// rmcp's own decoding of a line (without its `\n`).
pub fn decode_with_rmcp(line: &[u8]) -> Decoded {
    let mut framed = BytesMut::with_capacity(line.len() + 1);
    framed.put_slice(line);
    framed.put_u8(b'\n');
    match JsonRpcMessageCodec::<ClientJsonRpcMessage>::default().decode(&mut framed) {
        Ok(Some(message)) => Decoded::Message(message),
        Ok(None) => Decoded::Skip,
        Err(JsonRpcMessageCodecError::Serde(e)) => match e.classify() {
            // No id to answer to, and answering garbage can start an error
            // storm with a peer that echoes it back (rmcp does the same).
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                // Never the error text: serde quotes the input, which may hold a secret.
                tracing::debug!("ignoring an unparsable incoming line");
                Decoded::Skip
            }
            serde_json::error::Category::Data | serde_json::error::Category::Io => {
                tracing::debug!("answering a line that is no JSON-RPC message: Invalid Request");
                Decoded::Invalid
            }
        },
        Err(_) => Decoded::Skip,
    }
}

type Sending = Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>;

/// The server side of newline-delimited JSON-RPC on `read`/`write`.
pub struct LineTransport<R, W: AsyncWrite> {
    read: BufReader<R>,
    line: Vec<u8>,
    max_line_length: usize,
    /// Dropping the rest of a line too long to keep, until its newline.
    discarding: bool,
    /// rmcp's transport, used for writing only.
    write: AsyncRwTransport<RoleServer, tokio::io::Empty, W>,
    /// An Invalid Request answer being written; kept here because `receive`
    /// is polled in a `select!` and may be dropped half-way.
    answering: Option<Sending>,
}

impl<R, W> LineTransport<R, W>
where
    R: AsyncRead + Send + Unpin,
    W: AsyncWrite + Send + Unpin + 'static,
{
    /// Reads requests from `read` and writes answers to `write`; lines over
    /// rmcp's 16 MiB cap are dropped, as rmcp drops them.
    pub fn new(read: R, write: W) -> Self {
        Self {
            read: BufReader::new(read),
            line: Vec::new(),
            max_line_length: DEFAULT_MAX_LINE_LENGTH,
            discarding: false,
            write: AsyncRwTransport::new_server(tokio::io::empty(), write),
            answering: None,
        }
    }

    /// Reads up to the next `\n` into `self.line`, never past the cap.
    /// Cancel-safe: a dropped read leaves its bytes in `self.line`.
    async fn read_line(&mut self) -> std::io::Result<LineRead> {
        loop {
            let (consumed, step) = {
                let available = self.read.fill_buf().await?;
                if available.is_empty() {
                    return Ok(LineRead::Eof);
                }
                let newline = available.iter().position(|b| *b == b'\n');
                let take = newline.map_or(available.len(), |i| i + 1);
                let step = if self.discarding {
                    if newline.is_some() {
                        Step::EndDiscard
                    } else {
                        Step::More
                    }
                } else if self.line.len().saturating_add(take) > self.max_line_length {
                    self.line.clear();
                    if newline.is_some() {
                        Step::Oversized
                    } else {
                        Step::OversizedNeedsDiscard
                    }
                } else {
                    self.line.extend_from_slice(&available[..take]);
                    if newline.is_some() {
                        Step::Line
                    } else {
                        Step::More
                    }
                };
                (take, step)
            };
            self.read.consume(consumed);
            match step {
                Step::Line => return Ok(LineRead::Line),
                Step::More => {}
                Step::EndDiscard => self.discarding = false,
                Step::Oversized => return Ok(LineRead::Oversized),
                Step::OversizedNeedsDiscard => {
                    self.discarding = true;
                    return Ok(LineRead::Oversized);
                }
            }
        }
    }
}

enum LineRead {
    Line,
    Oversized,
    Eof,
}

enum Step {
    Line,
    More,
    EndDiscard,
    Oversized,
    OversizedNeedsDiscard,
}

impl<R, W> Transport<RoleServer> for LineTransport<R, W>
where
    R: AsyncRead + Send + Unpin,
    W: AsyncWrite + Send + Unpin + 'static,
{
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        self.write.send(item)
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        loop {
            if let Some(answering) = self.answering.as_mut() {
                let written = answering.await;
                self.answering = None;
                written.ok()?;
            }
            match self.read_line().await {
                Ok(LineRead::Line) => {}
                Ok(LineRead::Oversized) => {
                    tracing::error!(
                        max_line_length = self.max_line_length,
                        "Incoming message exceeded the maximum line length, discarding it"
                    );
                    continue;
                }
                // Bytes without a final newline are an incomplete message.
                Ok(LineRead::Eof) => return None,
                Err(e) => {
                    tracing::error!("Error reading from stream: {e}");
                    return None;
                }
            }
            let line = self.line.strip_suffix(b"\n").unwrap_or(&self.line);
            let decoded = decode_line(line);
            self.line.clear();
            match decoded {
                Decoded::Message(message) => return Some(message),
                Decoded::Skip => {}
                Decoded::Invalid => {
                    let answer = TxJsonRpcMessage::<RoleServer>::error(
                        ErrorData::invalid_request("Invalid request", None),
                        None::<RequestId>,
                    );
                    self.answering = Some(Box::pin(self.write.send(answer)));
                }
            }
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.write.close().await
    }
}
