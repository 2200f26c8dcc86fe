//! Parsing what `systemctl` prints.

use std::collections::BTreeMap;

/// `systemctl show --property=Environment --value UNIT` prints `KEY=value` words separated by
/// spaces; a word holding spaces or quotes is double-quoted with C-style escapes.
pub fn parse_environment(text: &str) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    for word in split_words(text.trim()) {
        if let Some((k, v)) = word.split_once('=') {
            vars.insert(k.to_string(), v.to_string());
        }
    }
    vars
}

fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut word = String::new();
        let mut any = false;
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            any = true;
            chars.next();
            match c {
                '"' | '\'' => {
                    let quote = c;
                    while let Some(c) = chars.next() {
                        match c {
                            _ if c == quote => break,
                            '\\' => match chars.next() {
                                Some('n') => word.push('\n'),
                                Some('t') => word.push('\t'),
                                Some(other) => word.push(other),
                                None => {}
                            },
                            _ => word.push(c),
                        }
                    }
                }
                '\\' => {
                    if let Some(next) = chars.next() {
                        word.push(next);
                    }
                }
                _ => word.push(c),
            }
        }
        if any {
            words.push(word);
        }
    }
    words
}

/// Unit names from `systemctl list-units --failed --plain --no-legend --full`.
pub fn parse_unit_list(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| name.contains('.') && !name.starts_with('●'))
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_words_and_quoting() {
        let env = parse_environment(
            "LOCALE_ARCHIVE=/nix/store/x/lib/locale POLL_REPOS=a,b,c \"GREETING=hello world\" EMPTY=\n",
        );
        assert_eq!(env["POLL_REPOS"], "a,b,c");
        assert_eq!(env["GREETING"], "hello world");
        assert_eq!(env["EMPTY"], "");
        assert_eq!(env.len(), 4);
        assert!(parse_environment("").is_empty());
    }

    #[test]
    fn failed_unit_lists() {
        let out =
            "foo.service loaded failed failed Foo thing\nbar.timer   loaded failed failed Bar\n\n";
        assert_eq!(parse_unit_list(out), ["foo.service", "bar.timer"]);
        assert!(parse_unit_list("").is_empty());
    }
}
