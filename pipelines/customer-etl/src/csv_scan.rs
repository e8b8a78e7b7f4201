//! An RFC 4180 record scanner that keeps what the rejects table needs: each
//! record's first physical line number, its byte offset and its raw text.
//!
//! Hand-written rather than the `csv` crate because the contract's line numbers
//! (blank lines counted, quoted newlines advancing the count) and the raw row
//! text must be exact, and the partition step's boundary scan
//! ([`crate::partition::plan_chunks`]) must agree with it byte for byte.
//!
//! Dialect (the same as Python's `csv` module with its defaults, except that a
//! lone `\r` is data, not a line end):
//! - a field is quoted only when its first byte is `"`; inside quotes `""` is one
//!   quote and commas and newlines are data; text after the closing quote up to
//!   the next comma or line end is appended as is; a quote anywhere else is data;
//! - records end at `\n` or `\r\n` outside quotes; a quote left open runs to the
//!   end of the input;
//! - a line with no characters at all is blank: not a record, but counted.

use memchr::{memchr, memchr2};

/// Where one field's text lives.
#[derive(Debug, Clone, Copy)]
enum FieldSpan {
    /// A slice of the input.
    Input(usize, usize),
    /// A slice of the scanner's scratch buffer (fields with `""` escapes or a tail after the closing quote).
    Scratch(usize, usize),
}

/// One record as found in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawRecord<'a> {
    /// 1-based physical line number of the record's first line.
    pub line: u64,
    /// Byte offset of the record's first byte within the scanned text.
    pub offset: usize,
    /// The record's text without its line terminator.
    pub raw: &'a str,
}

/// Scans records one by one out of a text; the current record's fields are read with [`RecordScanner::field`].
pub struct RecordScanner<'a> {
    text: &'a str,
    pos: usize,
    line: u64,
    spans: Vec<FieldSpan>,
    scratch: String,
}

impl<'a> RecordScanner<'a> {
    /// A scanner over `text`, whose first byte is at the start of physical line `first_line`.
    /// `text` must start at a record boundary.
    pub fn new(text: &'a str, first_line: u64) -> Self {
        RecordScanner {
            text,
            pos: 0,
            line: first_line,
            spans: Vec::with_capacity(8),
            scratch: String::new(),
        }
    }

    /// The line number the next record (or blank line) starts on.
    pub fn next_line(&self) -> u64 {
        self.line
    }

    /// Byte offset just past the last record returned.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// Advances to the next record, skipping blank lines; `None` at the end of the text.
    pub fn next_record(&mut self) -> Option<RawRecord<'a>> {
        let text = self.text;
        let bytes = text.as_bytes();
        let len = bytes.len();
        loop {
            match bytes.get(self.pos) {
                None => return None,
                Some(b'\n') => self.pos += 1,
                Some(b'\r') if bytes.get(self.pos + 1) == Some(&b'\n') => self.pos += 2,
                Some(_) => break,
            }
            self.line += 1;
        }
        let start = self.pos;
        let line = self.line;
        let mut quoted_newlines = 0u64;
        self.spans.clear();
        self.scratch.clear();
        let mut pos = self.pos;
        loop {
            if bytes.get(pos) == Some(&b'"') {
                // Quoted field: copy segments between `""` escapes.
                pos += 1;
                let content_start = pos;
                let mut scratch_start: Option<usize> = None;
                let mut segment = pos;
                let content_end;
                loop {
                    match memchr(b'"', &bytes[pos..]) {
                        None => {
                            pos = len;
                            content_end = len;
                            break;
                        }
                        Some(i) => {
                            let q = pos + i;
                            if bytes.get(q + 1) == Some(&b'"') {
                                scratch_start.get_or_insert(self.scratch.len());
                                self.scratch.push_str(&text[segment..=q]);
                                pos = q + 2;
                                segment = pos;
                            } else {
                                content_end = q;
                                pos = q + 1;
                                break;
                            }
                        }
                    }
                }
                quoted_newlines +=
                    memchr::memchr_iter(b'\n', &bytes[content_start..content_end]).count() as u64;
                let tail_end = memchr2(b',', b'\n', &bytes[pos..]).map_or(len, |i| pos + i);
                let mut tail = &text[pos..tail_end];
                if tail_end < len && bytes[tail_end] == b'\n' {
                    tail = tail.strip_suffix('\r').unwrap_or(tail);
                }
                let span = match scratch_start {
                    None if tail.is_empty() => FieldSpan::Input(content_start, content_end),
                    _ => {
                        let s = scratch_start.unwrap_or(self.scratch.len());
                        self.scratch.push_str(&text[segment..content_end]);
                        self.scratch.push_str(tail);
                        FieldSpan::Scratch(s, self.scratch.len())
                    }
                };
                self.spans.push(span);
                pos = tail_end;
            } else {
                let end = memchr2(b',', b'\n', &bytes[pos..]).map_or(len, |i| pos + i);
                let value_end =
                    if end < len && bytes[end] == b'\n' && end > pos && bytes[end - 1] == b'\r' {
                        end - 1
                    } else {
                        end
                    };
                self.spans.push(FieldSpan::Input(pos, value_end));
                pos = end;
            }
            if pos < len && bytes[pos] == b',' {
                pos += 1;
                continue;
            }
            break;
        }
        let raw_end = if pos < len {
            if bytes[pos - 1] == b'\r' {
                pos - 1
            } else {
                pos
            }
        } else {
            len
        };
        self.pos = if pos < len { pos + 1 } else { len };
        self.line += 1 + quoted_newlines;
        Some(RawRecord {
            line,
            offset: start,
            raw: &text[start..raw_end],
        })
    }

    /// Number of fields of the current record.
    pub fn field_count(&self) -> usize {
        self.spans.len()
    }

    /// The current record's field `index`, unquoted but not trimmed; empty when out of range.
    pub fn field(&self, index: usize) -> &str {
        match self.spans.get(index) {
            Some(FieldSpan::Input(a, b)) => &self.text[*a..*b],
            Some(FieldSpan::Scratch(a, b)) => &self.scratch[*a..*b],
            None => "",
        }
    }
}

