//! The fast path for a large `block` list, built on toml's own lexer.
//!
//! A blocklist of a million entries is a 17 MB file; deserializing it
//! through a document tree costs half a second and a quarter gigabyte. The
//! top-level `block = [ ... ]` array is therefore read straight from the
//! token stream of `toml_parser` (the lexer and string decoder the `toml`
//! crate itself uses): each string becomes a [`Prefix`] as it is read, with
//! nothing kept in between. The rest of the file then goes the general way
//! (parse.rs), without the array's content.
//!
//! Anything unusual about the array (a quoted key, a nested array, a
//! missing comma, ...) makes [`scan`] step aside (`None`), and the whole
//! file goes the slow, general way, which reports syntax errors properly.

use std::ops::Range;

use toml::de::DeValue;
use toml_parser::decoder::Encoding;
use toml_parser::lexer::{Token, TokenKind};
use toml_parser::{Raw, Source, Span};

use super::schema::{found, not_an_entry};
use crate::addr::Prefix;

/// The array found and parsed, and where its content lies.
pub struct Scanned {
    /// The entries that are addresses or prefixes, in file order, but for
    /// the plain dotted quads of `exact_v4`.
    pub prefixes: Vec<Prefix>,
    /// The entries written as plain dotted quads, as integers (most of a
    /// large list: four bytes each instead of a `Prefix`), in file order,
    /// in the two parts read at once (the second empty if read whole).
    pub exact_v4: [Vec<u32>; 2],
    /// Every other entry, and what is wrong with it.
    pub errors: Vec<(Range<usize>, String)>,
    /// Bytes between the brackets.
    pub inner: Range<usize>,
}

impl Scanned {
    /// Every entry read, sorted, without duplicates.
    pub fn into_sorted(self) -> Vec<Prefix> {
        let mut out = Vec::new();
        crate::addr::sort_into(self.exact_v4, self.prefixes, &mut out, true);
        out
    }
}

/// The `block` array of `text`, if it is a plain top-level array of
/// scalars that this fast path reads exactly as the general one would.
pub fn scan(text: &str) -> Option<Scanned> {
    let source = Source::new(text);
    let mut tokens = source.lex();
    let after_bracket = find_block(text, &mut tokens)?;
    read_plain(text, after_bracket).or_else(|| read_array(text, source, &mut tokens))
}

fn significant(t: &Token) -> bool {
    !matches!(t.kind(), TokenKind::Whitespace | TokenKind::Comment)
}

/// Advances `tokens` to just after the `[` of a top-level `block = [`,
/// and says where that is in `text`.
fn find_block(text: &str, tokens: &mut impl Iterator<Item = Token>) -> Option<usize> {
    #[derive(PartialEq)]
    enum State {
        LineStart,
        Key,
        Equals,
        Elsewhere,
    }
    let mut state = State::LineStart;
    let mut depth = 0usize;
    for t in tokens.filter(significant) {
        match (t.kind(), &state) {
            (TokenKind::Newline, _) if depth == 0 => state = State::LineStart,
            (TokenKind::Newline, _) => {}
            // A table header: `block` was not among the top-level keys.
            (TokenKind::LeftSquareBracket, State::LineStart) if depth == 0 => return None,
            (TokenKind::Atom, State::LineStart) if depth == 0 && &text[range(t.span())] == "block" => {
                state = State::Key;
            }
            (TokenKind::Equals, State::Key) => state = State::Equals,
            (TokenKind::LeftSquareBracket, State::Equals) => return Some(t.span().end()),
            (TokenKind::LeftSquareBracket | TokenKind::LeftCurlyBracket, _) => {
                depth += 1;
                state = State::Elsewhere;
            }
            (TokenKind::RightSquareBracket | TokenKind::RightCurlyBracket, _) => {
                depth = depth.saturating_sub(1);
                state = State::Elsewhere;
            }
            _ => state = State::Elsewhere,
        }
    }
    None
}

fn range(s: Span) -> Range<usize> {
    s.start()..s.end()
}

/// A list this long (bytes) is read by two threads, a half each.
const PARALLEL_BYTES: usize = 1 << 20;

