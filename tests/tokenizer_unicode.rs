//! The generated code-point class table (src/tokenizer/unicode_table.rs, Unicode 15.1) checked
//! against llama.cpp's own table (`src/unicode-data.cpp`, parsed here) for every code point:
//! the pre-tokenizers split on these classes, so any difference changes tokens.
//! Needs the llama.cpp source (`$MEKI_LLAMA_CPP`); missing skips, or fails with
//! `MEKI_REQUIRE_REFERENCE=1`.

use std::path::PathBuf;

use meki::tokenizer::unicode::{char_flags, Class};

fn llama_cpp_dir() -> PathBuf {
    std::env::var_os("MEKI_LLAMA_CPP")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("target/ext/llama_cpp_python-0.3.36/vendor/llama.cpp")
        })
}

/// llama.cpp's category flag (unicode.h) of our class.
fn llama_flag(c: Class) -> u16 {
    match c {
        Class::Unassigned => 0x0001,
        Class::Number => 0x0002,
        Class::Letter => 0x0004,
        Class::Separator => 0x0008,
        Class::Mark => 0x0010,
        Class::Punctuation => 0x0020,
        Class::Symbol => 0x0040,
        Class::Control => 0x0080,
    }
}

fn hex(s: &str) -> u32 {
    u32::from_str_radix(
        s.trim().trim_start_matches("0x").trim_start_matches("0X"),
        16,
    )
    .expect("hex")
}

#[test]
fn classes_and_whitespace_match_llama_cpp() {
    let path = llama_cpp_dir().join("src/unicode-data.cpp");
    let Ok(src) = std::fs::read_to_string(&path) else {
        let required = std::env::var("MEKI_REQUIRE_REFERENCE").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "MEKI_REQUIRE_REFERENCE=1 but {} is missing",
            path.display()
        );
        eprintln!("skipping: {} not found", path.display());
        return;
    };
    // `unicode_ranges_flags = { {0x000000, 0x0080}, ... }`: run starts and flags
    let body = |name: &str| -> &str {
        let at = src
            .find(name)
            .unwrap_or_else(|| panic!("{name} not in unicode-data.cpp"));
        let open = at + src[at..].find("= {").expect("initializer") + 3;
        let close = open + src[open..].find("};").expect("end of initializer");
        &src[open..close]
    };
    let runs: Vec<(u32, u16)> = body("unicode_ranges_flags")
        .split('{')
        .filter_map(|p| {
            let p = p.split('}').next()?;
            let mut f = p.split(',');
            let (a, b) = (f.next()?, f.next()?);
            a.trim().starts_with("0x").then(|| (hex(a), hex(b) as u16))
        })
        .collect();
    assert!(runs.len() > 1000, "parsed only {} runs", runs.len());
    let mut mismatches = Vec::new();
    for (i, &(start, flags)) in runs.iter().enumerate() {
        let end = runs.get(i + 1).map_or(0x110000, |r| r.0);
        for cp in start..end.min(0x110000) {
            let Some(c) = char::from_u32(cp) else {
                continue;
            }; // surrogates are not chars
            let ours = llama_flag(char_flags(c).class());
            if ours != flags & 0xff && mismatches.len() < 20 {
                mismatches.push(format!(
                    "U+{cp:04X}: ours {ours:#06x}, llama.cpp {flags:#06x}"
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "class differences:\n{}",
        mismatches.join("\n")
    );

    let ws: Vec<u32> = body("unicode_set_whitespace")
        .split(',')
        .filter(|s| s.trim().starts_with("0x"))
        .map(hex)
        .collect();
    assert!(ws.len() >= 20);
    for cp in 0..0x110000u32 {
        let Some(c) = char::from_u32(cp) else {
            continue;
        };
        assert_eq!(
            char_flags(c).is_whitespace(),
            ws.contains(&cp),
            "whitespace flag of U+{cp:04X}"
        );
    }
}
