//! Reading answers, sans-IO: bytes in, complete answers out.
//!
//! HTTP responses are framed by Content-Length (parsed with httparse) and their bodies
//! skipped as they stream past, so a large body costs no memory. Echo answers are
//! checked byte for byte against what was sent.

/// A complete answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status (echo: 200 when the bytes matched).
    pub status: u16,
    /// The server said `Connection: close`: it will close after this answer.
    pub close: bool,
}

/// What one call to [`Reader::next`] found.
#[derive(Debug, PartialEq, Eq)]
pub enum Read {
    /// `consumed` bytes were used; no answer is complete yet.
    Partial { consumed: usize },
    /// One answer is complete after `consumed` bytes.
    Done { consumed: usize, answer: Answer },
    /// Not a valid answer: the connection cannot be trusted any more.
    Bad(String),
}

#[derive(Debug)]
pub enum Reader {
    Http {
        /// Status and close flag of a response whose body is still arriving.
        head: Option<Answer>,
        body_left: u64,
    },
    Echo {
        size: usize,
        /// Bytes of the current message already matched.
        matched: usize,
        /// Sequence number of the message being matched (see [`echo_byte`]).
        seq: u64,
    },
}

/// The longest response head we accept.
const MAX_HEAD: usize = 16 * 1024;

/// Byte `i` of echo message `seq`: different per message, so an echo that returns a
/// stale or reordered message is caught.
pub fn echo_byte(seq: u64, i: usize) -> u8 {
    (seq.wrapping_mul(131).wrapping_add(i as u64 * 7) % 251) as u8
}

impl Reader {
    pub fn http() -> Reader {
        Reader::Http {
            head: None,
            body_left: 0,
        }
    }

    pub fn echo(size: usize) -> Reader {
        Reader::Echo {
            size,
            matched: 0,
            seq: 0,
        }
    }

    /// Look at `buf` (what has arrived and was not yet consumed).
    pub fn next(&mut self, buf: &[u8]) -> Read {
        match self {
            Reader::Http { head, body_left } => {
                if head.is_none() {
                    let mut headers = [httparse::EMPTY_HEADER; 32];
                    let mut resp = httparse::Response::new(&mut headers);
                    let len = match resp.parse(buf) {
                        Ok(httparse::Status::Complete(len)) => len,
                        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
                            return Read::Bad(format!("response head over {MAX_HEAD} bytes"));
                        }
                        Ok(httparse::Status::Partial) => return Read::Partial { consumed: 0 },
                        Err(e) => return Read::Bad(format!("unparsable response: {e}")),
                    };
                    let mut length = None;
                    let mut close = resp.version == Some(0);
                    for h in resp.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            length = std::str::from_utf8(h.value)
                                .ok()
                                .and_then(|v| v.trim().parse::<u64>().ok());
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            let v = String::from_utf8_lossy(h.value).to_ascii_lowercase();
                            close = v.contains("close") || (close && !v.contains("keep-alive"));
                        }
                    }
                    let Some(length) = length else {
                        return Read::Bad("response without a valid Content-Length".into());
                    };
                    *head = Some(Answer {
                        status: resp.code.unwrap_or(0),
                        close,
                    });
                    *body_left = length;
                    return match self.next(&buf[len..]) {
                        Read::Partial { consumed } => Read::Partial {
                            consumed: len + consumed,
                        },
                        Read::Done { consumed, answer } => Read::Done {
                            consumed: len + consumed,
                            answer,
                        },
                        bad => bad,
                    };
                }
                let take = (*body_left).min(buf.len() as u64) as usize;
                *body_left -= take as u64;
                if *body_left > 0 {
                    return Read::Partial { consumed: take };
                }
                let answer = head.take().expect("head is present");
                Read::Done {
                    consumed: take,
                    answer,
                }
            }
            Reader::Echo { size, matched, seq } => {
                let take = (*size - *matched).min(buf.len());
                for (i, &b) in buf[..take].iter().enumerate() {
                    if b != echo_byte(*seq, *matched + i) {
                        return Read::Bad(format!(
                            "echo differs at byte {} of message {}",
                            *matched + i,
                            *seq
                        ));
                    }
                }
                *matched += take;
                if *matched < *size {
                    return Read::Partial { consumed: take };
                }
                *matched = 0;
                *seq += 1;
                Read::Done {
                    consumed: take,
                    answer: Answer {
                        status: 200,
                        close: false,
                    },
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feed `bytes` split at `at`, collecting answers.
    fn answers(reader: &mut Reader, bytes: &[u8], at: usize) -> Result<Vec<Answer>, String> {
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for chunk in [&bytes[..at], &bytes[at..]] {
            buf.extend_from_slice(chunk);
            loop {
                match reader.next(&buf) {
                    Read::Partial { consumed } => {
                        buf.drain(..consumed);
                        break;
                    }
                    Read::Done { consumed, answer } => {
                        buf.drain(..consumed);
                        out.push(answer);
                    }
                    Read::Bad(why) => return Err(why),
                }
            }
        }
        Ok(out)
    }

    #[test]
    fn http_responses_split_anywhere_are_framed_alike() {
        let two = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloHTTP/1.1 503 No\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
        for at in 0..=two.len() {
            let got = answers(&mut Reader::http(), two, at).unwrap();
            assert_eq!(
                got,
                vec![
                    Answer {
                        status: 200,
                        close: false
                    },
                    Answer {
                        status: 503,
                        close: true
                    }
                ],
                "split at {at}"
            );
        }
    }

    #[test]
    fn http_without_content_length_or_garbage_is_bad() {
        let no_length = b"HTTP/1.1 200 OK\r\n\r\n";
        assert!(answers(&mut Reader::http(), no_length, 0).is_err());
        assert!(answers(&mut Reader::http(), b"SSH-2.0-OpenSSH\r\n\r\n", 3).is_err());
    }

    #[test]
    fn http10_closes_unless_kept_alive() {
        let r = answers(
            &mut Reader::http(),
            b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n",
            0,
        );
        assert!(r.unwrap()[0].close);
        let r = answers(
            &mut Reader::http(),
            b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n",
            0,
        );
        assert!(!r.unwrap()[0].close);
    }

    #[test]
    fn echo_is_checked_byte_for_byte() {
        let size = 10;
        let msgs: Vec<u8> = (0..3u64)
            .flat_map(|seq| (0..size).map(move |i| echo_byte(seq, i)))
            .collect();
        for at in 0..=msgs.len() {
            assert_eq!(
                answers(&mut Reader::echo(size), &msgs, at).unwrap().len(),
                3
            );
        }
        let mut wrong = msgs.clone();
        wrong[17] ^= 1;
        let err = answers(&mut Reader::echo(size), &wrong, 4).unwrap_err();
        assert!(err.contains("byte 7 of message 1"), "{err}");
    }
}