/// Reads the array from `start` (just after its `[`) to its `]` byte by
/// byte, when it is the common kind: quoted strings without escapes or
/// control characters, commas, spaces, tabs, line feeds (CRLF too) and
/// comments. Anything else (`None`) goes to [`read_array`], which reads
/// it token by token; on what this reads, both give the same result.
///
/// A long list is cut at a line feed near its middle and the halves read
/// at once: a line starts outside any string or comment (neither spans
/// lines here), so the second half starts where a reader of the whole
/// would be, provided the first half ends after a comma (else the whole
/// is read again in one piece).
fn read_plain(text: &str, start: usize) -> Option<Scanned> {
    let b = text.as_bytes();
    let mid = start + (b.len() - start) / 2;
    let cut = b[mid..].iter().position(|&c| c == b'\n').map(|n| mid + n + 1);
    if let Some(cut) = cut.filter(|_| b.len() - start >= PARALLEL_BYTES) {
        let (first, second) = std::thread::scope(|s| {
            let second = std::thread::Builder::new().spawn_scoped(s, || read_part(text, cut, b.len(), true));
            let first = read_part(text, start, cut, true);
            let second = match second {
                Ok(handle) => handle.join().ok().flatten(),
                Err(_) => read_part(text, cut, b.len(), true),
            };
            (first, second)
        });
        let first = first?;
        if let Some(end) = first.closed {
            return Some(Scanned {
                prefixes: first.prefixes,
                exact_v4: [first.exact_v4, Vec::new()],
                errors: first.errors,
                inner: start..end,
            });
        }
        if first.expect_value {
            let second = second?;
            let end = second.closed?;
            let (mut prefixes, mut errors) = (first.prefixes, first.errors);
            prefixes.extend(second.prefixes);
            errors.extend(second.errors);
            // The addresses stay in their two parts: they are sorted a
            // part each, on two threads.
            let exact_v4 = [first.exact_v4, second.exact_v4];
            return Some(Scanned { prefixes, exact_v4, errors, inner: start..end });
        }
    }
    let whole = read_part(text, start, b.len(), true)?;
    let end = whole.closed?;
    Some(Scanned {
        prefixes: whole.prefixes,
        exact_v4: [whole.exact_v4, Vec::new()],
        errors: whole.errors,
        inner: start..end,
    })
}

/// What the byte reader found from one place of the array to another.
struct Part {
    prefixes: Vec<Prefix>,
    exact_v4: Vec<u32>,
    errors: Vec<(Range<usize>, String)>,
    /// Where the array's `]` is, if it came before the end of the part.
    closed: Option<usize>,
    /// Whether a value may come next (after `[` or a comma).
    expect_value: bool,
}

/// Reads `text[from..to]` of the array, `from` at a token's start in the
/// state `expect_value`; `None` at anything [`read_plain`] leaves to the
/// token reader.
fn read_part(text: &str, from: usize, to: usize, mut expect_value: bool) -> Option<Part> {
    let b = text.as_bytes();
    let (mut prefixes, mut exact_v4) = (Vec::new(), Vec::with_capacity((to - from) / 16));
    let mut errors = Vec::new();
    let mut i = from;
    loop {
        if i >= to {
            return Some(Part { prefixes, exact_v4, errors, closed: None, expect_value });
        }
        match b[i] {
            b' ' | b'\t' | b'\n' => i += 1,
            b'\r' if b.get(i + 1) == Some(&b'\n') => i += 2,
            b'#' => {
                let end = b[i..].iter().position(|&c| c == b'\n').map_or(b.len(), |n| i + n);
                // A carriage return: the lexer's own rules for it.
                if !b[i..end].iter().all(|&c| c == b'\t' || (c >= 0x20 && c != 0x7f)) {
                    return None;
                }
                i = end;
            }
            b']' => return Some(Part { prefixes, exact_v4, errors, closed: Some(i), expect_value }),
            b',' if !expect_value => {
                expect_value = true;
                i += 1;
            }
            quote @ (b'"' | b'\'') if expect_value => {
                // Most entries: a dotted quad and the closing quote.
                if let Some((addr, n)) = crate::addr::dotted_quad_at(&b[i + 1..]) {
                    if b.get(i + 1 + n) == Some(&quote) {
                        exact_v4.push(u32::from(addr));
                        expect_value = false;
                        i += n + 2;
                        continue;
                    }
                }
                let len = b[i + 1..].iter().position(|&c| c == quote || c < 0x20 || c == 0x7f || c == b'\\')?;
                let end = i + 1 + len;
                // An escape, a control character, an empty or multi-line
                // string: the lexer and the decoder say what it is.
                if len == 0 || b[end] != quote {
                    return None;
                }
                match text[i + 1..end].parse::<Prefix>() {
                    Ok(p) => prefixes.push(p),
                    Err(e) => errors.push((i..end + 1, e.to_string())),
                }
                expect_value = false;
                i = end + 1;
            }
            _ => return None,
        }
    }
}