/// Trims the surrounding whitespace the contract ignores (ASCII space, tab, CR, LF, form feed).
pub fn trim(field: &str) -> &str {
    field.trim_ascii()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(text: &str) -> Vec<(u64, String, Vec<String>)> {
        let mut scanner = RecordScanner::new(text, 1);
        let mut out = Vec::new();
        while let Some(r) = scanner.next_record() {
            let fields = (0..scanner.field_count())
                .map(|i| scanner.field(i).to_string())
                .collect();
            out.push((r.line, r.raw.to_string(), fields));
        }
        out
    }

    #[test]
    fn quoted_commas_quotes_and_newlines() {
        let got = records("a,b\n\"x, y\",\"say \"\"hi\"\"\"\n\"multi\nline\",z\r\n\n last ,\"\"\n");
        assert_eq!(got[0], (1, "a,b".into(), vec!["a".into(), "b".into()]));
        assert_eq!(
            got[1],
            (
                2,
                "\"x, y\",\"say \"\"hi\"\"\"".into(),
                vec!["x, y".into(), "say \"hi\"".into()]
            )
        );
        assert_eq!(
            got[2],
            (
                3,
                "\"multi\nline\",z".into(),
                vec!["multi\nline".into(), "z".into()]
            )
        );
        assert_eq!(
            got[3],
            (6, " last ,\"\"".into(), vec![" last ".into(), "".into()])
        );
        assert_eq!(got.len(), 4);
    }

    #[test]
    fn blank_lines_count_and_crlf_is_stripped() {
        let got = records("\r\n\na,b\r\n\r\nc,\"d\"\r\n");
        assert_eq!(got[0], (3, "a,b".into(), vec!["a".into(), "b".into()]));
        assert_eq!(got[1], (5, "c,\"d\"".into(), vec!["c".into(), "d".into()]));
    }

    #[test]
    fn python_csv_quirks() {
        // Text after a closing quote is appended; a quote inside an unquoted field is data;
        // an open quote runs to the end; no final newline.
        let got = records("\"ab\"c,d\"e\n\"open,\nx");
        assert_eq!(got[0].2, vec!["abc", "d\"e"]);
        assert_eq!(got[1], (2, "\"open,\nx".into(), vec!["open,\nx".into()]));
        let got = records("a,\n,\n");
        assert_eq!(got[0].2, vec!["a", ""]);
        assert_eq!(got[1].2, vec!["", ""]);
    }
}
