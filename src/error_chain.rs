//! Error chains rendered as one line, for messages an operator reads.

/// The error and its sources, most specific last, without the URL reqwest
/// adds (our messages name it separately) and without wrappers that only
/// repeat their cause.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(error);
    while let Some(e) = current {
        let text = match e.downcast_ref::<reqwest::Error>() {
            Some(re) if re.url().is_some() => {
                let mut shown = re.to_string();
                if let Some(url) = re.url() {
                    shown = shown
                        .replace(&format!(" ({url})"), "")
                        .replace(url.as_str(), "");
                }
                shown
            }
            _ => e.to_string(),
        };
        // reqwest's and hyper-util's wrappers say nothing their causes do not.
        let wrapper = e.source().is_some()
            && (text.starts_with("error sending request")
                || text.starts_with("error decoding response body")
                || text.starts_with("client error ("));
        if !text.is_empty() && !wrapper && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}
