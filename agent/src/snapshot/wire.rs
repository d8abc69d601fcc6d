//! The framing of `quorate snapshot save` on the control socket. The answer's body is a
//! sequence of frames, each a tag byte, a big-endian u32 length and that many bytes:
//! progress (the agent saves into its directory), data (the file's bytes, for `--out`, which
//! the CLI writes itself so that its user's permissions apply), then exactly one of done (a
//! JSON [`Done`]) or failed (a message). A body that ends without done or failed was cut.
//! Encoding and decoding are pure, so the CLI and the agent agree by test.

use bytes::{BufMut, Bytes, BytesMut};
use serde::{Deserialize, Serialize};

use super::file::Manifest;

const TAG_PROGRESS: u8 = b'P';
const TAG_DATA: u8 = b'D';
const TAG_DONE: u8 = b'F';
const TAG_FAILED: u8 = b'E';
const HEADER: usize = 5;
/// The largest frame accepted (data frames are etcd's messages, far smaller).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;

/// How a save finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    /// The file in the agent's snapshot directory (None with `--out`).
    pub file: Option<String>,
    pub manifest: Manifest,
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Plaintext bytes done so far and the estimated total.
    Progress {
        done: u64,
        total: Option<u64>,
    },
    /// The next bytes of the file.
    Data(Bytes),
    Done(Box<Done>),
    Failed(String),
}

impl Frame {
    /// The frame's bytes.
    pub fn encode(&self) -> Bytes {
        let (tag, payload): (u8, Bytes) = match self {
            Frame::Progress { done, total } => {
                let mut p = BytesMut::with_capacity(16);
                p.put_u64(*done);
                p.put_u64(total.unwrap_or(u64::MAX));
                (TAG_PROGRESS, p.freeze())
            }
            Frame::Data(b) => (TAG_DATA, b.clone()),
            // A struct of strings and integers always serializes.
            Frame::Done(d) => (TAG_DONE, serde_json::to_vec(d).unwrap_or_default().into()),
            Frame::Failed(m) => (TAG_FAILED, Bytes::copy_from_slice(m.as_bytes())),
        };
        let mut out = BytesMut::with_capacity(HEADER + payload.len());
        out.put_u8(tag);
        out.put_u32(payload.len() as u32);
        out.extend_from_slice(&payload);
        out.freeze()
    }
}

/// Why a body is not a sequence of frames.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("the agent sent an unknown frame {0:#04x} (is the agent another version?)")]
    UnknownTag(u8),
    #[error("the agent sent a frame of {0} bytes, over the limit")]
    TooLarge(usize),
    #[error("the agent sent an unreadable frame: {0}")]
    Malformed(String),
}

/// Reassembles frames from the body's pieces, however they are cut.
#[derive(Default)]
pub struct Decoder {
    buf: BytesMut,
}

impl Decoder {
    /// Adds the next piece of the body.
    pub fn push(&mut self, piece: &[u8]) {
        self.buf.extend_from_slice(piece);
    }

    /// The next complete frame, if there is one.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, WireError> {
        if self.buf.len() < HEADER {
            return Ok(None);
        }
        let tag = self.buf[0];
        let len = u32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]) as usize;
        if len > MAX_FRAME {
            return Err(WireError::TooLarge(len));
        }
        if self.buf.len() < HEADER + len {
            return Ok(None);
        }
        let _ = self.buf.split_to(HEADER);
        let payload = self.buf.split_to(len).freeze();
        let frame = match tag {
            TAG_PROGRESS if payload.len() == 16 => {
                let done = u64::from_be_bytes(payload[..8].try_into().unwrap_or_default());
                let total = u64::from_be_bytes(payload[8..].try_into().unwrap_or_default());
                Frame::Progress {
                    done,
                    total: (total != u64::MAX).then_some(total),
                }
            }
            TAG_PROGRESS => return Err(WireError::Malformed("progress frame size".into())),
            TAG_DATA => Frame::Data(payload),
            TAG_DONE => Frame::Done(Box::new(
                serde_json::from_slice(&payload)
                    .map_err(|e| WireError::Malformed(e.to_string()))?,
            )),
            TAG_FAILED => Frame::Failed(String::from_utf8_lossy(&payload).into_owned()),
            other => return Err(WireError::UnknownTag(other)),
        };
        Ok(Some(frame))
    }

    /// Bytes held that do not make a whole frame (non-zero at the end: the body was cut).
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            cluster_id: "00000000000000ab".into(),
            revision: 7,
            etcd_version: "3.4.23".into(),
            ca_hash: "sha256:00".into(),
            node: "n1".into(),
            time: "2026-12-02T00:00:00Z".into(),
            slot: 1,
            size: 3,
            sha256: "aa".into(),
            encrypted: true,
            plaintext_sha256: Some("bb".into()),
            ca_seal_secret: None,
        }
    }

    #[test]
    fn frames_survive_any_cutting_of_the_body() {
        let frames = vec![
            Frame::Progress {
                done: 5,
                total: Some(100),
            },
            Frame::Progress {
                done: 6,
                total: None,
            },
            Frame::Data(Bytes::from_static(b"bolt")),
            Frame::Data(Bytes::new()),
            Frame::Done(Box::new(Done {
                file: Some("x.db.age".into()),
                manifest: manifest(),
            })),
            Frame::Failed("disk full".into()),
        ];
        let body: Vec<u8> = frames.iter().flat_map(|f| f.encode().to_vec()).collect();
        for cut in [1, 2, 5, 7, 64, body.len()] {
            let mut d = Decoder::default();
            let mut got = Vec::new();
            for piece in body.chunks(cut) {
                d.push(piece);
                while let Some(f) = d.next_frame().unwrap() {
                    got.push(f);
                }
            }
            assert_eq!(got, frames, "cut {cut}");
            assert_eq!(d.pending(), 0);
        }
    }

    #[test]
    fn unknown_oversized_and_cut_frames_are_noticed() {
        let mut d = Decoder::default();
        d.push(&[b'Z', 0, 0, 0, 0]);
        assert_eq!(d.next_frame(), Err(WireError::UnknownTag(b'Z')));
        let mut d = Decoder::default();
        d.push(&[b'D', 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(d.next_frame(), Err(WireError::TooLarge(_))));
        let mut d = Decoder::default();
        d.push(&Frame::Data(Bytes::from_static(b"abcdef")).encode()[..8]);
        assert_eq!(d.next_frame(), Ok(None));
        assert_eq!(d.pending(), 8);
    }
}