/// Reads the array's elements up to its `]`.
fn read_array(text: &str, source: Source<'_>, tokens: &mut impl Iterator<Item = Token>) -> Option<Scanned> {
    let mut prefixes = Vec::with_capacity(text.len() / 16);
    let mut errors = Vec::new();
    let mut start = None;
    let mut expect_value = true;
    let mut decoded = String::new();
    for t in tokens {
        let span = range(t.span());
        start.get_or_insert(span.start);
        match t.kind() {
            // What TOML forbids between the brackets (a control character
            // in a comment, a lone carriage return) the general path
            // refuses with its own message.
            TokenKind::Whitespace | TokenKind::Comment | TokenKind::Newline if plain(&text[span.clone()]) => {}
            TokenKind::RightSquareBracket => {
                let inner = start.unwrap_or(span.start)..span.start;
                return Some(Scanned { prefixes, exact_v4: [Vec::new(), Vec::new()], errors, inner });
            }
            TokenKind::Comma if !expect_value => expect_value = true,
            TokenKind::BasicString
            | TokenKind::LiteralString
            | TokenKind::MlBasicString
            | TokenKind::MlLiteralString
                if expect_value =>
            {
                let text = string_value(source, t, &mut decoded)?;
                match text.parse::<Prefix>() {
                    Ok(p) => prefixes.push(p),
                    Err(e) => errors.push((span, e.to_string())),
                }
                expect_value = false;
            }
            // A bare value (a number, a boolean, a date) is an error; toml
            // reads it, so that what it refuses (`00`, `1__0`) is refused
            // with its message and the rest is named in the general path's
            // words.
            TokenKind::Atom if expect_value => {
                let value = DeValue::parse(&text[span.clone()]).ok()?;
                errors.push((span, not_an_entry(&found(value.get_ref()))));
                expect_value = false;
            }
            // Nested arrays and tables, missing commas, stray tokens: the
            // general path says what is wrong.
            _ => return None,
        }
    }
    None
}

/// The value of a string token; `None` if it does not decode cleanly.
fn string_value<'t>(source: Source<'t>, t: Token, scratch: &'t mut String) -> Option<&'t str> {
    let raw = source.get(t.span())?;
    let s = raw.as_str();
    // The common case: a closed basic string without escapes, or a closed
    // literal string, of visible characters. Anything else (an unclosed
    // string, whose token runs to the end of the line; a control
    // character) goes to the decoder, which refuses what TOML refuses.
    let quote = match t.kind() {
        TokenKind::BasicString if !s.as_bytes().contains(&b'\\') => Some('"'),
        TokenKind::LiteralString => Some('\''),
        _ => None,
    };
    if let Some(q) = quote {
        let inner = s.strip_prefix(q).and_then(|rest| rest.strip_suffix(q))?;
        if plain(inner) {
            return Some(inner);
        }
    }
    let encoding = match t.kind() {
        TokenKind::BasicString => Encoding::BasicString,
        TokenKind::MlBasicString => Encoding::MlBasicString,
        TokenKind::MlLiteralString => Encoding::MlLiteralString,
        _ => Encoding::LiteralString,
    };
    let raw = Raw::new_unchecked(s, Some(encoding), t.span());
    let mut failed = false;
    let mut sink = |_e: toml_parser::ParseError| failed = true;
    let mut out = std::borrow::Cow::Borrowed("");
    let _ = raw.decode_scalar(&mut out, &mut sink);
    if failed {
        return None;
    }
    *scratch = out.into_owned();
    Some(scratch.as_str())
}

