//! The console's HTML: escaping, the page frame (navigation, styles, the
//! script that keeps a live page current) and small table helpers. Pages
//! are rendered on the server; the only script is the live update.

use std::fmt::Write;

/// Text made safe for an element's content or a quoted attribute.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A query-string value, percent-encoded.
pub fn query_value(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Where the console lives on Cove's listener.
pub const BASE: &str = "/_cove/console";

/// How a page keeps itself current.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Live {
    /// Rendered once (a form the user is filling in).
    No,
    /// Rendered again whenever the store changes.
    OnChange,
    /// Rendered again on every change and every few seconds (logs and flow
    /// logs arrive outside the store).
    Always,
}

/// The navigation's sections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Vpcs,
    Reach,
    SageMaker,
    None,
}

const STYLE: &str = r#"
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#16191f;background:#f2f3f3}
header{display:flex;flex-wrap:wrap;align-items:center;gap:4px 18px;background:#232f3e;color:#fff;padding:8px 16px}
header a{color:#fff;text-decoration:none;padding:4px 6px;border-radius:4px}
header a[aria-current=page]{background:#414d5c}
header .brand{font-weight:700;font-size:16px}
header form{margin-left:auto}
header button{background:none;border:1px solid #8d99a8;color:#fff;border-radius:4px;padding:3px 10px;cursor:pointer}
main{padding:16px;max-width:1400px;margin:0 auto}
h1{font-size:20px;margin:4px 0 12px}
h2{font-size:16px;margin:20px 0 8px}
section.card{background:#fff;border:1px solid #d5dbdb;border-radius:8px;padding:12px 14px;margin-bottom:14px}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;background:#fff}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e9ebed;vertical-align:top}
th{background:#fafafa;font-weight:600;white-space:nowrap}
a.mono,td span.mono{white-space:nowrap}
td.mono,span.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12.5px}
a{color:#0972d3}
.status{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;background:#e9ebed}
.status.good{background:#d9f2e1;color:#037f0c}.status.bad{background:#fde3e1;color:#d91515}.status.busy{background:#ddeefc;color:#0972d3}
.verdict{font-size:18px;font-weight:700}.verdict.good{color:#037f0c}.verdict.bad{color:#d91515}
form.ask{display:flex;flex-wrap:wrap;gap:10px;align-items:end}
form.ask label{display:flex;flex-direction:column;font-weight:600;font-size:12.5px;gap:3px}
input,select{font:inherit;padding:5px 7px;border:1px solid #8d99a8;border-radius:4px;min-width:0}
button.primary{background:#ff9900;border:0;border-radius:4px;padding:7px 16px;font-weight:700;cursor:pointer}
.map{overflow-x:auto;background:#fff;border:1px solid #d5dbdb;border-radius:8px}
.map svg{display:block}
.map a:hover rect{stroke:#0972d3;stroke-width:2}
pre.log{background:#0f1b2a;color:#d1d5db;padding:10px;border-radius:6px;max-height:420px;overflow:auto;font-size:12.5px;white-space:pre-wrap}
.login{max-width:380px;margin:60px auto}
.login form{display:flex;flex-direction:column;gap:10px}
.error{color:#d91515;font-weight:600}
.muted{color:#5f6b7a}
@media (max-width:700px){main{padding:8px}header{padding:6px 8px}th,td{padding:4px 5px}}
"#;

/// The live-update script, served at `<BASE>/live.js` so that the pages'
/// content security policy can refuse every inline script.
pub const LIVE_SCRIPT: &str = r#"
(function(){
  var mode=document.body.dataset.live; if(!mode) return;
  var busy=false, again=false;
  function refresh(){
    if(busy){again=true;return;} busy=true;
    fetch(location.href,{credentials:'same-origin',headers:{'X-Cove-Live':'1'}}).then(function(r){
      if(r.redirected||!r.ok) return null; return r.text();
    }).then(function(text){
      if(!text) return;
      var doc=new DOMParser().parseFromString(text,'text/html');
      var fresh=doc.querySelector('main'), old=document.querySelector('main');
      if(fresh&&old&&fresh.innerHTML!==old.innerHTML){old.innerHTML=fresh.innerHTML;}
    }).finally(function(){busy=false; if(again){again=false;refresh();}});
  }
  var es=new EventSource('/_cove/console/events');
  es.addEventListener('change',refresh);
  if(mode==='always'){es.addEventListener('tick',refresh);}
})();
"#;

/// A whole page around `body`.
pub fn page(
    title: &str,
    section: Section,
    live: Live,
    account: Option<&str>,
    body: &str,
) -> String {
    let mut out = String::with_capacity(body.len() + 4096);
    let live_attr = match live {
        Live::No => "",
        Live::OnChange => " data-live=\"change\"",
        Live::Always => " data-live=\"always\"",
    };
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{} · Cove console</title><style>{STYLE}</style></head><body{live_attr}>",
        esc(title)
    );
    if let Some(account) = account {
        out.push_str("<header><span class=\"brand\">Cove</span><nav aria-label=\"Sections\">");
        for (s, href, label) in [
            (Section::Vpcs, format!("{BASE}/"), "VPCs"),
            (Section::Reach, format!("{BASE}/reach"), "Can A reach B?"),
            (Section::SageMaker, format!("{BASE}/sagemaker"), "SageMaker"),
        ] {
            let current = if s == section {
                " aria-current=\"page\""
            } else {
                ""
            };
            let _ = write!(out, "<a href=\"{href}\"{current}>{label}</a>");
        }
        let _ = write!(
            out,
            "</nav><span class=\"muted\" style=\"color:#c6cbd1\">account {}</span>\
             <form method=\"post\" action=\"{BASE}/logout\"><button type=\"submit\">Sign out</button></form></header>",
            esc(account)
        );
    }
    let _ = write!(out, "<main>{body}</main>");
    if live != Live::No {
        let _ = write!(out, "<script src=\"{BASE}/live.js\"></script>");
    }
    out.push_str("</body></html>");
    out
}

/// A status word, coloured by what it means.
pub fn status(word: &str) -> String {
    let class = match word {
        "Completed" | "InService" | "available" | "active" | "Available" | "in-use" | "InUse"
        | "attached" | "ACCEPT" => "good",
        "Failed" | "Stopped" | "failed" | "deleted" | "blackhole" | "REJECT" | "Deleting"
        | "OutOfService" => "bad",
        "InProgress" | "Creating" | "Updating" | "Pending" | "pending" | "Stopping"
        | "Starting" | "Downloading" | "Training" | "Uploading" | "Executing" => "busy",
        _ => "",
    };
    format!("<span class=\"status {class}\">{}</span>", esc(word))
}

/// A link to a resource's details page.
pub fn resource_link(id: &str) -> String {
    format!(
        "<a class=\"mono\" href=\"{BASE}/resource/{}\">{}</a>",
        query_value(id),
        esc(id)
    )
}

/// A table with a header row; cells are HTML already.
pub fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut out = String::from("<div class=\"scroll\"><table><thead><tr>");
    for h in headers {
        let _ = write!(out, "<th scope=\"col\">{}</th>", esc(h));
    }
    out.push_str("</tr></thead><tbody>");
    if rows.is_empty() {
        let _ = write!(
            out,
            "<tr><td colspan=\"{}\" class=\"muted\">None.</td></tr>",
            headers.len().max(1)
        );
    }
    for row in rows {
        out.push_str("<tr>");
        for cell in row {
            let _ = write!(out, "<td>{cell}</td>");
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_html_would_read_as_markup() {
        assert_eq!(
            esc(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }

    #[test]
    fn a_live_page_carries_the_script_and_a_still_one_does_not() {
        let live = page("t", Section::Vpcs, Live::OnChange, Some("1"), "x");
        assert!(live.contains("data-live=\"change\"") && live.contains("/live.js"));
        let still = page("t", Section::Reach, Live::No, Some("1"), "x");
        assert!(!still.contains("live.js"));
        assert!(still.contains("aria-current=\"page\">Can A reach B?"));
    }

    #[test]
    fn an_empty_table_says_so() {
        assert!(table(&["a"], &[]).contains("None."));
    }
}
