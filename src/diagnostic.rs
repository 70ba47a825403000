//! Errors that say where: `FILE:LINE:COL: message`, then the offending line
//! and a caret under the fault.

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
    /// The text of the line, without its end-of-line.
    pub source_line: String,
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
        let source_line = source[line_start..line_end].trim_end_matches('\r').to_string();
        let width = source[start..end.min(line_end)].chars().count().max(1);
        let message = one_line(message.into());
        Diagnostic { path: path.to_path_buf(), line, col, message, source_line, width, span: start..end }
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
    if !message.contains(char::is_control) {
        return message;
    }
    message.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
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
            self.source_line.chars().take(self.col - 1).map(|c| if c == '\t' { '\t' } else { ' ' }).collect();
        writeln!(f, "    {}", self.source_line)?;
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
    fn tabs_are_kept_under_the_caret() {
        let src = "\tblock = 1";
        let d = Diagnostic::at(Path::new("f"), src, 1..6, "m");
        assert!(d.to_string().ends_with("    \t^~~~~"));
    }
}
