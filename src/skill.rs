//! The `bigid-authentication` Agent Skill, served over MCP by the skills
//! extension (SEP-2640): `skills/list`, `skills/get`, and `resources/read`
//! of `skill://bigid-authentication/<file>`. The files are the repository's
//! `skills/bigid-authentication/`, embedded at build time, so what a host
//! reads is byte for byte what the repository holds, and its digests are
//! those of the files.

use rmcp::{
    ErrorData as McpError,
    model::{
        CacheScope, GetSkillResult, ListSkillsResult, ReadResourceResult, Resource,
        ResourceContents, Skill, SkillFrontmatter, SkillResource, SkillResources,
    },
};

/// The skill's name, as in its frontmatter and its URIs.
pub const NAME: &str = "bigid-authentication";

/// The URI of the skill's `SKILL.md`.
pub const SKILL_URI: &str = "skill://bigid-authentication/SKILL.md";

/// How long (ms) a 2026-07-28 client may treat a listing or a file as fresh:
/// the content changes only with a new binary, which means a new session.
pub const CACHE_TTL_MS: u64 = 24 * 60 * 60 * 1000;

const MARKDOWN: &str = "text/markdown";

/// One embedded file of the skill.
#[derive(Debug, Clone, Copy)]
pub struct SkillFile {
    /// Its path inside the skill's directory.
    pub path: &'static str,
    /// Its bytes, as in the repository at build time.
    pub bytes: &'static [u8],
}

/// Every file of the skill. A test checks this list against the directory.
pub const FILES: &[SkillFile] = &[
    SkillFile {
        path: "SKILL.md",
        bytes: include_bytes!("../skills/bigid-authentication/SKILL.md"),
    },
    SkillFile {
        path: "references/errors.md",
        bytes: include_bytes!("../skills/bigid-authentication/references/errors.md"),
    },
];

/// The `skill://` URI of a file of the skill.
pub fn uri_of(path: &str) -> String {
    format!("skill://{NAME}/{path}")
}

/// The skill's manifest entry: frontmatter and files with their digests.
pub fn skill() -> Result<Skill, McpError> {
    let frontmatter = frontmatter(FILES[0].bytes).map_err(|why| {
        McpError::internal_error(format!("the embedded SKILL.md is malformed: {why}"), None)
    })?;
    let files = FILES
        .iter()
        .map(|file| SkillResource::from_bytes(uri_of(file.path), file.bytes))
        .collect();
    Ok(Skill::new(
        SKILL_URI,
        frontmatter,
        SkillResources::Files(files),
    ))
}

/// The answer to `skills/list`; cache hints for peers that expect them.
pub fn list(with_cache_hints: bool) -> Result<ListSkillsResult, McpError> {
    let result = ListSkillsResult::with_all_items(vec![skill()?]);
    Ok(if with_cache_hints {
        result
            .with_ttl_ms(CACHE_TTL_MS)
            .with_cache_scope(CacheScope::Public)
    } else {
        result
    })
}

/// The answer to `skills/get`; `-32602` for any other URI.
pub fn get(uri: &str, with_cache_hints: bool) -> Result<GetSkillResult, McpError> {
    if uri != SKILL_URI {
        return Err(McpError::invalid_params(
            format!("unknown skill {uri}; this server serves {SKILL_URI}"),
            None,
        ));
    }
    let result = GetSkillResult::new(skill()?);
    Ok(if with_cache_hints {
        result
            .with_ttl_ms(CACHE_TTL_MS)
            .with_cache_scope(CacheScope::Public)
    } else {
        result
    })
}

/// The skill's entry point, for `resources/list`.
pub fn resources() -> Result<Vec<Resource>, McpError> {
    let skill = skill()?;
    Ok(vec![
        Resource::new(SKILL_URI, NAME)
            .with_description(skill.frontmatter.description)
            .with_mime_type(MARKDOWN)
            .with_size(FILES[0].bytes.len() as u64),
    ])
}

/// The answer to `resources/read` of a skill file, or `None` when `uri` is
/// not one.
pub fn read(uri: &str, with_cache_hints: bool) -> Option<ReadResourceResult> {
    let file = FILES.iter().find(|f| uri_of(f.path) == uri)?;
    // Every file is UTF-8 markdown (a test checks), so it goes out as text.
    let text = std::str::from_utf8(file.bytes).ok()?;
    let contents = ResourceContents::text(text, uri).with_mime_type(MARKDOWN);
    let result = ReadResourceResult::new(vec![contents]);
    Some(if with_cache_hints {
        result
            .with_ttl_ms(CACHE_TTL_MS)
            .with_cache_scope(CacheScope::Public)
    } else {
        result
    })
}

/// Reads the frontmatter block of `SKILL.md`. The skill's frontmatter is
/// kept to one-line `key: value` scalars, so this small reader is enough;
/// the Agent Skills validator checks the file as YAML in the tests.
pub fn frontmatter(bytes: &[u8]) -> Result<SkillFrontmatter, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?;
    let mut lines = text.lines();
    if lines.next() != Some("---") {
        return Err("it does not start with a --- line".into());
    }
    let mut fields = Vec::new();
    for line in lines.by_ref() {
        if line == "---" {
            let field = |key: &str| {
                fields
                    .iter()
                    .find(|(k, _)| k == key)
                    .map(|(_, v): &(String, String)| v.clone())
                    .ok_or_else(|| format!("no `{key}` field"))
            };
            let mut frontmatter = SkillFrontmatter::new(field("name")?, field("description")?);
            for (key, value) in &fields {
                if key != "name" && key != "description" {
                    frontmatter = frontmatter.with_field(key.clone(), value.clone());
                }
            }
            return Ok(frontmatter);
        }
        let (key, value) = line
            .split_once(": ")
            .ok_or_else(|| format!("the line `{line}` is not `key: value`"))?;
        let value = value.trim();
        if key.starts_with(' ') || value.is_empty() || value.starts_with(['"', '\'', '|', '>']) {
            return Err(format!("the field `{key}` is not a one-line plain value"));
        }
        fields.push((key.to_owned(), value.to_owned()));
    }
    Err("the frontmatter has no closing --- line".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_skill_is_a_valid_manifest() {
        let skill = skill().unwrap();
        assert_eq!(skill.name(), NAME);
        skill.validate().unwrap();
        assert!(!skill.frontmatter.description.is_empty());
    }

    #[test]
    fn every_file_is_utf8_and_readable_by_its_uri() {
        for file in FILES {
            assert!(std::str::from_utf8(file.bytes).is_ok(), "{}", file.path);
            let read = read(&uri_of(file.path), false).unwrap();
            assert_eq!(read.contents.len(), 1);
        }
        assert!(read("skill://bigid-authentication/missing.md", false).is_none());
        assert!(get("skill://other/SKILL.md", false).is_err());
    }

    #[test]
    fn frontmatter_reader_refuses_what_it_cannot_read_faithfully() {
        assert!(frontmatter(b"---\nname: a\ndescription: b\n---\nbody").is_ok());
        assert!(frontmatter(b"name: a\n").is_err());
        assert!(frontmatter(b"---\nname: a\ndescription: >\n  folded\n---\n").is_err());
        assert!(frontmatter(b"---\nname: a\n---\n").is_err());
        assert!(frontmatter(b"---\nname: a\ndescription: b\n").is_err());
    }
}