/// Whether `text` holds no control character TOML forbids there: none but
/// tab, and a carriage return only before a line feed.
fn plain(text: &str) -> bool {
    let b = text.as_bytes();
    b.iter().enumerate().all(|(i, &c)| match c {
        b'\t' | b'\n' => true,
        b'\r' => b.get(i + 1) == Some(&b'\n'),
        c => c >= 0x20 && c != 0x7f,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_block_list_is_read_and_located() {
        let text = "interfaces = [\"eth0\"]\nblock = [\n  \"192.0.2.10\", # a comment\n  '198.51.100.0/24',\n]\nicmp = \"all\"\n";
        let s = scan(text).unwrap();
        assert_eq!(s.prefixes.len() + s.exact_v4.iter().map(Vec::len).sum::<usize>(), 2);
        assert!(s.errors.is_empty());
        assert_eq!(&text[s.inner.start - 1..s.inner.start], "[");
        assert_eq!(&text[s.inner.end..s.inner.end + 1], "]");
    }

    #[test]
    fn bad_entries_are_errors_at_their_span() {
        let text = "block = [\"192.0.2.300\", 1, \"192.0.2.1/24\"]\n";
        let s = scan(text).unwrap();
        let spans: Vec<&str> = s.errors.iter().map(|(r, _)| &text[r.clone()]).collect();
        assert_eq!(spans, ["\"192.0.2.300\"", "1", "\"192.0.2.1/24\""]);
        assert!(s.errors[1].1.ends_with("found the integer 1"));
    }

    impl Scanned {
        fn sorted_copy(&self) -> Vec<Prefix> {
            Scanned { prefixes: self.prefixes.clone(), exact_v4: self.exact_v4.clone(), errors: vec![], inner: 0..0 }
                .into_sorted()
        }
    }

    /// Both readers from the `[` of `block = [` in `text`.
    fn both(text: &str) -> (Option<Scanned>, Option<Scanned>) {
        let source = Source::new(text);
        let mut tokens = source.lex();
        let at = find_block(text, &mut tokens).unwrap();
        (read_plain(text, at), read_array(text, source, &mut tokens))
    }

    #[test]
    fn the_byte_reader_reads_what_the_token_reader_reads_or_steps_aside() {
        let bodies = [
            "",
            " ",
            "\"192.0.2.1\"",
            "\"192.0.2.1\",",
            "\n  \"192.0.2.1\", # note\r\n  '198.51.100.0/24' ,\t\"2001:db8::/32\"\n",
            "\"192.0.2.300\", \"192.0.2.1/24\", \"bogus\", \"::ffff:192.0.2.1\", \"fe80::1%eth0\", \"1.2.3.4/033\"",
            "\"é\", '\\x', \"a\\u0031\"",
            "\"\"",
            "''",
            "\"\"\"192.0.2.1\"\"\"",
            "\"192.0.2.1\" \"192.0.2.2\"",
            "\"192.0.2.1\"x",
            ",",
            "\"192.0.2.1\",,",
            "1",
            "\"192.0.2.1\t\"",
            "# comment \u{7f}\n",
            "# comment\r\r\n",
            "\r\"192.0.2.1\"",
            "\"192.0.2.1",
            "'192.0.2.1\n'",
        ];
        for body in bodies {
            let text = format!("interfaces = []\nblock = [{body}]\nicmp = \"all\"\n");
            let (plain, tokens) = both(&text);
            let Some(plain) = plain else { continue };
            let tokens = tokens.unwrap_or_else(|| panic!("{body:?}: only the byte reader read it"));
            assert_eq!(plain.sorted_copy(), tokens.sorted_copy(), "{body:?}");
            assert_eq!(plain.errors, tokens.errors, "{body:?}");
            assert_eq!(plain.inner, tokens.inner, "{body:?}");
        }
        // The common kind is read by the byte reader.
        assert!(both("block = [\n  \"192.0.2.1\", # x\n  '2001:db8::/32',\n]\n").0.is_some());
        assert!(both("block = [\"1.2.3.4\\u0031\"]\n").0.is_none());
    }

    #[test]
    fn a_long_list_read_in_two_halves_is_read_as_in_one() {
        let line = |i: usize| match i % 4 {
            0 => format!("  \"192.0.{}.{}\",\n", i / 256 % 256, i % 256),
            1 => format!("  '2001:db8::{i:x}', # note\n"),
            2 => format!("  \"10.{}.0.0/16\" ,\r\n", i % 256),
            _ => format!("  \"bogus{i}\",\n"),
        };
        let body: String = (0..120_000).map(line).collect();
        // The cut falls on every kind of line; a line without its comma
        // before the cut makes the reader start over in one piece.
        for variant in 0..3 {
            let mut body = body.clone();
            if variant == 1 {
                let at = body.len() / 2 - 200;
                let nl = at + body[at..].find(",\n").unwrap();
                body.replace_range(nl..nl + 2, "\n,");
            }
            if variant == 2 {
                body.push_str("]\nallow = [\"192.0.2.1\"]\n[events]\nlog = \"none\"\nx = [");
            }
            let text = format!("interfaces = []\nblock = [\n{body}]\n");
            assert!(text.len() > PARALLEL_BYTES);
            let (plain, tokens) = both(&text);
            let (plain, tokens) = (plain.expect("read by bytes"), tokens.expect("read by tokens"));
            assert_eq!(plain.sorted_copy(), tokens.sorted_copy(), "{variant}");
            assert_eq!(plain.errors, tokens.errors, "{variant}");
            assert_eq!(plain.inner, tokens.inner, "{variant}");
        }
    }

    #[test]
    fn escapes_are_decoded() {
        let s = scan("block = [\"192.0.2.\\u0031\"]\n").unwrap();
        assert_eq!(s.into_sorted(), vec!["192.0.2.1".parse().unwrap()]);
    }

    #[test]
    fn anything_unusual_takes_the_general_path() {
        for text in [
            "block = [\"192.0.2.1\" \"192.0.2.2\"]\n",
            "block = [[\"192.0.2.1\"]]\n",
            "block = [{a = 1}]\n",
            "block = [,]\n",
            "block = [\"192.0.2.1\"\n",
            "\"block\" = [\"192.0.2.1\"]\n",
            "[events]\nblock = [\"192.0.2.1\"]\n",
            "block = [bogus]\n",
            "block = [\"192.0.2.10\n]\n",
            "block = ['192.0.2.10\n]\n",
            "block = [\"192.0.2.1\u{7}\"]\n",
            "block = [ # bell \u{7}\n\"192.0.2.1\"]\n",
            "block = [\r\"192.0.2.1\"]\n",
            // Bare values TOML refuses.
            "block = [00]\n",
            "block = [1__0]\n",
            "block = [_1]\n",
            "block = [+01]\n",
            "block = [True]\n",
            "block = [1979-05-27 07:32:00]\n",
        ] {
            assert!(scan(text).is_none(), "{text:?}");
        }
    }

    #[test]
    fn a_bare_value_is_named_as_the_general_path_names_it() {
        let atoms = ["1", "-0", "+1", "1_000", "0x10", "0b11", "9223372036854775808", "true", "-inf", "nan", "1e3"];
        for atom in atoms.into_iter().chain(["1979-05-27T07:32:00Z", "1979-05-27", "07:32:00"]) {
            let fast = scan(&format!("interfaces = []\nblock = [{atom}]\n"))
                .unwrap_or_else(|| panic!("{atom}: not read by the fast path"));
            let general = crate::config::Config::parse(
                std::path::Path::new("t"),
                &format!("interfaces = []\n\"block\" = [{atom}]\n"),
            )
            .expect_err("accepted");
            assert_eq!(fast.errors[0].1, general[0].message, "{atom}");
        }
    }

    #[test]
    fn a_block_key_inside_another_value_is_not_the_top_level_one() {
        let text = "interfaces = [\n  \"eth0\",\n]\nx = { block = [\"192.0.2.9\"] }\nblock = [\"192.0.2.1\"]\n";
        let s = scan(text).unwrap();
        assert_eq!(s.into_sorted(), vec!["192.0.2.1".parse().unwrap()]);
    }
}
