//! Errors that say where: `FILE:LINE:COL: message`, then the offending line
//! and a caret under the fault.
//!
//! The quoted line is a window of at most `WINDOW` characters around the
//! fault, marked with `…` where it was cut, and every control character in
//! it is shown escaped: a 10 MB line, or a NUL or a terminal escape in the
//! file, cannot flood a terminal or a syslog line.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem found in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    pub message: String,
    /// The window of the line quoted under the headline: escaped, cut to
    /// `WINDOW` characters around the fault, `…` where it was cut.
    pub excerpt: String,
    /// Characters of `excerpt` before the fault.
    pub caret_at: usize,
    /// How many characters the caret marks (at least one).
    pub width: usize,
    /// The bytes of the file it is about.
    pub span: Range<usize>,
}

impl Diagnostic {
    /// A diagnostic for the byte range `span` of `source` (the file's text).
    /// A span past the end points just after the last character.
    pub fn at(path: &Path, source: &str, span: Range<usize>, message: impl Into<String>) -> Diagnostic {
        let start = floor_char_boundary(source, span.start.min(source.len()));
        let end = floor_char_boundary(source, span.end.clamp(start, source.len()));
        let line_start = source[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = source[start..].find('\n').map_or(source.len(), |i| start + i);
        let line = source[..start].matches('\n').count() + 1;
        let col = source[line_start..start].chars().count() + 1;
        let text = source[line_start..line_end].trim_end_matches('\r');
        let fault = (start - line_start).min(text.len());
        let (excerpt, caret_at, width) = excerpt(text, fault, end.min(line_end).max(start) - start);
        let message = one_line(message.into());
        Diagnostic { path: path.to_path_buf(), line, col, message, excerpt, caret_at, width, span: start..end }
    }

    /// `FILE:LINE:COL: message`, the first line of the rendering.
    pub fn headline(&self) -> String {
        format!("{}:{}:{}: {}", self.path.display(), self.line, self.col, self.message)
    }
}

/// A message quotes the file's text (an address, an interface name, a
/// value toml refused), which TOML escapes may fill with line breaks or
/// terminal escapes: those are shown escaped, as the file writes them, so
/// that an error stays one line in `check`'s output and in syslog.
fn one_line(message: String) -> String {
    let message = if message.contains(char::is_control) {
        message.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
    } else {
        message
    };
    // A message may quote a value of any length (a 10 MB "address").
    match message.char_indices().nth(MESSAGE_MAX) {
        Some((cut, _)) => format!("{}…", &message[..cut]),
        None => message,
    }
}

/// Characters of a message at most.
const MESSAGE_MAX: usize = 300;

/// Characters quoted around a fault at most; before it, at most `BEFORE`.
pub const WINDOW: usize = 120;
const BEFORE: usize = 40;

/// The character as the excerpt shows it: control characters escaped
/// (a tab stays a tab, so that the caret lines up under it).
fn shown(c: char) -> String {
    if c.is_control() && c != '\t' {
        c.escape_default().to_string()
    } else {
        c.to_string()
    }
}

/// The excerpt of `line` around the fault at byte `fault` (`len` bytes),
/// the characters of the excerpt before the caret, and the caret's width.
fn excerpt(line: &str, fault: usize, len: usize) -> (String, usize, usize) {
    let fault = floor_char_boundary(line, fault);
    let shown_len = |s: &str| s.chars().map(|c| shown(c).chars().count()).sum::<usize>();
    if line.len() <= 4 * WINDOW && shown_len(line) <= WINDOW {
        // The whole line fits.
        let caret_at = shown_len(&line[..fault]);
        let end = floor_char_boundary(line, (fault + len.max(1)).min(line.len()));
        let width = shown_len(&line[fault..end.max(fault)]).max(1);
        let whole: String = line.chars().map(shown).collect();
        return (whole, caret_at, width);
    }
    let before: Vec<char> = line[..fault].chars().rev().take(BEFORE + 1).collect();
    let cut_before = before.len() > BEFORE;
    let mut out = String::new();
    if cut_before {
        out.push('…');
    }
    for c in before.iter().take(BEFORE).rev() {
        out.push_str(&shown(*c));
    }
    let caret_at = out.chars().count();
    let mut width = 0;
    let mut taken = caret_at;
    for (i, c) in line[fault..].char_indices() {
        let s = shown(c);
        if taken + s.chars().count() > WINDOW {
            out.push('…');
            break;
        }
        taken += s.chars().count();
        out.push_str(&s);
        if i < len.max(1) {
            width += s.chars().count();
        }
    }
    (out, caret_at, width.max(1))
}

fn floor_char_boundary(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.headline())?;
        // Tabs keep their width under the caret; everything else is a space.
        let pad: String =
            self.excerpt.chars().take(self.caret_at).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
        writeln!(f, "    {}", self.excerpt)?;
        write!(f, "    {pad}^{}", "~".repeat(self.width - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_and_column_are_one_based_and_count_characters() {
        let src = "a = 1\nblock = [\"é\", \"x\"]\n";
        let at = src.find("\"x\"").unwrap();
        let d = Diagnostic::at(Path::new("f.toml"), src, at..at + 3, "bad");
        assert_eq!((d.line, d.col), (2, 15));
        assert_eq!(d.headline(), "f.toml:2:15: bad");
        assert_eq!(d.to_string(), "f.toml:2:15: bad\n    block = [\"é\", \"x\"]\n                  ^~~");
    }

    #[test]
    fn span_at_end_of_file_points_after_the_last_character() {
        let src = "block = [";
        let d = Diagnostic::at(Path::new("f"), src, 9..9, "unclosed");
        assert_eq!((d.line, d.col, d.width), (1, 10, 1));
    }

    #[test]
    fn control_characters_in_a_message_are_escaped() {
        let d = Diagnostic::at(Path::new("f"), "x", 0..1, "\"eth0\n\u{1b}[2J\r\"\tbad");
        assert_eq!(d.headline(), "f:1:1: \"eth0\\n\\u{1b}[2J\\r\"\\tbad");
    }

    #[test]
    fn a_huge_line_is_quoted_as_a_window_around_the_fault() {
        let src = format!("block = [{}\"bad\", {}]\n", "\"192.0.2.1\", ".repeat(500_000), "\"x\", ".repeat(500_000));
        let at = src.find("\"bad\"").unwrap();
        let d = Diagnostic::at(Path::new("f"), &src, at..at + 5, "bad");
        let shown = d.to_string();
        assert!(shown.len() < 1000, "{} bytes quoted", shown.len());
        assert_eq!(d.col, at + 1);
        let lines: Vec<&str> = shown.lines().collect();
        assert!(lines[1].starts_with("    …") && lines[1].ends_with('…'), "{shown}");
        // The caret is under the fault.
        let caret = lines[2].find('^').unwrap();
        let under: String = lines[1].chars().skip(caret).take(5).collect();
        assert_eq!(under, "\"bad\"", "{shown}");
        assert_eq!(lines[2].trim(), "^~~~~");
    }

    #[test]
    fn control_characters_in_the_quoted_line_are_escaped() {
        let src = "interfaces = [\"eth\u{0}0\u{1b}[2J\"]";
        let d = Diagnostic::at(Path::new("f"), src, 13..src.len() - 1, "bad");
        let shown = d.to_string();
        assert!(!shown.contains('\u{0}') && !shown.contains('\u{1b}'), "{shown:?}");
        assert!(shown.contains("eth\\u{0}0\\u{1b}[2J"), "{shown}");
        assert_eq!(shown.lines().count(), 3);
        assert!(shown.lines().nth(2).unwrap().ends_with(&format!("^{}", "~".repeat(d.width - 1))));
    }

    #[test]
    fn a_message_quoting_a_huge_value_is_cut() {
        let d = Diagnostic::at(Path::new("f"), "x", 0..1, format!("\"{}\" is not an address", "a".repeat(100_000)));
        assert!(d.message.chars().count() <= MESSAGE_MAX + 1 && d.message.ends_with('…'), "{}", d.message.len());
    }

    #[test]
    fn tabs_are_kept_under_the_caret() {
        let src = "\tblock = 1";
        let d = Diagnostic::at(Path::new("f"), src, 1..6, "m");
        assert!(d.to_string().ends_with("    \t^~~~~"));
    }
}
