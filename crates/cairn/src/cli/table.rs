//! Tables in LINSTOR's style: UTF-8 box drawing (or ASCII with
//! `--no-utf8`), optional colour for state cells.

use std::fmt::Write;

/// How a cell is coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Plain,
    Good,
    Warn,
    Bad,
}

/// One cell: text and tone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub text: String,
    pub tone: Tone,
}

impl<T: Into<String>> From<T> for Cell {
    fn from(t: T) -> Cell {
        Cell { text: t.into(), tone: Tone::Plain }
    }
}

impl Cell {
    pub fn toned(text: impl Into<String>, tone: Tone) -> Cell {
        Cell { text: text.into(), tone }
    }
}

/// Rendering options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Style {
    pub utf8: bool,
    pub color: bool,
}

/// A table with a header row.
#[derive(Debug, Clone, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<Cell>>,
}

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table { header: header.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    pub fn row(&mut self, cells: Vec<Cell>) {
        self.rows.push(cells);
    }

    /// Sorts rows by the column with this header (case-insensitive);
    /// numbers and sizes compare by value. False if there is no such column.
    pub fn sort_by_header(&mut self, name: &str) -> bool {
        let Some(col) = self.header.iter().position(|h| h.eq_ignore_ascii_case(name)) else { return false };
        // Numbers (with size units) sort by value before text, text by
        // text: a total order, whatever the column holds.
        let key = |c: Option<&Cell>| -> (bool, f64, String) {
            let text = c.map(|c| c.text.clone()).unwrap_or_default();
            let mut words = text.split_whitespace();
            let number = words.next().and_then(|n| n.parse::<f64>().ok()).filter(|n| n.is_finite());
            let scale = match words.next() {
                Some("MiB") => 1024f64,
                Some("GiB") => 1024f64.powi(2),
                Some("TiB") => 1024f64.powi(3),
                Some("PiB") => 1024f64.powi(4),
                Some("EiB") => 1024f64.powi(5),
                _ => 1.0,
            };
            (number.is_none(), number.map(|n| n * scale).unwrap_or(0.0), text)
        };
        self.rows.sort_by(|a, b| {
            let (ka, kb) = (key(a.get(col)), key(b.get(col)));
            ka.0.cmp(&kb.0).then(ka.1.total_cmp(&kb.1)).then_with(|| ka.2.cmp(&kb.2))
        });
        true
    }

    /// Sorts rows by the given column (text order).
    pub fn sort_by_column(&mut self, col: usize) {
        self.rows.sort_by(|a, b| a.get(col).map(|c| &c.text).cmp(&b.get(col).map(|c| &c.text)));
    }

    pub fn render(&self, style: Style) -> String {
        let cols = self.header.len();
        let mut width: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(cols) {
                width[i] = width[i].max(c.text.chars().count());
            }
        }
        let inner: usize = width.iter().map(|w| w + 3).sum::<usize>() - 1;
        let (tl, tr, bl, br, h, v, ml, mr, mh) = if style.utf8 {
            ("╭", "╮", "╰", "╯", "─", "┊", "╞", "╡", "═")
        } else {
            ("+", "+", "+", "+", "-", "|", "|", "|", "=")
        };
        let mut out = String::new();
        let _ = writeln!(out, "{tl}{}{tr}", h.repeat(inner));
        let line = |cells: Vec<(String, Tone)>, out: &mut String| {
            out.push_str(v);
            for (i, (text, tone)) in cells.into_iter().enumerate() {
                let pad = width[i] - text.chars().count();
                let painted = paint(&text, tone, style.color);
                let _ = write!(out, " {painted}{} {v}", " ".repeat(pad));
            }
            out.push('\n');
        };
        line(self.header.iter().map(|h| (h.clone(), Tone::Plain)).collect(), &mut out);
        let _ = writeln!(out, "{ml}{}{mr}", mh.repeat(inner));
        for r in &self.rows {
            let mut cells: Vec<(String, Tone)> = r.iter().take(cols).map(|c| (c.text.clone(), c.tone)).collect();
            cells.resize(cols, (String::new(), Tone::Plain));
            line(cells, &mut out);
        }
        let _ = writeln!(out, "{bl}{}{br}", h.repeat(inner));
        out
    }
}

fn paint(text: &str, tone: Tone, color: bool) -> String {
    if !color || tone == Tone::Plain || text.is_empty() {
        return text.to_string();
    }
    let code = match tone {
        Tone::Good => "32",
        Tone::Warn => "33",
        Tone::Bad => "31",
        Tone::Plain => "0",
    };
    format!("\u{1b}[{code}m{text}\u{1b}[0m")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new(&["Node", "State"]);
        t.row(vec!["beta".into(), Cell::toned("OFFLINE", Tone::Bad)]);
        t.row(vec!["alpha".into(), Cell::toned("Online", Tone::Good)]);
        t.sort_by_column(0);
        t
    }

    #[test]
    fn utf8_table_matches_golden_output() {
        let golden = "\
╭─────────────────╮
┊ Node  ┊ State   ┊
╞═════════════════╡
┊ alpha ┊ Online  ┊
┊ beta  ┊ OFFLINE ┊
╰─────────────────╯
";
        assert_eq!(sample().render(Style { utf8: true, color: false }), golden);
    }

    #[test]
    fn ascii_table_matches_golden_output() {
        let golden = "\
+-----------------+
| Node  | State   |
|=================|
| alpha | Online  |
| beta  | OFFLINE |
+-----------------+
";
        assert_eq!(sample().render(Style { utf8: false, color: false }), golden);
    }

    #[test]
    fn sorting_by_a_header_compares_sizes_by_value() {
        let mut t = Table::new(&["Name", "Size"]);
        t.row(vec!["a".into(), "2 GiB".into()]);
        t.row(vec!["b".into(), "512 MiB".into()]);
        t.row(vec!["c".into(), "10 KiB".into()]);
        assert!(t.sort_by_header("size"));
        assert_eq!(t.rows.iter().map(|r| r[0].text.as_str()).collect::<Vec<_>>(), ["c", "b", "a"]);
        assert!(!t.sort_by_header("nope"));
        let mut mixed = Table::new(&["V"]);
        for v in ["10", "x", "2", "1x", "2 PiB", "3 TiB"] {
            mixed.row(vec![v.into()]);
        }
        assert!(mixed.sort_by_header("V"));
        assert_eq!(mixed.rows.iter().map(|r| r[0].text.as_str()).collect::<Vec<_>>(), ["2", "10", "3 TiB", "2 PiB", "1x", "x"]);
    }

    #[test]
    fn colour_wraps_only_toned_cells() {
        let out = sample().render(Style { utf8: false, color: true });
        assert!(out.contains("\u{1b}[32mOnline\u{1b}[0m"));
        assert!(out.contains("\u{1b}[31mOFFLINE\u{1b}[0m"));
        assert!(!out.contains("\u{1b}[32malpha"));
    }
}
