//! A small HTML writer that makes the safe thing the easy thing.
//!
//! Everything shown comes from captured traffic, that is from attackers. Tag and attribute
//! names are `&'static str` (written by this program); text and attribute values are always
//! escaped, and values are always quoted. The only way to write markup unescaped is
//! [`Html::markup`], which also takes `&'static str` only.
//!
//! Kept instead of a template engine: the pages are a few, built in Rust beside their data,
//! and here the types themselves keep data out of markup, with no template language to learn.

#[derive(Default)]
pub struct Html {
    out: String,
}

impl Html {
    pub fn new() -> Self {
        Html { out: String::with_capacity(64 * 1024) }
    }

    /// Markup written by this program, never data.
    pub fn markup(&mut self, markup: &'static str) -> &mut Self {
        self.out.push_str(markup);
        self
    }

    /// Escaped text.
    pub fn text(&mut self, text: &str) -> &mut Self {
        escape_into(&mut self.out, text);
        self
    }

    /// `<tag name="value" ...>`.
    pub fn open(&mut self, tag: &'static str, attributes: &[(&'static str, &str)]) -> &mut Self {
        self.out.push('<');
        self.out.push_str(tag);
        for (name, value) in attributes {
            self.out.push(' ');
            self.out.push_str(name);
            self.out.push_str("=\"");
            escape_into(&mut self.out, value);
            self.out.push('"');
        }
        self.out.push('>');
        self
    }

    pub fn close(&mut self, tag: &'static str) -> &mut Self {
        self.out.push_str("</");
        self.out.push_str(tag);
        self.out.push('>');
        self
    }

    /// `<tag ...>text</tag>`.
    pub fn element(
        &mut self,
        tag: &'static str,
        attributes: &[(&'static str, &str)],
        text: &str,
    ) -> &mut Self {
        self.open(tag, attributes).text(text).close(tag)
    }

    /// A URL path as escaped text that may wrap only after a `/` (a `<wbr>` after each).
    pub fn path(&mut self, path: &str) -> &mut Self {
        for segment in path.split_inclusive('/') {
            escape_into(&mut self.out, segment);
            if segment.ends_with('/') {
                self.out.push_str("<wbr>");
            }
        }
        self
    }

    pub fn finish(self) -> String {
        self.out
    }
}

fn escape_into(out: &mut String, text: &str) {
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // NUL is not allowed in HTML text; show a replacement like browsers would.
            '\0' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_never_becomes_markup() {
        let payload = "<script>alert(1)</script><img src=x onerror=\"alert('x')\">&amp;\0";
        let mut html = Html::new();
        html.open("a", &[("href", "/sessions/x\" onclick=\"alert(1)"), ("title", payload)])
            .text(payload)
            .close("a");
        let out = html.finish();
        assert_eq!(
            out,
            "<a href=\"/sessions/x&quot; onclick=&quot;alert(1)\" \
             title=\"&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=&quot;alert(&#39;x&#39;)&quot;&gt;&amp;amp;\u{FFFD}\">\
             &lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=&quot;alert(&#39;x&#39;)&quot;&gt;&amp;amp;\u{FFFD}</a>"
        );
    }

    #[test]
    fn paths_break_after_slashes_only() {
        let mut html = Html::new();
        html.path("/api/<b>/x");
        assert_eq!(html.finish(), "/<wbr>api/<wbr>&lt;b&gt;/<wbr>x");
    }
}
