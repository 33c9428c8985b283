//! A minimal JSON writer for the results (no serde in the kernel): objects and arrays built as
//! strings, numbers written so that Python's `json` reads them back exactly.

use alloc::string::String;
use core::fmt::Write;

/// A JSON object being written: `{"key": value, ...}`.
pub(crate) struct Obj {
    out: String,
    empty: bool,
}

impl Obj {
    /// An empty object.
    pub(crate) fn new() -> Self {
        Self { out: String::from("{"), empty: true }
    }

    fn key(&mut self, k: &str) {
        if !self.empty {
            self.out.push_str(", ");
        }
        self.empty = false;
        push_str(&mut self.out, k);
        self.out.push_str(": ");
    }

    /// An integer member.
    pub(crate) fn int(&mut self, k: &str, v: impl Into<i128>) -> &mut Self {
        self.key(k);
        let _ = write!(self.out, "{}", v.into());
        self
    }

    /// A floating-point member; NaN and infinities (nothing measured) become `null`.
    pub(crate) fn num(&mut self, k: &str, v: f64) -> &mut Self {
        self.key(k);
        push_f64(&mut self.out, v);
        self
    }

    /// An optional number.
    pub(crate) fn opt(&mut self, k: &str, v: Option<f64>) -> &mut Self {
        self.num(k, v.unwrap_or(f64::NAN))
    }

    /// A string member.
    pub(crate) fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        push_str(&mut self.out, v);
        self
    }

    /// A boolean member.
    pub(crate) fn bool(&mut self, k: &str, v: bool) -> &mut Self {
        self.key(k);
        self.out.push_str(if v { "true" } else { "false" });
        self
    }

    /// A member whose value is already JSON (an object or array built here).
    pub(crate) fn raw(&mut self, k: &str, json: String) -> &mut Self {
        self.key(k);
        self.out.push_str(&json);
        self
    }

    /// The finished object.
    pub(crate) fn finish(&mut self) -> String {
        let mut s = core::mem::take(&mut self.out);
        s.push('}');
        s
    }
}

/// A JSON array of already-written values.
pub(crate) fn array(items: impl IntoIterator<Item = String>) -> String {
    let mut s = String::from("[");
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(&item);
    }
    s.push(']');
    s
}

/// A JSON array of numbers.
pub(crate) fn numbers(items: impl IntoIterator<Item = f64>) -> String {
    let mut s = String::from("[");
    for (i, v) in items.into_iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        push_f64(&mut s, v);
    }
    s.push(']');
    s
}

fn push_f64(out: &mut String, v: f64) {
    if v.is_finite() {
        let _ = write!(out, "{v}");
    } else {
        out.push_str("null");
    }
}

fn push_str(out: &mut String, v: &str) {
    out.push('"');
    for c in v.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}
